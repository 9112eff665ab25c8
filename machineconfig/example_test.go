package machineconfig

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var exampleConfigs = []string{"controller.yaml", "control-plane.yaml", "worker.yaml"}

func loadExample(t *testing.T, name string) *MachineConfig {
	t.Helper()
	cfg, err := Load(filepath.Join("..", "configs", name))
	if err != nil {
		t.Fatalf("%s does not validate:\n%v", name, err)
	}
	return cfg
}

func TestExampleConfigsValidate(t *testing.T) {
	for _, name := range exampleConfigs {
		t.Run(name, func(t *testing.T) { loadExample(t, name) })
	}
}

// The controller must reproduce the reference procedure's values.
func TestControllerMatchesReference(t *testing.T) {
	cfg := loadExample(t, "controller.yaml")
	metric := func(n int) *int { return &n }
	want := Network{Interfaces: []Interface{
		{Name: "enp1s0", Match: &Match{MACAddress: "52:54:00:80:ad:b6"}, IPConfig: IPConfig{
			Addresses: []string{"172.16.0.11/24"}, RouteMetric: metric(100),
			Routes: []Route{{To: "default", Via: "172.16.0.254", Metric: metric(100)}},
		}},
		{Name: "enp2s0", Match: &Match{MACAddress: "52:54:00:6a:9d:95"}, IPConfig: IPConfig{
			Addresses: []string{"10.0.0.11/24"}, RouteMetric: metric(101),
		}},
	}, Nameservers: Nameservers{Addresses: DefaultNameservers4}} // none configured, no DHCP
	if diff := cmp.Diff(want, cfg.Network); diff != "" {
		t.Errorf("network (-want +got):\n%s", diff)
	}
	k := cfg.Kubernetes
	checks := []struct{ name, got, want string }{
		{"role", string(cfg.Role), "init"},
		{"hostname", cfg.Hostname, "controller.home.local"},
		{"hosts", cfg.Hosts[0].IP + " " + strings.Join(cfg.Hosts[0].Names, ","), "172.16.0.11 controller.home.local"},
		{"endpoint", k.ControlPlaneEndpoint, "controller.home.local:6443"},
		{"podSubnet", k.PodSubnet, "172.17.0.0/16"},
		{"version", k.Version, "v1.37.2"},
		{"backend", string(cfg.Firewall.Backend), "auto"},
		{"user", cfg.Users[0].Name + " " + cfg.Users[0].Home, "admin /home/admin"},
		// defaults
		{"advertiseAddress", k.AdvertiseAddress, "172.16.0.11"},
		{"nodeName", k.NodeName, "controller.home.local"},
		{"serviceSubnet", k.ServiceSubnet, "10.96.0.0/12"},
		{"dnsDomain", k.DNSDomain, "cluster.local"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}
	if !*cfg.Firewall.KubernetesPorts || *cfg.Firewall.SSHPort != 22 {
		t.Errorf("firewall defaults: kubernetesPorts=%v sshPort=%d", *cfg.Firewall.KubernetesPorts, *cfg.Firewall.SSHPort)
	}
}

// The joining nodes must use the controller's credentials and networks.
func TestJoiningExamplesMatchController(t *testing.T) {
	ctl := loadExample(t, "controller.yaml")
	for _, name := range []string{"control-plane.yaml", "worker.yaml"} {
		cfg := loadExample(t, name)
		if cfg.Kubernetes.Credentials.Token != ctl.Kubernetes.Credentials.Token {
			t.Errorf("%s: token differs from the controller's", name)
		}
		if cfg.Kubernetes.Credentials.SecretsBundle != ctl.Kubernetes.Credentials.SecretsBundle {
			t.Errorf("%s: secretsBundle %q, controller %q", name, cfg.Kubernetes.Credentials.SecretsBundle, ctl.Kubernetes.Credentials.SecretsBundle)
		}
		if cfg.Kubernetes.ControlPlaneEndpoint != ctl.Kubernetes.ControlPlaneEndpoint || cfg.Kubernetes.PodSubnet != ctl.Kubernetes.PodSubnet {
			t.Errorf("%s: endpoint/podSubnet differ from the controller's", name)
		}
		for i, in := range cfg.Network.Interfaces {
			got, want := strings.Split(in.Addresses[0], "."), strings.Split(ctl.Network.Interfaces[i].Addresses[0], ".")
			if strings.Join(got[:3], ".") != strings.Join(want[:3], ".") {
				t.Errorf("%s: %s address %s is not in the controller's subnet", name, in.Name, in.Addresses[0])
			}
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if err == nil || !strings.Contains(err.Error(), "nope.yaml") {
		t.Fatalf("err = %v, want one naming the file", err)
	}
	if _, ok := err.(ErrorList); ok {
		t.Error("an I/O error must not be an ErrorList")
	}
}

// Netplan files and their native equivalents give the same model, both
// through ParseNetplan and as the network section of a machine config.
func TestNetplanMatchesNative(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "configs", "netplan", "*.native.yaml"))
	if err != nil || len(files) < 5 {
		t.Fatalf("want at least 5 netplan/native pairs, found %d (%v)", len(files), err)
	}
	for _, native := range files {
		np := strings.TrimSuffix(native, ".native.yaml") + ".yaml"
		t.Run(filepath.Base(np), func(t *testing.T) {
			want := parseNetworkSection(t, native)
			data, err := os.ReadFile(np)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseNetplan(np, data)
			if err != nil {
				t.Fatalf("ParseNetplan:\n%v", err)
			}
			// The native file went through Parse, which sets defaults.
			withDefaults := MachineConfig{Network: *got}
			withDefaults.SetDefaults()
			if diff := cmp.Diff(want, withDefaults.Network); diff != "" {
				t.Errorf("ParseNetplan differs from %s (-native +netplan):\n%s", native, diff)
			}
			// The same file as the network section of a machine config.
			section := string(data)
			if !strings.Contains(section, "\nnetwork:") {
				section = "network:\n" + indent(section)
			}
			cfg := parseWithHeader(t, np, section)
			if !reflect.DeepEqual(want, cfg.Network) {
				t.Errorf("network section from netplan differs from %s:\n%s", native, cmp.Diff(want, cfg.Network))
			}
		})
	}
}

func indent(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = "  " + l
		}
	}
	return strings.Join(lines, "\n") + "\n"
}

// testHeader makes a network section into a whole valid config; it has no
// advertiseAddress so the default (derived from the network) is used.
const testHeader = `apiVersion: kubeboot.dev/v1alpha1
kind: MachineConfig
role: init
hostname: node1.example.com
kubernetes:
  version: v1.37.2
  controlPlaneEndpoint: node1.example.com:6443
  podSubnet: 172.30.0.0/16
`

func parseWithHeader(t *testing.T, name, network string) *MachineConfig {
	t.Helper()
	cfg, err := Parse(name, []byte(testHeader+network))
	if err != nil {
		t.Fatalf("machine config with the network of %s:\n%v", name, err)
	}
	return cfg
}

func parseNetworkSection(t *testing.T, file string) Network {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return parseWithHeader(t, file, string(data)).Network
}

func TestHashStableAcrossFormatting(t *testing.T) {
	a := `apiVersion: kubeboot.dev/v1alpha1
kind: MachineConfig
role: init
hostname: n1.example.com
kubernetes:
  version: v1.37.2
  controlPlaneEndpoint: n1.example.com:6443
  nodeLabels: {a: "1", b: "2"}
network:
  interfaces:
    - {name: eth0, addresses: [10.1.0.5/24]}
`
	b := `# same settings, other order, layout and comments
network:
    interfaces:
    -   addresses:
        - 10.1.0.5/24
        name: eth0
kubernetes:
    nodeLabels:
        b: "2"
        a: "1"
    controlPlaneEndpoint: "n1.example.com:6443"
    version: v1.37.2
hostname: n1.example.com
role: init
kind: MachineConfig
apiVersion: kubeboot.dev/v1alpha1
`
	ca, err := Parse("a", []byte(a))
	if err != nil {
		t.Fatal(err)
	}
	cb, err := Parse("b", []byte(b))
	if err != nil {
		t.Fatal(err)
	}
	if ca.Hash() != cb.Hash() {
		t.Errorf("hash differs for the same settings: %s vs %s", ca.Hash(), cb.Hash())
	}
	if len(ca.Hash()) != 64 {
		t.Errorf("hash %q is not sha256 hex", ca.Hash())
	}
	cc, err := Parse("c", []byte(strings.Replace(a, "10.1.0.5/24", "10.1.0.6/24", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if cc.Hash() == ca.Hash() {
		t.Error("hash did not change when an address changed")
	}
	w := loadExample(t, "worker.yaml")
	h := w.Hash()
	w.Kubernetes.Credentials.Token = "kbex02.exampletoken0002"
	if w.Hash() == h {
		t.Error("hash did not change when the token changed")
	}
}
