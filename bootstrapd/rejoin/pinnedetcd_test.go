package rejoin

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"kubeboot.dev/kubeboot/bootstrapd/images"
	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/image/privatecontainerd"
	"kubeboot.dev/kubeboot/internal/containerdtest"
	"kubeboot.dev/kubeboot/nodepath"
)

// TestPinnedEtcdRunsFromTheImage imports the real pinned etcd image into
// our containerd, as the builder does, and runs the stand-in's etcd from
// its view: the binary answers with the image's version, and the view is
// gone once released.
func TestPinnedEtcdRunsFromTheImage(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a containerd view needs root")
	}
	entries, archives := containerdtest.LockedImages(t)
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, nodepath.ImagesDir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, nodepath.ImagesIndex), images.FormatIndex(entries), 0o644); err != nil {
		t.Fatal(err)
	}
	e, err := images.Find(entries, etcdRepository)
	if err != nil {
		t.Fatal(err)
	}
	d := containerdtest.Start(t, privatecontainerd.Options{Root: filepath.Join(t.TempDir(), "containerd")})
	sock := filepath.Join(root, nodepath.ContainerdSocket)
	if err := os.MkdirAll(filepath.Dir(sock), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(d.Socket, sock); err != nil {
		t.Fatal(err)
	}
	c, err := images.Connect(context.Background(), sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i, en := range entries {
		if en.Ref == e.Ref {
			if err := images.Import(context.Background(), c, en, archives[i]); err != nil {
				t.Fatal(err)
			}
		}
	}

	env := &stage.Env{Root: root, StateDir: t.TempDir(), Log: slog.New(slog.DiscardHandler)}
	bin, release, err := pinnedEtcd(context.Background(), env)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "--version").CombinedOutput()
	release()
	// registry.k8s.io/etcd:3.7.0-0 holds etcd 3.7.0.
	version := strings.TrimPrefix(strings.SplitN(e.Ref, ":", 2)[1], "v")
	version, _, _ = strings.Cut(version, "-")
	if err != nil || !strings.Contains(string(out), "etcd Version: "+version) {
		t.Errorf("%s --version: %v\n%s", bin, err, out)
	}
	view := strings.TrimSuffix(bin, "/usr/local/bin/etcd")
	if _, err := os.Stat(view); !os.IsNotExist(err) {
		t.Errorf("the view is still there after release: %v", err)
	}
}
