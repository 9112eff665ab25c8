package images_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"kubeboot.dev/kubeboot/bootstrapd/images"
	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/image/oci"
	"kubeboot.dev/kubeboot/internal/containerdtest"
	"kubeboot.dev/kubeboot/internal/netnstest"
)

// TestPinnedRegistriesAreNeverPulled runs containerd with the CRI plugin in
// a network namespace of the test's own (loopback only) with the node's
// registry configuration: the refusing hosts.toml the builder writes for
// registry.k8s.io, and a mirror for another registry served by a registry
// on the namespace's loopback. A pull from registry.k8s.io fails at once
// without a connection; the mirrored image is pulled through the mirror.
func TestPinnedRegistriesAreNeverPulled(t *testing.T) {
	bins := containerdtest.Binaries(t, "containerd", "containerd-shim-runc-v2", "runc", "crictl")
	env := &stage.Env{NetNS: netnstest.New(t, fmt.Sprintf("kbimg%d", os.Getpid()))}
	inNS := func(f func() error) {
		t.Helper()
		if err := env.InNetNS(f); err != nil {
			t.Fatal(err)
		}
	}

	// A registry on the namespace's loopback holding mirror.test/probe:1.
	var l net.Listener
	inNS(func() (err error) { l, err = net.Listen("tcp", "127.0.0.1:0"); return err })
	srv := &http.Server{Handler: registry.New(registry.Logger(log.New(io.Discard, "", 0)))}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	img, err := oci.Build(t.TempDir(), oci.Config{Entrypoint: []string{"/probe"}}, []oci.Entry{{Path: "/probe", Data: []byte("probe")}})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	dial := func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		err = env.InNetNS(func() error { c, err = (&net.Dialer{}).DialContext(ctx, network, addr); return err })
		return c, err
	}
	ref, _ := name.ParseReference(l.Addr().String() + "/probe:1")
	if err := remote.Write(ref, img, remote.WithTransport(&http.Transport{DialContext: dial})); err != nil {
		t.Fatal(err)
	}

	hosts := t.TempDir()
	for host, data := range map[string][]byte{
		"registry.k8s.io": images.RefusingHosts("registry.k8s.io"),
		"mirror.test":     fmt.Appendf(nil, "server = \"https://mirror.test\"\n[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", l.Addr()),
	} {
		if err := os.MkdirAll(filepath.Join(hosts, host), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(hosts, host, "hosts.toml"), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	d, crictl := containerdtest.StartCRIWithHosts(t, bins, env.InNetNS, hosts)

	out, err := crictl("pull", "registry.k8s.io/pause:3.10.2")
	if err == nil || !strings.Contains(out, "no resolve hosts") {
		t.Errorf("pull from the pinned registry: want containerd's \"no resolve hosts\", got %v:\n%s", err, out)
	}
	if out, err := crictl("pull", "mirror.test/probe:1"); err != nil {
		t.Fatalf("pull through the mirror: %v\n%s\ncontainerd:\n%s", err, out, d.LogTail())
	}
	out, err = crictl("images")
	if err != nil || !strings.Contains(out, "mirror.test/probe") || strings.Contains(out, "registry.k8s.io") {
		t.Errorf("crictl images after the pulls: %v\n%s", err, out)
	}
}

// TestContainerdConfigUsesTheHostsDir: the node's containerd reads registry
// hosts from HostsDir, the one directory the builder writes.
func TestContainerdConfigUsesTheHostsDir(t *testing.T) {
	data, err := os.ReadFile("../../overlays/etc/containerd/config.toml")
	if err != nil {
		t.Fatal(err)
	}
	want := "[plugins.\"io.containerd.cri.v1.images\".registry]\n  config_path = \"" + images.HostsDir + "\"\n"
	if !bytes.Contains(data, []byte(want)) {
		t.Errorf("overlays/etc/containerd/config.toml lacks\n%s", want)
	}
}
