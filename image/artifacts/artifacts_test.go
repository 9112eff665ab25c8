package artifacts

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
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

	"kubeboot.dev/kubeboot/image/fetch"
	"kubeboot.dev/kubeboot/image/lock"
	"kubeboot.dev/kubeboot/image/oci"
	"kubeboot.dev/kubeboot/image/spec"
)

// upstream is a loopback stand-in for dl.k8s.io, the GitHub release pages
// and registry.k8s.io: the development machine has no internet, so the
// upstream spec's lock and fetch paths are tested only against these.
type upstream struct {
	mu       sync.Mutex
	files    map[string][]byte
	httpURL  string
	registry string
}

func targz(t *testing.T, members map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for n, body := range members {
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o755, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(body))
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

func startUpstream(t *testing.T) *upstream {
	u := &upstream{files: map[string][]byte{
		"/release/v1.37.2/bin/linux/amd64/kubeadm": []byte("kubeadm-bytes"),
		"/release/v1.37.2/bin/linux/amd64/kubelet": []byte("kubelet-bytes"),
		"/release/v1.37.2/bin/linux/amd64/kubectl": []byte("kubectl-bytes"),
		"/runc.amd64":    []byte("runc-bytes"),
		"/crictl.tar.gz": targz(t, map[string]string{"crictl": "crictl-bytes"}),
		"/containerd.tar.gz": targz(t, map[string]string{"bin/containerd": "containerd-bytes",
			"bin/containerd-shim-runc-v2": "shim-bytes", "bin/ctr": "ctr-bytes", "bin/other": "x"}),
		"/cni.tgz": targz(t, map[string]string{"./bridge": "bridge-bytes", "./loopback": "loopback-bytes"}),
	}}
	h := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		b, ok := u.files[r.URL.Path]
		u.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(b)
	}))
	t.Cleanup(h.Close)
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(reg.Close)
	u.httpURL, u.registry = h.URL, strings.TrimPrefix(reg.URL, "http://")
	return u
}

var controlPlane = []string{"kube-apiserver:v1.37.2", "kube-controller-manager:v1.37.2", "kube-scheduler:v1.37.2",
	"kube-proxy:v1.37.2", "coredns/coredns:v1.14.6", "pause:3.10.2", "etcd:3.7.0-0"}

func (u *upstream) push(t *testing.T, repoTag, content string) string {
	t.Helper()
	img, err := oci.Build(t.TempDir(), oci.Config{Entrypoint: []string{"/bin"}}, []oci.Entry{{Path: "/bin", Data: []byte(content), Mode: 0o755}})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	tag, err := name.NewTag(u.registry + "/" + repoTag)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, img); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	return d.String()
}

func (u *upstream) spec(t *testing.T) string {
	t.Helper()
	var refs []string
	for _, r := range controlPlane {
		refs = append(refs, "    - "+u.registry+"/"+r)
		u.push(t, r, r)
	}
	doc := fmt.Sprintf(`apiVersion: kubeboot.dev/v1alpha1
kind: ImageSpec
source: upstream
kubernetes: {version: v1.37.2}
runtime: {containerd: v2.4.2, runc: v1.5.2, crictl: v1.36.0, cniPlugins: {version: v1.10.0, plugins: [bridge, loopback]}}
upstream:
  files:
    - {name: kubeadm, version: v1.37.2, url: "%[1]s/release/{version}/bin/linux/{arch}/kubeadm"}
    - {name: kubelet, version: v1.37.2, url: "%[1]s/release/{version}/bin/linux/{arch}/kubelet"}
    - {name: kubectl, version: v1.37.2, url: "%[1]s/release/{version}/bin/linux/{arch}/kubectl"}
    - {name: runc, version: v1.5.2, url: "%[1]s/runc.{arch}"}
    - {name: crictl.tar.gz, version: v1.36.0, url: "%[1]s/crictl.tar.gz", extract: {crictl: crictl}}
    - {name: containerd.tar.gz, version: v2.4.2, url: "%[1]s/containerd.tar.gz", extract: {bin/containerd: containerd, bin/containerd-shim-runc-v2: containerd-shim-runc-v2, bin/ctr: ctr}}
    - {name: cni.tgz, version: v1.10.0, url: "%[1]s/cni.tgz", extract: {./bridge: cni-bridge, ./loopback: cni-loopback}}
images:
  controlPlane:
%[2]s
  extras:
    - {ref: local.example/tools/tool:v1, from: "oci-archive:tool.tar"}
base: {suite: trixie, mirror: http://mirror.invalid/debian}
`, u.httpURL, strings.Join(refs, "\n"))
	dir := t.TempDir()
	// A local extra image, next to the spec (its path is relative).
	tool, err := oci.Build(t.TempDir(), oci.Config{Entrypoint: []string{"/tool"}}, []oci.Entry{{Path: "/tool", Data: []byte("tool"), Mode: 0o755}})
	if err != nil {
		t.Fatal(err)
	}
	defer tool.Close()
	f, err := os.Create(filepath.Join(dir, "tool.tar"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := oci.WriteArchive(f, tool, "local.example/tools/tool:v1"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	p := filepath.Join(dir, "image-upstream.yaml")
	if err := os.WriteFile(p, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func lockAndFetch(t *testing.T, u *upstream, specPath string) (*lock.Lock, string) {
	t.Helper()
	ctx := context.Background()
	s, err := spec.Load(specPath)
	if err != nil {
		t.Fatal(err)
	}
	lockCache, err := fetch.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	l, err := LockUpstream(ctx, s, lockCache, Remote{})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Write(s.LockPath()); err != nil {
		t.Fatal(err)
	}
	// Fetch into a fresh cache, as another machine would.
	dir := t.TempDir()
	c, err := fetch.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := FetchUpstream(ctx, s, l, c, Remote{}); err != nil {
		t.Fatal(err)
	}
	return l, dir
}

func TestUpstreamLockFetchLoad(t *testing.T) {
	u := startUpstream(t)
	specPath := u.spec(t)
	l, cacheDir := lockAndFetch(t, u, specPath)
	if len(l.Images) != 8 {
		t.Fatalf("locked %d images", len(l.Images))
	}
	set, err := LoadWithCache(specPath, cacheDir)
	if err != nil {
		t.Fatal(err)
	}
	wantBin := map[string]string{"kubeadm": "kubeadm-bytes", "kubelet": "kubelet-bytes", "runc": "runc-bytes",
		"crictl": "crictl-bytes", "containerd": "containerd-bytes", "containerd-shim-runc-v2": "shim-bytes", "ctr": "ctr-bytes"}
	for n, body := range wantBin {
		b, err := os.ReadFile(set.Binaries[n])
		if err != nil || string(b) != body {
			t.Errorf("binary %s at %q: %q %v", n, set.Binaries[n], b, err)
		}
	}
	if _, ok := set.Binaries["other"]; ok {
		t.Error("an archive member that was not asked for was installed")
	}
	if b, err := os.ReadFile(set.CNIPlugins["bridge"]); err != nil || string(b) != "bridge-bytes" {
		t.Errorf("CNI bridge: %q %v", b, err)
	}
	if len(set.Images) != 8 {
		t.Fatalf("%d images in the set, want 7 control-plane + 1 local extra", len(set.Images))
	}
	for _, im := range set.Images {
		info, err := oci.ReadArchive(im.Path)
		if err != nil {
			t.Fatal(err)
		}
		if info.Digest.String() != im.Digest || info.Ref != im.Ref {
			t.Errorf("%s: archive has %s %s", im.Ref, info.Ref, info.Digest)
		}
	}
	// Lock again: same inputs, same lock file.
	before, _ := os.ReadFile(spec.LockPathFor(specPath))
	lockAndFetch(t, u, specPath)
	after, _ := os.ReadFile(spec.LockPathFor(specPath))
	if !bytes.Equal(before, after) {
		t.Errorf("re-locking unchanged upstreams changed the lock:\n%s\n---\n%s", before, after)
	}
}

func TestUpstreamFetchRefusesChangedFile(t *testing.T) {
	u := startUpstream(t)
	specPath := u.spec(t)
	s, _ := spec.Load(specPath)
	l, _ := lockAndFetch(t, u, specPath)
	u.mu.Lock()
	u.files["/release/v1.37.2/bin/linux/amd64/kubelet"] = []byte("evil-kubelet")
	u.mu.Unlock()
	c, _ := fetch.Open(t.TempDir())
	err := FetchUpstream(context.Background(), s, l, c, Remote{})
	var mm *fetch.MismatchError
	if !errors.As(err, &mm) || !strings.Contains(err.Error(), "kubelet") {
		t.Fatalf("want a sha256 mismatch naming kubelet, got %v", err)
	}
	if _, err := LoadWithCache(specPath, c.Dir); err == nil || !strings.Contains(err.Error(), "binary kubelet") {
		t.Fatalf("Load must name the missing kubelet: %v", err)
	}
}

func TestUpstreamFetchRefusesMovedTag(t *testing.T) {
	u := startUpstream(t)
	specPath := u.spec(t)
	s, _ := spec.Load(specPath)
	l, _ := lockAndFetch(t, u, specPath)
	u.push(t, "pause:3.10.2", "a different pause")
	c, _ := fetch.Open(t.TempDir())
	err := FetchUpstream(context.Background(), s, l, c, Remote{})
	var moved *fetch.TagMovedError
	if !errors.As(err, &moved) || !strings.HasSuffix(moved.Ref, "/pause:3.10.2") {
		t.Fatalf("want TagMovedError for pause, got %v", err)
	}
}

func TestResolveReportsMissing(t *testing.T) {
	u := startUpstream(t)
	specPath := u.spec(t)
	lockAndFetch(t, u, specPath)
	_, items, err := Resolve(specPath, t.TempDir()) // an empty cache
	if err != nil {
		t.Fatal(err)
	}
	if len(items) == 0 {
		t.Fatal("no items")
	}
	for _, it := range items {
		if it.Cached {
			t.Errorf("%s %s reported cached in an empty cache", it.Kind, it.Name)
		}
	}
}
