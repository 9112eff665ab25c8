package registries_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/vishvananda/netns"

	"kubeboot.dev/kubeboot/bootstrapd/images"
	"kubeboot.dev/kubeboot/bootstrapd/registries"
	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/image/oci"
	"kubeboot.dev/kubeboot/internal/containerdtest"
	"kubeboot.dev/kubeboot/internal/netnstest"
	"kubeboot.dev/kubeboot/internal/testca"
	"kubeboot.dev/kubeboot/machineconfig"
)

const head = "apiVersion: kubeboot.dev/v1alpha1\nkind: MachineConfig\nrole: init\nhostname: a.example.com\n" +
	"kubernetes:\n  version: v1.37.2\n  controlPlaneEndpoint: a.example.com:6443\n"

func config(t *testing.T, mirrors string) *machineconfig.MachineConfig {
	t.Helper()
	cfg, err := machineconfig.Parse("t.yaml", []byte(head+mirrors))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func indent(s string, n int) string {
	pad := strings.Repeat(" ", n)
	return pad + strings.ReplaceAll(strings.TrimSuffix(s, "\n"), "\n", "\n"+pad) + "\n"
}

// writeIndex gives root a baked images index pinning refs.
func writeIndex(t *testing.T, root string, refs ...string) {
	t.Helper()
	var entries []images.Entry
	for _, r := range refs {
		entries = append(entries, images.Entry{Ref: r, Digest: "sha256:" + strings.Repeat("a", 64), File: images.FileName(r)})
	}
	p := filepath.Join(root, "usr/share/kubeboot/images/index")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, images.FormatIndex(entries), 0o644); err != nil {
		t.Fatal(err)
	}
}

func env(root string, cfg *machineconfig.MachineConfig) *stage.Env {
	return &stage.Env{Root: root, NetNS: netns.None(), Config: cfg, Log: slog.New(slog.DiscardHandler)}
}

func apply(t *testing.T, e *stage.Env) []stage.Change {
	t.Helper()
	s := registries.New()
	if err := s.(stage.Validator).Validate(context.Background(), e); err != nil {
		t.Fatalf("validate: %v", err)
	}
	planned, err := s.Plan(context.Background(), e)
	if err != nil {
		t.Fatal(err)
	}
	changes, err := s.Apply(context.Background(), e)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(planned, changes) {
		t.Errorf("planned %q, applied %q", planned, changes)
	}
	return changes
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The files of the stage's runs: written once, unchanged on a rerun,
// removed when the config drops them; the builder's refusing files and a
// hand-written one stay as they are.
func TestFilesFollowTheConfig(t *testing.T) {
	root := t.TempDir()
	writeIndex(t, root, "registry.k8s.io/pause:3.10.2", "ghcr.io/flannel-io/flannel:v0.28.10")
	certs := filepath.Join(root, images.HostsDir)
	refusing := string(images.RefusingHosts("ghcr.io"))
	for host, data := range map[string]string{"ghcr.io": refusing, "own.example": "server = \"https://own.example\"\n"} {
		if err := os.MkdirAll(filepath.Join(certs, host), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(certs, host, "hosts.toml"), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ca, _ := testCA(t)
	cfg := config(t, "containerd:\n  mirrors:\n"+
		"    - registry: docker.io\n      endpoints:\n        - url: https://mirror.home.local:5000/\n          caCert: |\n"+indent(ca, 12)+
		"        - url: http://10.0.0.5\n          capabilities: [pull]\n"+
		"    - registry: quay.io\n      endpoints:\n        - url: https://q.example\n")
	if got := apply(t, env(root, cfg)); len(got) != 3 {
		t.Errorf("first run: %q, want 3 files", got)
	}
	want := registries.Marker + "\n# Mirrors of docker.io, tried in this order; then docker.io itself.\n\n" +
		"[host.\"https://mirror.home.local:5000\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = \"mirror-1.crt\"\n\n" +
		"[host.\"http://10.0.0.5\"]\n  capabilities = [\"pull\"]\n"
	if got := read(t, filepath.Join(certs, "docker.io/hosts.toml")); got != want {
		t.Errorf("docker.io/hosts.toml:\n%s\nwant\n%s", got, want)
	}
	if got := read(t, filepath.Join(certs, "docker.io/mirror-1.crt")); got != ca {
		t.Errorf("mirror-1.crt = %q", got)
	}
	if got := apply(t, env(root, cfg)); len(got) != 0 {
		t.Errorf("rerun: %q, want no change", got)
	}

	// docker.io loses its CA and quay.io its mirrors.
	cfg = config(t, "containerd:\n  mirrors:\n    - registry: docker.io\n      endpoints:\n        - url: http://10.0.0.5\n")
	got := apply(t, env(root, cfg))
	wantChanges := []stage.Change{
		"/etc/containerd/certs.d/docker.io/hosts.toml: 1 mirror(s) of docker.io",
		"remove /etc/containerd/certs.d/docker.io/mirror-1.crt",
		"remove /etc/containerd/certs.d/quay.io/hosts.toml",
	}
	if !slices.Equal(got, wantChanges) {
		t.Errorf("changes %q\nwant %q", got, wantChanges)
	}
	if _, err := os.Stat(filepath.Join(certs, "quay.io")); !os.IsNotExist(err) {
		t.Errorf("quay.io's directory is still there: %v", err)
	}
	if got := read(t, filepath.Join(certs, "ghcr.io/hosts.toml")); got != refusing {
		t.Errorf("the refusing ghcr.io/hosts.toml changed:\n%s", got)
	}
	// No mirrors at all: only the builder's and the hand-written files are left.
	apply(t, env(root, config(t, "")))
	var left []string
	filepath.WalkDir(certs, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			left = append(left, strings.TrimPrefix(p, certs+"/"))
		}
		return err
	})
	if want := []string{"ghcr.io/hosts.toml", "own.example/hosts.toml"}; !slices.Equal(left, want) {
		t.Errorf("left %q, want %q", left, want)
	}
}

// A mirror for a registry of the pinned images, or for a registry whose
// hosts.toml is not bootstrapd's, is refused before anything is written.
func TestRefusesPinnedAndForeignRegistries(t *testing.T) {
	root := t.TempDir()
	writeIndex(t, root, "registry.k8s.io/pause:3.10.2", "ghcr.io/flannel-io/flannel:v0.28.10")
	p := filepath.Join(root, images.HostsDir, "own.example/hosts.toml")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("server = \"https://own.example\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := config(t, "containerd:\n  mirrors:\n"+
		"    - registry: ghcr.io\n      endpoints:\n        - url: https://m.example\n"+
		"    - registry: own.example\n      endpoints:\n        - url: https://m.example\n")
	err := registries.New().(stage.Validator).Validate(context.Background(), env(root, cfg))
	for _, want := range []string{
		"containerd.mirrors[0].registry: ghcr.io serves images this node image pins (/usr/share/kubeboot/images/index)",
		"containerd.mirrors[1].registry: /etc/containerd/certs.d/own.example/hosts.toml exists and was not written by bootstrapd",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("validate: %v\nwant %q", err, want)
		}
	}
}

// testCA makes a CA and a server certificate for 127.0.0.1 it signs.
func testCA(t *testing.T) (caPEM string, server tls.Certificate) {
	t.Helper()
	ca, cert, err := testca.Server("mirror", net.IPv4(127, 0, 0, 1))
	if err != nil {
		t.Fatal(err)
	}
	return string(ca), cert
}

// TestPullThroughMirrors runs containerd with the CRI plugin in a network
// namespace of the test's own (loopback only), reading registry hosts from
// what the stage wrote next to the builder's refusing hosts.toml: an image
// of mirror.test is pulled through its https mirror (a registry on the
// namespace's loopback with a certificate from the config's caCert); the
// same mirror without the CA is refused by TLS; registry.k8s.io, pinned,
// is still never pulled.
func TestPullThroughMirrors(t *testing.T) {
	bins := containerdtest.Binaries(t, "containerd", "containerd-shim-runc-v2", "runc", "crictl")
	e := &stage.Env{NetNS: netnstest.New(t, fmt.Sprintf("kbreg%d", os.Getpid())), Log: slog.New(slog.DiscardHandler)}
	inNS := func(f func() error) {
		t.Helper()
		if err := e.InNetNS(f); err != nil {
			t.Fatal(err)
		}
	}
	caPEM, cert := testCA(t)
	var l net.Listener
	inNS(func() (err error) {
		l, err = tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
		return err
	})
	srv := &http.Server{Handler: registry.New(registry.Logger(log.New(io.Discard, "", 0))), ErrorLog: log.New(io.Discard, "", 0)}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	img, err := oci.Build(t.TempDir(), oci.Config{Entrypoint: []string{"/probe"}}, []oci.Entry{{Path: "/probe", Data: []byte("probe")}})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(caPEM))
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		err = e.InNetNS(func() error { c, err = (&net.Dialer{}).DialContext(ctx, network, addr); return err })
		return c, err
	}}
	addr := l.Addr().String()
	ref, _ := name.ParseReference(addr + "/probe:1")
	if err := remote.Write(ref, img, remote.WithTransport(tr)); err != nil {
		t.Fatal(err)
	}

	root := t.TempDir()
	writeIndex(t, root, "registry.k8s.io/pause:3.10.2")
	certs := filepath.Join(root, images.HostsDir)
	if err := os.MkdirAll(filepath.Join(certs, "registry.k8s.io"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(certs, "registry.k8s.io/hosts.toml"), images.RefusingHosts("registry.k8s.io"), 0o644); err != nil {
		t.Fatal(err)
	}
	url := "https://" + addr
	e.Root = root
	e.Config = config(t, "containerd:\n  mirrors:\n"+
		"    - registry: mirror.test\n      endpoints:\n        - url: "+url+"\n          caCert: |\n"+indent(caPEM, 12)+
		"    - registry: untrusted.test\n      endpoints:\n        - url: "+url+"\n")
	apply(t, e)

	d, crictl := containerdtest.StartCRIWithHosts(t, bins, e.InNetNS, certs)
	if out, err := crictl("pull", "mirror.test/probe:1"); err != nil {
		t.Fatalf("pull through the mirror: %v\n%s\ncontainerd:\n%s", err, out, d.LogTail())
	}
	if out, err := crictl("pull", "untrusted.test/probe:1"); err == nil || !strings.Contains(out, "certificate signed by unknown authority") {
		t.Errorf("pull through a mirror whose CA is not configured: want a TLS error, got %v:\n%s", err, out)
	}
	if out, err := crictl("pull", "registry.k8s.io/pause:3.10.2"); err == nil || !strings.Contains(out, "no resolve hosts") {
		t.Errorf("pull from the pinned registry: want containerd's \"no resolve hosts\", got %v:\n%s", err, out)
	}
	out, err := crictl("images")
	if err != nil || !strings.Contains(out, "mirror.test/probe") || strings.Contains(out, "registry.k8s.io") || strings.Contains(out, "untrusted.test") {
		t.Errorf("crictl images after the pulls: %v\n%s", err, out)
	}
}
