package fetch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"kubeboot.dev/kubeboot/image/oci"
)

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func openCache(t *testing.T) *Cache {
	t.Helper()
	c, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// assertNothingCached fails if any file or image made it into the cache or
// a temp file was left behind.
func assertNothingCached(t *testing.T, c *Cache) {
	t.Helper()
	for _, d := range []string{"sha256", "images/sha256", "tmp"} {
		ents, err := os.ReadDir(filepath.Join(c.Dir, d))
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) != 0 {
			t.Errorf("%s is not empty after a failed fetch: %v", d, ents[0].Name())
		}
	}
}

func TestFileSHA256Pass(t *testing.T) {
	body := bytes.Repeat([]byte("kubeadm binary "), 10000)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }))
	defer srv.Close()
	c := openCache(t)
	got, p, err := c.File(context.Background(), srv.Client(), srv.URL+"/kubeadm", sha(body), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got != sha(body) || p != c.FilePath(sha(body)) {
		t.Fatalf("got %s at %s", got, p)
	}
	data, err := os.ReadFile(p)
	if err != nil || !bytes.Equal(data, body) {
		t.Fatalf("cached content differs (%v)", err)
	}
	// A second fetch is served from the cache: the server is gone.
	srv.Close()
	if _, _, err := c.File(context.Background(), srv.Client(), srv.URL+"/kubeadm", sha(body), nil); err != nil {
		t.Fatalf("cached file was downloaded again: %v", err)
	}
}

func TestFileSHA256Mismatch(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "tampered") }))
	defer srv.Close()
	c := openCache(t)
	want := sha([]byte("original"))
	_, _, err := c.File(context.Background(), srv.Client(), srv.URL+"/kubelet", want, nil)
	var mm *MismatchError
	if !errors.As(err, &mm) {
		t.Fatalf("want a MismatchError, got %v", err)
	}
	if mm.Expected != want || mm.Actual != sha([]byte("tampered")) || !strings.Contains(err.Error(), "/kubelet") {
		t.Fatalf("error does not name artifact, expected and actual: %v", err)
	}
	assertNothingCached(t, c)
}

func TestFileInterruptedDownload(t *testing.T) {
	body := bytes.Repeat([]byte("x"), 1<<20)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1048576")
		w.WriteHeader(http.StatusOK)
		w.Write(body[:300000])
		w.(http.Flusher).Flush()
		// Close the connection mid-body, as a dying server would.
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	defer srv.Close()
	c := openCache(t)
	// Without a pinned hash (what `lock` does) a short body must fail too.
	for _, want := range []string{"", sha(body)} {
		if _, _, err := c.File(context.Background(), srv.Client(), srv.URL+"/big", want, nil); err == nil {
			t.Fatalf("interrupted download (want %q) succeeded", want)
		}
		assertNothingCached(t, c)
	}
}

func TestFileHTTPError(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	c := openCache(t)
	_, _, err := c.File(context.Background(), srv.Client(), srv.URL+"/nope", "", nil)
	if err == nil || !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), srv.URL+"/nope") {
		t.Fatalf("want an error naming the URL and 404, got %v", err)
	}
	assertNothingCached(t, c)
}

// testRegistry serves an in-memory registry on loopback. tamper, when it
// returns true for a request, makes the blob response carry altered bytes.
func testRegistry(t *testing.T, tamper func(r *http.Request) bool) string {
	t.Helper()
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tamper != nil && r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") && tamper(r) {
			rec := httptest.NewRecorder()
			reg.ServeHTTP(rec, r)
			b := rec.Body.Bytes()
			if len(b) > 50 {
				b[50] ^= 0xff
			}
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			w.Write(b)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func pushTestImage(t *testing.T, ref, content string) string {
	t.Helper()
	img, err := oci.Build(t.TempDir(), oci.Config{Entrypoint: []string{"/hello"}},
		[]oci.Entry{{Path: "/hello", Data: bytes.Repeat([]byte(content), 2000), Mode: 0o755}})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, img); err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

func TestPullImageByDigest(t *testing.T) {
	host := testRegistry(t, nil)
	ref := host + "/pause:3.10.2"
	pushed := pushTestImage(t, ref, "pause")
	ctx := context.Background()
	digest, err := ResolveImage(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if digest != pushed {
		t.Fatalf("resolved %s, pushed %s", digest, pushed)
	}
	c := openCache(t)
	p, err := c.PullImage(ctx, ref, digest)
	if err != nil {
		t.Fatal(err)
	}
	if p != c.ImagePath(digest) {
		t.Fatalf("archive at %s, want %s", p, c.ImagePath(digest))
	}
	info, err := oci.ReadArchive(p)
	if err != nil {
		t.Fatal(err)
	}
	if info.Digest.String() != digest || info.Ref != ref {
		t.Fatalf("archive holds %s %s, want %s %s", info.Ref, info.Digest, ref, digest)
	}
}

func TestPullImageRefusesTamperedBlob(t *testing.T) {
	var layerDigest string
	host := testRegistry(t, func(r *http.Request) bool {
		return layerDigest != "" && strings.HasSuffix(r.URL.Path, layerDigest)
	})
	ref := host + "/etcd:3.7.0-0"
	digest := pushTestImage(t, ref, "etcd")
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r)
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	ld, err := layers[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
	layerDigest = ld.String()
	c := openCache(t)
	_, err = c.PullImage(context.Background(), ref, digest)
	if err == nil {
		t.Fatal("a tampered layer was accepted")
	}
	t.Logf("refused: %v", err)
	if !strings.Contains(err.Error(), ld.String()) {
		t.Errorf("error does not name the layer %s: %v", ld, err)
	}
	assertNothingCached(t, c)
}

func TestPullImageRefusesMovedTag(t *testing.T) {
	host := testRegistry(t, nil)
	ref := host + "/coredns/coredns:v1.14.6"
	locked := pushTestImage(t, ref, "first")
	moved := pushTestImage(t, ref, "second") // the tag is re-pushed
	c := openCache(t)
	_, err := c.PullImage(context.Background(), ref, locked)
	t.Logf("refused: %v", err)
	var tm *TagMovedError
	if !errors.As(err, &tm) || tm.Expected != locked || tm.Actual != moved {
		t.Fatalf("want TagMovedError %s -> %s, got %v", locked, moved, err)
	}
	assertNothingCached(t, c)
}

func TestPutImageDigestMismatch(t *testing.T) {
	img, err := oci.Build(t.TempDir(), oci.Config{}, []oci.Entry{{Path: "/x", Data: []byte("x")}})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	c := openCache(t)
	_, err = c.PutImage(img, "registry.k8s.io/pause:3.10.2", "sha256:"+strings.Repeat("0", 64))
	var mm *MismatchError
	if !errors.As(err, &mm) {
		t.Fatalf("want MismatchError, got %v", err)
	}
	assertNothingCached(t, c)
}

func TestFileURL(t *testing.T) {
	p := filepath.Join(t.TempDir(), "kubectl")
	if err := os.WriteFile(p, []byte("local kubectl"), 0o755); err != nil {
		t.Fatal(err)
	}
	c := openCache(t)
	got, _, err := c.File(context.Background(), nil, "file://"+p, sha([]byte("local kubectl")), nil)
	if err != nil || got != sha([]byte("local kubectl")) {
		t.Fatalf("file URL: %s %v", got, err)
	}
	c2 := openCache(t)
	var mm *MismatchError
	if _, _, err := c2.File(context.Background(), nil, "file://"+p, sha([]byte("other")), nil); !errors.As(err, &mm) {
		t.Fatalf("want MismatchError, got %v", err)
	}
	assertNothingCached(t, c2)
}

func TestLocalImageFromLayoutAndArchive(t *testing.T) {
	img, err := oci.Build(t.TempDir(), oci.Config{Entrypoint: []string{"/tool"}}, []oci.Entry{{Path: "/tool", Data: []byte("tool"), Mode: 0o755}})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	want, _ := img.Digest()
	const ref = "local.example/tools/tool:v1"

	// An OCI layout written by go-containerregistry, annotated with the tag.
	dir := filepath.Join(t.TempDir(), "layout")
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "v1"})); err != nil {
		t.Fatal(err)
	}
	// An OCI archive as kubeboot writes them.
	archive := filepath.Join(t.TempDir(), "tool.tar")
	f, err := os.Create(archive)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := oci.WriteArchive(f, img, ref); err != nil {
		t.Fatal(err)
	}
	f.Close()

	for _, from := range []string{"oci-layout:" + dir, "oci-archive:" + archive} {
		c := openCache(t)
		d, p, err := c.LocalImage(context.Background(), ref, from, "")
		if err != nil {
			t.Fatalf("%s: %v", from, err)
		}
		if d != want.String() {
			t.Errorf("%s: digest %s, want %s", from, d, want)
		}
		info, err := oci.ReadArchive(p)
		if err != nil || info.Ref != ref {
			t.Errorf("%s: cached archive %+v %v", from, info, err)
		}
		c2 := openCache(t)
		var mm *MismatchError
		if _, _, err := c2.LocalImage(context.Background(), ref, from, "sha256:"+strings.Repeat("1", 64)); !errors.As(err, &mm) {
			t.Errorf("%s: want MismatchError for a wrong pin, got %v", from, err)
		}
		assertNothingCached(t, c2)
	}
	if _, _, err := openCache(t).LocalImage(context.Background(), "local.example/other:v2", "oci-layout:"+dir, ""); err == nil {
		t.Error("an image the layout does not name was accepted")
	}
}
