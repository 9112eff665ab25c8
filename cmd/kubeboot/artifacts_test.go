package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"kubeboot.dev/kubeboot/image/oci"
)

// captureStdout runs f with os.Stdout redirected.
func captureStdout(t *testing.T, f func() int) (int, string) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	done := make(chan string)
	go func() { b, _ := io.ReadAll(r); done <- string(b) }()
	code := f()
	w.Close()
	os.Stdout = old
	return code, <-done
}

// TestArtifactsCLIUpstreamOnLoopback drives lock, fetch and list for an
// upstream spec whose downloads and registry are loopback servers (there
// is no internet here; the real URLs are in configs/image-upstream.yaml).
func TestArtifactsCLIUpstreamOnLoopback(t *testing.T) {
	var mu sync.Mutex
	files := map[string]string{}
	for _, n := range []string{"kubeadm", "kubelet", "kubectl", "crictl", "containerd", "containerd-shim-runc-v2", "ctr", "runc", "bridge"} {
		files["/"+n] = n + " binary"
	}
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		b, ok := files[r.URL.Path]
		mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, b)
	}))
	defer web.Close()
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer reg.Close()
	host := strings.TrimPrefix(reg.URL, "http://")
	ref := host + "/pause:3.10.2"
	img, err := oci.Build(t.TempDir(), oci.Config{Entrypoint: []string{"/pause"}}, []oci.Entry{{Path: "/pause", Data: []byte("p"), Mode: 0o755}})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	tag, _ := name.NewTag(ref)
	if err := remote.Write(tag, img); err != nil {
		t.Fatal(err)
	}
	var list bytes.Buffer
	for _, n := range []string{"kubeadm", "kubelet", "kubectl", "crictl", "containerd", "containerd-shim-runc-v2", "ctr", "runc"} {
		fmt.Fprintf(&list, "    - {name: %s, version: v1, url: %q}\n", n, web.URL+"/"+n)
	}
	fmt.Fprintf(&list, "    - {name: cni-bridge, version: v1.10.0, url: %q}\n", web.URL+"/bridge")
	doc := `apiVersion: kubeboot.dev/v1alpha1
kind: ImageSpec
source: upstream
kubernetes: {version: v1.37.2}
runtime: {containerd: v2.4.2, runc: v1.5.2, crictl: v1.36.0, cniPlugins: {version: v1.10.0, plugins: [bridge]}}
upstream:
  files:
` + list.String() + `images: {controlPlane: [` + ref + `]}
base: {suite: trixie, mirror: http://mirror.invalid/debian}
`
	dir := t.TempDir()
	specPath := filepath.Join(dir, "up.yaml")
	if err := os.WriteFile(specPath, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(dir, "cache")
	args := func(sub string) []string { return []string{sub, "--spec", specPath, "--cache", cache} }

	if code, out := captureStdout(t, func() int { return runArtifacts(args("lock")) }); code != exitOK || !strings.Contains(out, "9 files, 1 images") {
		t.Fatalf("lock: %d %q", code, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "up.lock")); err != nil {
		t.Fatal(err)
	}
	// Another machine: empty cache, list says missing, fetch fills it.
	cache = filepath.Join(dir, "cache2")
	code, out := captureStdout(t, func() int { return runArtifacts(args("list")) })
	if code != exitFail || !strings.Contains(out, "MISSING") || !strings.Contains(out, "10 missing or corrupt") {
		t.Fatalf("list on an empty cache: %d\n%s", code, out)
	}
	if code, out := captureStdout(t, func() int { return runArtifacts(args("fetch")) }); code != exitOK {
		t.Fatalf("fetch: %d %q", code, out)
	}
	code, out = captureStdout(t, func() int { return runArtifacts(args("list")) })
	if code != exitOK || strings.Contains(out, "MISSING") || !strings.Contains(out, ref) || !strings.Contains(out, "0 missing or corrupt") {
		t.Fatalf("list after fetch: %d\n%s", code, out)
	}
	// --verify re-hashes: a flipped byte in a cached file is reported.
	if code, out := captureStdout(t, func() int { return runArtifacts(append(args("list"), "--verify")) }); code != exitOK || !strings.Contains(out, "verified") {
		t.Fatalf("list --verify: %d\n%s", code, out)
	}
	kubeadm := filepath.Join(cache, "sha256", sha256hex("kubeadm binary"))
	if err := os.WriteFile(kubeadm, []byte("kubeadm binarY"), 0o755); err != nil {
		t.Fatal(err)
	}
	if code, out := captureStdout(t, func() int { return runArtifacts(append(args("list"), "--verify")) }); code != exitFail || !strings.Contains(out, "CORRUPT") {
		t.Fatalf("list --verify of a corrupted cache: %d\n%s", code, out)
	}
	// A changed upstream file is refused with a nonzero exit.
	mu.Lock()
	files["/kubelet"] = "evil"
	mu.Unlock()
	cache = filepath.Join(dir, "cache3")
	if code, _ := captureStdout(t, func() int { return runArtifacts(args("fetch")) }); code != exitFail {
		t.Fatalf("fetch of a changed file: exit %d, want %d", code, exitFail)
	}
}

func sha256hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func TestArtifactsUsage(t *testing.T) {
	for _, a := range [][]string{{}, {"nope"}, {"build"}, {"list", "extra"}} {
		if code := runArtifacts(a); code != exitUsage {
			t.Errorf("%v: exit %d, want %d", a, code, exitUsage)
		}
	}
}
