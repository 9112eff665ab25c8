package firewall

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"kubeboot.dev/kubeboot/machineconfig"
)

func TestPolicyOf(t *testing.T) {
	cfg := controllerConfig(t)
	cfg.Firewall.Ports = []string{"6443/tcp", "2381/tcp", "10251-10258/tcp", "53/udp"}
	cfg.Firewall.Sources = []string{"10.0.0.5", "172.16.0.99/24", "172.16.0.7", "fd00::/64"}
	p, err := policyOf(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, port := range p.ports {
		got = append(got, port.String())
	}
	// 2381 joins 2379-2380; 10250, 10251-10258 and 10259 become one range.
	want := []string{"2379-2381/tcp", "6443/tcp", "10250-10259/tcp", "53/udp"}
	if !slices.Equal(got, want) {
		t.Errorf("ports = %q, want %q", got, want)
	}
	if fmt.Sprint(p.ssh) != "[22/tcp]" {
		t.Errorf("ssh = %v, want the default [22/tcp] (admin has a key)", p.ssh)
	}
	cfg.Users[0].SSHAuthorizedKeys = nil
	if p, _ := policyOf(cfg); len(p.ssh) != 0 {
		t.Errorf("ssh = %v with no SSH key in the config, want closed", p.ssh)
	}
	cfg.Users[0].SSHAuthorizedKeys = []string{testKey}
	var srcs []string
	for _, s := range p.sources {
		srcs = append(srcs, s.String())
	}
	if want := []string{"10.0.0.5/32", "172.16.0.0/24", "fd00::/64"}; !slices.Equal(srcs, want) {
		t.Errorf("sources = %q, want %q", srcs, want)
	}

	off := false
	cfg.Firewall.KubernetesPorts = &off
	cfg.Firewall.Ports = nil
	if p, _ := policyOf(cfg); len(p.ports) != 0 {
		t.Errorf("kubernetesPorts: false still opens %v", p.ports)
	}

	for field, mutate := range map[string]func(*machineconfig.Firewall){
		"firewall.ports[1]":      func(f *machineconfig.Firewall) { f.Ports = []string{"1/tcp", "x/tcp"} },
		"firewall.sources[0]":    func(f *machineconfig.Firewall) { f.Sources = []string{"10.0.0.0/33"} },
		"firewall.interfaces[0]": func(f *machineconfig.Firewall) { f.Interfaces = []string{"a-name-longer-than-15"} },
		"firewall.sshPort":       func(f *machineconfig.Firewall) { n := 70000; f.SSHPort = &n },
	} {
		cfg := controllerConfig(t)
		mutate(&cfg.Firewall)
		if _, err := policyOf(cfg); err == nil || !strings.HasPrefix(err.Error(), field+":") {
			t.Errorf("want an error naming %s, got %v", field, err)
		}
	}
}

func TestRolePorts(t *testing.T) {
	str := func(ps []Port) string {
		var s []string
		for _, p := range ps {
			s = append(s, p.String())
		}
		return strings.Join(s, " ")
	}
	if got, want := str(RolePorts(machineconfig.RoleInit)), "6443/tcp 2379-2380/tcp 10250/tcp 10257/tcp 10259/tcp"; got != want {
		t.Errorf("init: %s, want %s", got, want)
	}
	if got := str(RolePorts(machineconfig.RoleControlPlane)); got != str(RolePorts(machineconfig.RoleInit)) {
		t.Errorf("control-plane differs from init: %s", got)
	}
	if got, want := str(RolePorts(machineconfig.RoleWorker)), "10250/tcp 10256/tcp 30000-32767/tcp 30000-32767/udp"; got != want {
		t.Errorf("worker: %s, want %s", got, want)
	}
	if got := str(PodNetworkPorts(machineconfig.PodNetworkHostGW)); got != "" {
		t.Errorf("host-gw needs no port, got %s", got)
	}
	if got := str(PodNetworkPorts(machineconfig.PodNetworkVXLAN)); got != "8472/udp" {
		t.Errorf("vxlan: %s, want 8472/udp", got)
	}
	cfg, err := machineconfig.Load("../../configs/worker.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Kubernetes.PodNetwork.Backend = machineconfig.PodNetworkVXLAN
	cfg.Kubernetes.PodSubnet = "172.17.0.0/16,fd00:17::/56"
	p, err := policyOf(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := str(p.ports), "10250/tcp 10256/tcp 30000-32767/tcp 8472/udp 30000-32767/udp"; got != want {
		t.Errorf("worker with vxlan: %s, want %s", got, want)
	}
	if fmt.Sprint(p.pods) != "[172.17.0.0/16 fd00:17::/56]" {
		t.Errorf("pods %v", p.pods)
	}
}

// The words the plan uses for what the kernel holds must match the words for
// what is wanted, or an applied table would never look applied.
func TestDescribeElementsRoundTrip(t *testing.T) {
	cfg := controllerConfig(t)
	cfg.Firewall.Ports = []string{"65535/tcp", "1/udp", "30000-32767/udp"}
	cfg.Firewall.Interfaces = []string{"enp2s0", "enp1s0"}
	cfg.Firewall.Sources = []string{"0.0.0.0/0", "::/1", "8000::/1", "2001:db8::/127"}
	p, err := policyOf(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range desiredRuleset(p, false).sets {
		// The kernel dumps interval sets in reverse; order must not matter.
		elems := slices.Clone(s.elems)
		slices.Reverse(elems)
		if got := describeElements(s.set, elems); !slices.Equal(got, s.items) {
			t.Errorf("set %s: described %q, want %q", s.set.Name, got, s.items)
		}
	}
}
