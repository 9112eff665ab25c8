package kubeadmconfig

import (
	"bytes"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kubeboot.dev/kubeboot/machineconfig"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// Test credentials, not the example configs' (configs/ will take theirs
// from a secrets bundle): what a node gets from its config or bundle.
const (
	testToken   = "kbtest.0123456789abcdef"
	testCertKey = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"
	testCAHash  = "sha256:7c1d5e1c1bb3a4a53fdc1fd1a4e35b9a4f5cb1f1d2a6dd4fe2c09e1bb8e6b4ca"
)

func testInputs() Inputs {
	return Inputs{
		Token:           testToken,
		CACertHashes:    []string{testCAHash},
		CertificateKey:  testCertKey,
		CAsPreinstalled: true,
		Dir:             "/var/lib/kubeboot/kubeadm",
	}
}

// A worker is never given the certificate key.
func workerInputs(in *Inputs) { in.CertificateKey = "" }

// renderCase is one golden test: a machine config, how the inputs differ
// from testInputs, and testdata/NAME.golden (plus NAME.kubelet-patch.golden
// when a kubelet patch file is rendered).
type renderCase struct {
	name, config string
	inputs       func(*Inputs)
}

var renderCases = []renderCase{
	{"controller", "../../configs/controller.yaml", nil},
	{"control-plane", "../../configs/control-plane.yaml", nil},
	{"worker", "../../configs/worker.yaml", workerInputs},
	// Without a secrets bundle the init node uploads the CA keys encrypted
	// with the certificate key, and its token expires.
	{"controller-upload-certs", "../../configs/controller.yaml", func(in *Inputs) {
		in.CAsPreinstalled = false
		in.TokenTTL = 24 * time.Hour
	}},
	{"control-plane-certificate-key", "../../configs/control-plane.yaml", func(in *Inputs) { in.CAsPreinstalled = false }},
	{"labels-taints", "testdata/labels-taints.yaml", nil},
	{"worker-taints", "testdata/worker-taints.yaml", workerInputs},
	{"schedulable", "testdata/schedulable.yaml", nil},
	{"patches-init", "testdata/patches-init.yaml", nil},
	{"patches-worker", "testdata/patches-worker.yaml", workerInputs},
	{"dual-stack", "testdata/dual-stack.yaml", func(in *Inputs) {
		in.NodeIPs = []netip.Addr{netip.MustParseAddr("172.16.0.11"), netip.MustParseAddr("fd00:16::11")}
	}},
	{"ipv6", "testdata/ipv6.yaml", nil},
	{"dhcp-worker", "testdata/dhcp-worker.yaml", func(in *Inputs) {
		workerInputs(in)
		in.NodeIPs = []netip.Addr{netip.MustParseAddr("172.16.0.57")}
	}},
}

func loadConfig(tb testing.TB, file string) *machineconfig.MachineConfig {
	tb.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		tb.Fatal(err)
	}
	cfg, err := machineconfig.Parse(file, data)
	if err != nil {
		tb.Fatal(err)
	}
	return cfg
}

func (c renderCase) render(tb testing.TB) *Rendered {
	tb.Helper()
	in := testInputs()
	if c.inputs != nil {
		c.inputs(&in)
	}
	r, err := Render(loadConfig(tb, c.config), in)
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

func checkGolden(t *testing.T, golden string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -run TestGolden -update ./bootstrapd/kubeadmconfig)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s\n--- got:\n%s--- want:\n%s", golden, got, want)
	}
}

func TestGolden(t *testing.T) {
	for _, c := range renderCases {
		t.Run(c.name, func(t *testing.T) {
			r := c.render(t)
			checkGolden(t, filepath.Join("testdata", c.name+".golden"), r.Config())
			patchGolden := filepath.Join("testdata", c.name+".kubelet-patch.golden")
			if r.KubeletPatch() != nil {
				checkGolden(t, patchGolden, r.KubeletPatch())
			} else if _, err := os.Stat(patchGolden); err == nil {
				t.Errorf("%s exists but no kubelet patch was rendered", patchGolden)
			}
			// Deterministic: a second rendering is byte for byte the same.
			if again := c.render(t); !bytes.Equal(again.Config(), r.Config()) || !bytes.Equal(again.KubeletPatch(), r.KubeletPatch()) {
				t.Error("two renderings differ")
			}
		})
	}
}

// The redacted rendering is the real one with exactly the secret values
// replaced, and nothing that prints a Rendered shows a secret.
func TestRedacted(t *testing.T) {
	for _, c := range renderCases {
		t.Run(c.name, func(t *testing.T) {
			r := c.render(t)
			want := bytes.ReplaceAll(r.Config(), []byte(testToken), []byte("<redacted>"))
			want = bytes.ReplaceAll(want, []byte(testCertKey), []byte("<redacted>"))
			if !bytes.Equal(r.Redacted(), want) {
				t.Errorf("redacted rendering:\n%s\nwant:\n%s", r.Redacted(), want)
			}
			for _, s := range []string{fmt.Sprint(r), fmt.Sprintf("%s", r), fmt.Sprintf("%#v", r), fmt.Sprintf("%+v", r), string(r.Redacted())} {
				if strings.Contains(s, testToken) || strings.Contains(s, testCertKey) || strings.Contains(s, "0123456789abcdef") {
					t.Errorf("a secret shows in:\n%s", s)
				}
			}
		})
	}
}

// A patch can add secrets kubeboot did not render (another bootstrap
// token, a TLS bootstrap token); they are redacted by field too.
func TestRedactedPatchedSecrets(t *testing.T) {
	const other, otherTLS = "kbtwo0.fedcba9876543210", "kbtls0.aaaabbbbccccdddd"
	cfg := loadConfig(t, "../../configs/controller.yaml")
	cfg.Kubernetes.KubeadmPatches = []machineconfig.KubeadmPatch{{Kind: "InitConfiguration", Patch: map[string]any{
		"bootstrapTokens": []any{map[string]any{"token": testToken}, map[string]any{"token": other, "ttl": "1h0m0s"}},
	}}}
	init, err := Render(cfg, testInputs())
	if err != nil {
		t.Fatal(err)
	}
	cfg = loadConfig(t, "../../configs/control-plane.yaml")
	cfg.Kubernetes.KubeadmPatches = []machineconfig.KubeadmPatch{{Kind: "JoinConfiguration", Patch: map[string]any{
		"discovery": map[string]any{"tlsBootstrapToken": otherTLS},
	}}}
	in := testInputs()
	in.CAsPreinstalled = false
	join, err := Render(cfg, in)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []*Rendered{init, join} {
		for _, s := range []string{other, otherTLS, testToken, testCertKey} {
			if bytes.Contains(r.Redacted(), []byte(s)) {
				t.Errorf("redacted rendering shows %s:\n%s", s, r.Redacted())
			}
		}
	}
	if !bytes.Contains(init.Config(), []byte(other)) || !bytes.Contains(join.Config(), []byte(otherTLS)) {
		t.Error("the patched secrets are missing from the real rendering")
	}
	if n := bytes.Count(join.Redacted(), []byte("<redacted>")); n != 3 {
		t.Errorf("join: %d values redacted, want 3 (token, tlsBootstrapToken, certificateKey):\n%s", n, join.Redacted())
	}
}

// Missing or misplaced inputs are refused with a message naming them and
// never the secret values.
func TestRenderRefuses(t *testing.T) {
	cases := []struct {
		name, config string
		change       func(*Inputs)
		msg          string
	}{
		{"no token", "../../configs/controller.yaml", func(in *Inputs) { in.Token = "" }, "no bootstrap token"},
		{"negative ttl", "../../configs/controller.yaml", func(in *Inputs) { in.TokenTTL = -time.Second }, "token TTL -1s is negative"},
		{"relative dir", "../../configs/controller.yaml", func(in *Inputs) { in.Dir = "kubeadm" }, `directory "kubeadm" is not absolute`},
		{"join without CA hash", "../../configs/worker.yaml", func(in *Inputs) { workerInputs(in); in.CACertHashes = nil }, "needs the CA cert hashes"},
		{"control plane without key", "../../configs/control-plane.yaml", func(in *Inputs) { in.CAsPreinstalled = false; in.CertificateKey = "" }, "needs the certificate key"},
		{"worker with key", "../../configs/worker.yaml", nil, "a worker must not get the certificate key"},
		{"node IP not the configured one", "../../configs/controller.yaml", func(in *Inputs) {
			in.NodeIPs = []netip.Addr{netip.MustParseAddr("10.0.0.11")}
		}, "node IP 10.0.0.11 is not the configured kubernetes.advertiseAddress 172.16.0.11"},
		{"two IPv4 node IPs", "../../configs/controller.yaml", func(in *Inputs) {
			in.NodeIPs = []netip.Addr{netip.MustParseAddr("172.16.0.11"), netip.MustParseAddr("10.0.0.11")}
		}, "are of the same family"},
		{"loopback node IP", "testdata/dhcp-worker.yaml", func(in *Inputs) {
			workerInputs(in)
			in.NodeIPs = []netip.Addr{netip.MustParseAddr("127.0.0.1")}
		}, "127.0.0.1 is not a usable node IP"},
		{"no node IP", "testdata/dhcp-worker.yaml", workerInputs, "the node IP is unknown"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := testInputs()
			if c.change != nil {
				c.change(&in)
			}
			_, err := Render(loadConfig(t, c.config), in)
			if err == nil || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("err = %v, want %q", err, c.msg)
			}
			if strings.Contains(err.Error(), testToken) || strings.Contains(err.Error(), testCertKey) {
				t.Errorf("error shows a secret: %v", err)
			}
		})
	}
}

// A config built in code can carry a patch for a document the role does
// not render; it is an error, not silently dropped.
func TestPatchForMissingDocument(t *testing.T) {
	cfg := loadConfig(t, "../../configs/worker.yaml")
	cfg.Kubernetes.KubeadmPatches = []machineconfig.KubeadmPatch{{Kind: "ClusterConfiguration", Patch: map[string]any{"clusterName": "x"}}}
	in := testInputs()
	workerInputs(&in)
	_, err := Render(cfg, in)
	if err == nil || !strings.Contains(err.Error(), "kubernetes.kubeadmPatches[0]: no ClusterConfiguration is rendered for a worker node") {
		t.Fatalf("err = %v", err)
	}
}

func TestWrite(t *testing.T) {
	root := t.TempDir()
	r := renderCases[9].render(t) // patches-worker: config and kubelet patch
	if r.ConfigPath() != "/var/lib/kubeboot/kubeadm/kubeadm.yaml" {
		t.Fatalf("ConfigPath = %s", r.ConfigPath())
	}
	if err := r.Write(root); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "var/lib/kubeboot/kubeadm")
	for _, f := range []struct {
		path string
		mode os.FileMode
		data []byte
	}{
		{dir, os.ModeDir | 0o700, nil},
		{filepath.Join(dir, "kubeadm.yaml"), 0o600, r.Config()},
		{filepath.Join(dir, "patches"), os.ModeDir | 0o700, nil},
		{filepath.Join(dir, "patches", "kubeletconfiguration+merge.yaml"), 0o600, r.KubeletPatch()},
	} {
		st, err := os.Stat(f.path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode() != f.mode {
			t.Errorf("%s: mode %v, want %v", f.path, st.Mode(), f.mode)
		}
		if f.data != nil {
			if got, _ := os.ReadFile(f.path); !bytes.Equal(got, f.data) {
				t.Errorf("%s: content differs", f.path)
			}
		}
	}
	// Control planes get the probe patches.
	if err := renderCases[0].render(t).Write(root); err != nil {
		t.Fatal(err)
	}
	for name, p := range probePatches {
		if got, err := os.ReadFile(filepath.Join(dir, "patches", name)); err != nil || !bytes.Equal(got, p) {
			t.Errorf("control plane: patches/%s: %q, %v", name, got, err)
		}
	}
	// A worker without kubelet patches removes every stale patch file.
	if err := renderCases[2].render(t).Write(root); err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(filepath.Join(dir, "patches")); len(left) != 0 {
		t.Errorf("stale patches left behind: %v", left)
	}
	// A directory others can read is refused: the config holds the token.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := r.Write(root); err == nil || !strings.Contains(err.Error(), "must sit in a 0700 directory") {
		t.Errorf("Write into a 0755 directory: %v", err)
	}
}
