package store_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"kubeboot.dev/kubeboot/bootstrapd/images"
	"kubeboot.dev/kubeboot/image/privatecontainerd"
	"kubeboot.dev/kubeboot/image/store"
	"kubeboot.dev/kubeboot/internal/containerdtest"
)

const epoch = 315532800

func archives(t *testing.T) []store.Image {
	dir := t.TempDir()
	var out []store.Image
	for _, im := range []struct {
		ref   string
		files map[string]string
	}{
		{"registry.k8s.io/coredns/coredns:v1.14.6", map[string]string{"/coredns": "coredns"}},
		{"registry.k8s.io/etcd:3.7.0-0", map[string]string{"/usr/local/bin/etcd": "etcd", "/usr/local/bin/etcdctl": "etcdctl"}},
		{"registry.k8s.io/pause:3.10.2", map[string]string{"/pause": "pause"}},
	} {
		e, p := containerdtest.Archive(t, dir, im.ref, im.files)
		out = append(out, store.Image{Entry: e, Archive: p})
	}
	return out
}

func build(t *testing.T, bins map[string]string, imgs []store.Image) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "containerd")
	if err := store.Build(context.Background(), store.Options{
		Containerd: bins["containerd"], Images: imgs, Root: root, SourceDateEpoch: epoch,
	}); err != nil {
		t.Fatal(err)
	}
	return root
}

func TestBuildMakesAPinnedUnpackedStore(t *testing.T) {
	bins := containerdtest.Binaries(t, "containerd", "ctr", "crictl")
	imgs := archives(t)
	root := build(t, bins, imgs)

	// Only the store is kept; the introspection UUID must differ per node.
	var top []string
	entries, _ := os.ReadDir(root)
	for _, e := range entries {
		top = append(top, e.Name())
	}
	if got := strings.Join(top, " "); got != "io.containerd.content.v1.content io.containerd.metadata.v1.bolt io.containerd.snapshotter.v1.overlayfs" {
		t.Errorf("store root holds %s", got)
	}
	checkTimestamps(t, filepath.Join(root, "io.containerd.metadata.v1.bolt/meta.db"))
	checkTimestamps(t, filepath.Join(root, "io.containerd.snapshotter.v1.overlayfs/metadata.db"))

	// The same inputs give the same bytes.
	if a, b := treeDigest(t, root), treeDigest(t, build(t, bins, imgs)); a != b {
		t.Errorf("two builds differ: %s / %s", a, b)
	}

	// A containerd started on the store finds every image, pinned and
	// unpacked, through the Go client, ctr and the CRI plugin (crictl), as
	// the kubelet would.
	d := containerdtest.Start(t, privatecontainerd.Options{Binaries: map[string]string{"containerd": bins["containerd"]}, Root: root, CRI: true})
	c, err := images.Connect(context.Background(), d.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var es []images.Entry
	for _, im := range imgs {
		es = append(es, im.Entry)
	}
	sts, err := images.Verify(context.Background(), c, es)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range sts {
		if !st.OK() {
			t.Errorf("%s: %s", st.Ref, st.Missing())
		}
	}
	ctr := func(args ...string) string {
		out, err := exec.Command(bins["ctr"], append([]string{"--address", d.Socket, "--namespace", images.Namespace}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("ctr %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	ls := ctr("images", "ls")
	for _, im := range imgs {
		for _, name := range []string{im.Ref, im.DigestRef()} {
			line := lineOf(ls, name+" ")
			if !strings.Contains(line, im.Digest) || !strings.Contains(line, "io.cri-containerd.pinned=pinned") || !strings.Contains(line, "io.cri-containerd.image=managed") {
				t.Errorf("ctr images ls: %s is %q", name, line)
			}
		}
	}
	if n := strings.Count(ls, "io.cri-containerd.pinned=pinned"); n != 3*len(imgs) {
		t.Errorf("ctr images ls lists %d pinned records, want %d:\n%s", n, 3*len(imgs), ls)
	}
	snaps := ctr("snapshots", "--snapshotter", images.Snapshotter, "ls")
	if n := strings.Count(snaps, "Committed"); n != len(imgs) {
		t.Errorf("%d committed overlayfs snapshots, want %d (one layer each):\n%s", n, len(imgs), snaps)
	}

	crictl := func(args ...string) string {
		out, err := exec.Command(bins["crictl"], append([]string{"--image-endpoint", "unix://" + d.Socket, "--timeout", "30s"}, args...)...).Output()
		if err != nil {
			t.Fatalf("crictl %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	var listed []string
	for _, l := range strings.Split(strings.TrimSpace(crictl("images")), "\n")[1:] {
		f := strings.Fields(l)
		listed = append(listed, f[0]+":"+f[1])
	}
	var want []string
	for _, im := range imgs {
		want = append(want, im.Ref)
	}
	if strings.Join(listed, " ") != strings.Join(want, " ") {
		t.Errorf("crictl images lists %q, want %q", listed, want)
	}
	for _, im := range imgs {
		if out := crictl("inspecti", "-o", "json", im.Ref); !strings.Contains(out, `"pinned": true`) || !strings.Contains(out, im.DigestRef()) {
			t.Errorf("crictl inspecti %s: not pinned, or without its digest reference:\n%s", im.Ref, out)
		}
	}
}

// checkTimestamps fails unless every createdat/updatedat in the bolt
// database at p is the epoch.
func checkTimestamps(t *testing.T, p string) {
	t.Helper()
	db, err := bolt.Open(p, 0, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	want, _ := time.Unix(epoch, 0).UTC().MarshalBinary()
	n := 0
	var walk func(b *bolt.Bucket) error
	walk = func(b *bolt.Bucket) error {
		return b.ForEach(func(k, v []byte) error {
			if v == nil {
				return walk(b.Bucket(k))
			}
			if string(k) == "createdat" || string(k) == "updatedat" {
				n++
				if !bytes.Equal(v, want) {
					return fmt.Errorf("%s is %x", k, v)
				}
			}
			return nil
		})
	}
	if err := db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(_ []byte, b *bolt.Bucket) error { return walk(b) })
	}); err != nil {
		t.Errorf("%s: %v", p, err)
	}
	if n == 0 {
		t.Errorf("%s holds no timestamps", p)
	}
}

// treeDigest hashes paths, modes, owners, link targets and contents.
func treeDigest(t *testing.T, root string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fmt.Fprintf(h, "%s %s\n", rel, info.Mode())
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			fmt.Fprintln(h, l)
		case info.Mode().IsRegular():
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			if _, err := io.Copy(h, f); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

func lineOf(out, prefix string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}
