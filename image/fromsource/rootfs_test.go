package fromsource

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"kubeboot.dev/kubeboot/image/fetch"
	"kubeboot.dev/kubeboot/image/oci"
	"kubeboot.dev/kubeboot/image/progress"
	"kubeboot.dev/kubeboot/image/spec"
)

// untar unpacks a layer into dir the way a container runtime would.
func untar(t *testing.T, r io.Reader, dir string) {
	t.Helper()
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, h.Name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, os.FileMode(h.Mode).Perm()); err != nil {
				t.Fatal(err)
			}
		case tar.TypeSymlink:
			if err := os.Symlink(h.Linkname, p); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, os.FileMode(h.Mode).Perm())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(f, tr); err != nil {
				t.Fatal(err)
			}
			f.Close()
		}
	}
}

// TestKubeProxyUserland makes the Debian trixie rootfs with mmdebstrap,
// picks kube-proxy's userland out of it into an image layer, unpacks the
// layer and runs iptables (nft backend, with the conntrack and MASQUERADE
// extensions), nft and conntrack from it in a private network namespace.
func TestKubeProxyUserland(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (mmdebstrap, chroot, network namespace)")
	}
	for _, tool := range []string{"mmdebstrap", "chroot", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (scripts/setup-host.sh installs it)", tool)
		}
	}
	s, err := spec.Load("../../configs/image.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := fetch.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b := &Builder{Cache: c, Progress: progress.Discard}
	f, err := b.debianRootfs(context.Background(), s.Base.Suite, s.Base.Mirror, userlandRootfs)
	if err != nil {
		t.Fatal(err)
	}
	// configs/image.yaml leaves the mirror to the build machine: the lock
	// must not record its URL.
	if want := "mmdebstrap --variant=extract --include=conntrack,iptables,nftables trixie (build host's Debian mirror)"; s.Base.Mirror == "" && f.Source != want {
		t.Errorf("lock source %q, want %q", f.Source, want)
	}
	entries, err := kubeProxyUserland(c.FilePath(f.SHA256))
	if err != nil {
		t.Fatal(err)
	}
	img, err := oci.Build(c.TempDir(), oci.Config{}, entries)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	untar(t, rc, root)
	rc.Close()

	ns := "kubeboot-userland-" + strconv.Itoa(os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Skipf("cannot create a network namespace: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("ip", append([]string{"netns", "exec", ns, "chroot", root}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v in the image: %v\n%s", args, err, out)
		}
		return string(out)
	}
	if out := run("iptables", "--version"); !strings.Contains(out, "nf_tables") {
		t.Errorf("iptables is not the nft backend: %s", out)
	}
	run("iptables", "-t", "nat", "-A", "POSTROUTING", "-m", "conntrack", "--ctstate", "DNAT", "-j", "MASQUERADE")
	run("ip6tables", "-t", "filter", "-A", "INPUT", "-m", "comment", "--comment", "kubeboot", "-j", "ACCEPT")
	if out := run("iptables-save", "-t", "nat"); !strings.Contains(out, "--ctstate DNAT -j MASQUERADE") {
		t.Errorf("iptables-save does not show the rule:\n%s", out)
	}
	if out := run("nft", "--version"); !strings.HasPrefix(out, "nftables v") {
		t.Errorf("nft --version: %s", out)
	}
	if out := run("conntrack", "--version"); !strings.Contains(out, "conntrack") {
		t.Errorf("conntrack --version: %s", out)
	}
	// Reusing the cached rootfs must give the same entry.
	again, err := b.debianRootfs(context.Background(), s.Base.Suite, s.Base.Mirror, userlandRootfs)
	if err != nil || again != f {
		t.Errorf("second debianRootfs: %+v %v, want %+v", again, err, f)
	}
}

// TestBusyboxImage makes the busybox-static rootfs, assembles the test
// image's files for the tag configs/image.yaml names, unpacks them and
// runs applets from them; a tag naming another version is refused.
func TestBusyboxImage(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (mmdebstrap, chroot)")
	}
	for _, tool := range []string{"mmdebstrap", "chroot"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (scripts/setup-host.sh installs it)", tool)
		}
	}
	s, err := spec.Load("../../configs/image.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var ref string
	for _, e := range s.Images.Extras {
		if e.From == spec.FromBuilt && strings.Contains(e.Ref, "/busybox:") {
			ref = e.Ref
		}
	}
	if ref == "" {
		t.Fatal("configs/image.yaml has no built busybox extra")
	}
	tag := ref[strings.LastIndex(ref, ":")+1:]
	c, err := fetch.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b := &Builder{Cache: c, Progress: progress.Discard}
	f, err := b.debianRootfs(context.Background(), s.Base.Suite, s.Base.Mirror, busyboxRootfs)
	if err != nil {
		t.Fatal(err)
	}
	if f.Name != "rootfs-trixie-busybox" || !strings.Contains(f.Source, "--include=busybox-static trixie") {
		t.Errorf("lock entry %+v", f)
	}
	if _, err := busyboxImage(c.FilePath(f.SHA256), "1.0.0"); err == nil || !strings.Contains(err.Error(), "tagged 1.0.0") {
		t.Errorf("a wrong tag was not refused: %v", err)
	}
	entries, err := busyboxImage(c.FilePath(f.SHA256), tag)
	if err != nil {
		t.Fatal(err)
	}
	img, err := oci.Build(c.TempDir(), oci.Config{}, entries)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	untar(t, rc, root)
	rc.Close()
	r, _ := RecipeFor(ref)
	out, err := exec.Command("chroot", append([]string{root}, append(r.Entrypoint, r.VersionArgs...)...)...).CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "BusyBox v"+tag+" ") {
		t.Errorf("%v: %v\n%s", append(r.Entrypoint, r.VersionArgs...), err, out)
	}
	for _, a := range busyboxApplets {
		if _, err := os.Readlink(filepath.Join(root, "bin", a)); err != nil {
			t.Errorf("applet %s: %v", a, err)
		}
	}
	out, err = exec.Command("chroot", root, "/bin/sh", "-c", "echo ok; nslookup 2>&1 | head -n 1").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "ok\n") {
		t.Errorf("sh -c in the image: %v\n%s", err, out)
	}
}
