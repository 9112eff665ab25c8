package oci

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"
)

var (
	helloOnce sync.Once
	helloPath string
	helloErr  error
	helloDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if helloDir != "" {
		os.RemoveAll(helloDir)
	}
	os.Exit(code)
}

// buildHello compiles a tiny static Go program once per test run: a real
// binary for the image, small enough for every CI run.
func buildHello(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go toolchain not on PATH: cannot build the test binary")
	}
	helloOnce.Do(func() {
		if helloDir, helloErr = os.MkdirTemp("", "kubeboot-oci-test-"); helloErr != nil {
			return
		}
		src := filepath.Join(helloDir, "main.go")
		if helloErr = os.WriteFile(src, []byte("package main\nimport \"fmt\"\nfunc main() { fmt.Println(\"hello v0.0.1\") }\n"), 0o644); helloErr != nil {
			return
		}
		helloPath = filepath.Join(helloDir, "hello")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", helloPath, src)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=", "GO111MODULE=off")
		if b, err := cmd.CombinedOutput(); err != nil {
			helloErr = fmt.Errorf("go build: %v\n%s", err, b)
		}
	})
	if helloErr != nil {
		t.Fatal(helloErr)
	}
	return helloPath
}

func testEntries(bin string) []Entry {
	return []Entry{
		{Path: "/usr/local/bin/hello", Source: bin, Mode: 0o755},
		{Path: "/etc/motd", Data: []byte("hi\n")},
		{Path: "/usr/local/bin/hi", Link: "hello"},
		{Path: "/var/lib/data", Dir: true, Mode: 0o700},
	}
}

func TestBuildIsDeterministic(t *testing.T) {
	bin := buildHello(t)
	cfg := Config{Entrypoint: []string{"/usr/local/bin/hello"}, Env: []string{DefaultPath}}
	var digests []string
	var archives [][]byte
	for i := 0; i < 2; i++ {
		entries := testEntries(bin)
		if i == 1 { // order of the input must not matter
			for l, r := 0, len(entries)-1; l < r; l, r = l+1, r-1 {
				entries[l], entries[r] = entries[r], entries[l]
			}
			time.Sleep(1100 * time.Millisecond) // a wall-clock timestamp would now differ
		}
		img, err := Build(t.TempDir(), cfg, entries)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { img.Close() })
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, d.String())
		var buf bytes.Buffer
		ad, err := WriteArchive(&buf, img, "registry.example/hello:v0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		if ad != d {
			t.Fatalf("archive digest %s != image digest %s", ad, d)
		}
		archives = append(archives, buf.Bytes())
	}
	if digests[0] != digests[1] {
		t.Fatalf("same inputs gave different digests: %s vs %s", digests[0], digests[1])
	}
	if !bytes.Equal(archives[0], archives[1]) {
		t.Fatal("same image gave different OCI archive bytes")
	}
}

func TestSourceDateEpochChangesDigest(t *testing.T) {
	bin := buildHello(t)
	digest := func() string {
		img, err := Build(t.TempDir(), Config{}, testEntries(bin))
		if err != nil {
			t.Fatal(err)
		}
		defer img.Close()
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		return d.String()
	}
	t.Setenv("SOURCE_DATE_EPOCH", "")
	zero := digest()
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	if digest() == zero {
		t.Fatal("SOURCE_DATE_EPOCH is not used for timestamps")
	}
}

func TestLayerContent(t *testing.T) {
	bin := buildHello(t)
	img, err := Build(t.TempDir(), Config{Entrypoint: []string{"/usr/local/bin/hello"}, User: "65535:65535", Env: []string{DefaultPath}}, testEntries(bin))
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("want one layer, got %d (%v)", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	var names []string
	got := map[string]*tar.Header{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		got[h.Name] = h
		if !h.ModTime.Equal(time.Unix(0, 0)) || h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s: mtime %v uid %d gid %d, want epoch and root", h.Name, h.ModTime, h.Uid, h.Gid)
		}
	}
	if !sort.StringsAreSorted(names) {
		t.Errorf("entries are not sorted: %v", names)
	}
	want := map[string]int64{"tmp/": 0o1777, "usr/": 0o755, "usr/local/bin/hello": 0o755, "etc/motd": 0o644, "var/lib/data/": 0o700}
	for n, mode := range want {
		h, ok := got[n]
		if !ok {
			t.Errorf("missing %s in %v", n, names)
			continue
		}
		if h.Mode != mode {
			t.Errorf("%s: mode %o, want %o", n, h.Mode, mode)
		}
	}
	if h := got["usr/local/bin/hi"]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "hello" {
		t.Errorf("symlink usr/local/bin/hi: %+v", h)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Architecture != "amd64" || cf.OS != "linux" || cf.Config.User != "65535:65535" || cf.Config.Entrypoint[0] != "/usr/local/bin/hello" || !cf.Created.Equal(time.Unix(0, 0)) {
		t.Errorf("config: %+v", cf)
	}
}

func TestArchiveRoundTripAndCorruption(t *testing.T) {
	bin := buildHello(t)
	img, err := Build(t.TempDir(), Config{}, testEntries(bin))
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	p := filepath.Join(t.TempDir(), "a.tar")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	d, err := WriteArchive(f, img, "registry.k8s.io/pause:3.10.2")
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	info, err := ReadArchive(p)
	if err != nil {
		t.Fatal(err)
	}
	if info.Digest != d || info.Ref != "registry.k8s.io/pause:3.10.2" || info.Layers != 1 || info.Config.Architecture != "amd64" {
		t.Fatalf("read back %+v, digest %s", info, d)
	}
	// Flip one byte inside the layer blob: ReadArchive must notice.
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(data, []byte{0x1f, 0x8b}) // the gzip layer
	if i < 0 {
		t.Fatal("no gzip stream in archive")
	}
	data[i+100] ^= 0xff
	bad := filepath.Join(t.TempDir(), "bad.tar")
	if err := os.WriteFile(bad, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadArchive(bad); err == nil {
		t.Fatal("ReadArchive accepted a corrupted blob")
	}
}

func TestNormalizeRejects(t *testing.T) {
	for name, entries := range map[string][]Entry{
		"duplicate":     {{Path: "/a", Data: []byte("x")}, {Path: "/a", Data: []byte("y")}},
		"two kinds":     {{Path: "/a", Data: []byte("x"), Link: "b"}},
		"file parent":   {{Path: "/a", Data: []byte("x")}, {Path: "/a/b", Data: []byte("y")}},
		"root as entry": {{Path: "/", Dir: true}},
	} {
		if _, err := normalize(entries); err == nil {
			t.Errorf("%s: accepted %+v", name, entries)
		}
	}
}

func TestLayerFileMatchesDigest(t *testing.T) {
	l, err := buildLayer(t.TempDir(), []Entry{{Path: "/x", Data: []byte("x")}})
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(l.path)
	raw, err := os.ReadFile(l.path)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if zr.Header.Name != "" || !zr.Header.ModTime.IsZero() {
		t.Errorf("gzip header carries name %q / time %v", zr.Header.Name, zr.Header.ModTime)
	}
	if sum := sha256.Sum256(raw); hex.EncodeToString(sum[:]) != l.digest.Hex {
		t.Errorf("layer file hashes to %x, digest says %s", sum, l.digest)
	}
	if int64(len(raw)) != l.size {
		t.Errorf("size %d, file %d", l.size, len(raw))
	}
}
