package verify

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"

	"kubeboot.dev/kubeboot/bootstrapd/network"
	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/bootstrapd/state"
	"kubeboot.dev/kubeboot/internal/netnstest"
)

// applyNetwork runs the network stage for the config in the node's
// namespace, as the first boot does, with its state under root.
func applyNetwork(t *testing.T, ref *referenceNode, root string, o Options) {
	t.Helper()
	env := &stage.Env{Root: root, NetNS: ref.ns, Config: o.Config, Log: slog.New(slog.DiscardHandler),
		StateDir: state.Open(root).StageDir("network"), Data: &stage.RunData{}}
	if err := os.MkdirAll(env.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := network.New().Apply(context.Background(), env); err != nil {
		t.Fatal(err)
	}
}

// TestNetworkAsTheReference configures a namespace shaped like the seed's
// controller with the network stage and configs/controller.yaml, and
// checks that the links and addresses sections find what the reference's
// ip -d link, ip addr and ip route showed; then removes the default route
// and checks the failure names what was expected and what was found.
func TestNetworkAsTheReference(t *testing.T) {
	ref := newReferenceNode(t)
	res, _ := exampleConfig(t, "controller.yaml", nil)
	root := t.TempDir()
	o := Options{Root: root, NetNS: ref.ns, Config: res.Config, Source: res.Source}
	applyNetwork(t, ref, root, o)

	n := prepare(o)
	n.cri = &criFacts{} // a node with no pod yet: pod veths need the pod network's CNI, which no test here runs
	n.apiErr = errNoAPI
	ctx := context.Background()
	links, addrs := n.links(ctx), n.addresses(ctx)
	logReport(t, links, addrs)
	allHold(t, links)
	for _, c := range addrs.Checks {
		// The pod CIDR needs the API; it has its own test.
		if !c.OK && !strings.HasPrefix(c.Name, "pod CIDR") {
			t.Errorf("addresses: %s: expected %s, found %s", c.Name, c.Expected, c.Found)
		}
	}
	for _, want := range []string{
		"enp1s0 MAC address", "enp2s0 MAC address", "enp1s0 up", "enp2s0 up",
	} {
		checkNamed(t, links, want)
	}
	if c := checkNamed(t, links, "enp1s0 MAC address"); c.Found != mac1 {
		t.Errorf("enp1s0 MAC: found %q, want %s", c.Found, mac1)
	}
	for _, want := range []string{
		"address 172.16.0.11/24 on enp1s0",
		"address 10.0.0.11/24 on enp2s0",
		"route default via 172.16.0.254 dev enp1s0 proto static metric 100",
		"route 172.16.0.0/24 dev enp1s0 proto kernel scope link src 172.16.0.11 metric 100",
		"route 10.0.0.0/24 dev enp2s0 proto kernel scope link src 10.0.0.11 metric 101",
	} {
		if c := checkNamed(t, addrs, want); !c.OK {
			t.Errorf("%s: %+v", want, c)
		}
	}
	found := strings.Join(addrs.Found, "\n")
	for _, want := range []string{
		"route default via 172.16.0.254 dev enp1s0 proto static metric 100",
		"enp1s0  inet 172.16.0.11/24 scope global noprefixroute",
	} {
		if !strings.Contains(found, want) {
			t.Errorf("addresses found lacks %q:\n%s", want, found)
		}
	}
	if !strings.Contains(strings.Join(links.Found, "\n"), "enp1s0@if") {
		t.Errorf("links found:\n%s", strings.Join(links.Found, "\n"))
	}

	// The failing variant: the default route is gone.
	netnstest.Run(t, "ip", "-n", ref.name, "route", "del", "default")
	addrs = n.addresses(ctx)
	c := checkNamed(t, addrs, "route default via")
	if c.OK || c.Expected != "default via 172.16.0.254 dev enp1s0 proto static metric 100" || c.Found != "no route to default (0.0.0.0/0)" {
		t.Errorf("without the default route: %+v", c)
	}
	// And a default route of another metric is shown as found.
	netnstest.Run(t, "ip", "-n", ref.name, "route", "add", "default", "via", "172.16.0.254", "dev", "enp1s0", "metric", "5")
	c = checkNamed(t, n.addresses(ctx), "route default via")
	if c.OK || c.Found != "default via 172.16.0.254 dev enp1s0 proto boot metric 5" {
		t.Errorf("with another metric: %+v", c)
	}
	// A link that lost its carrier.
	netnstest.Run(t, "ip", "-n", ref.peer, "link", "set", "r2", "down")
	if c := checkNamed(t, n.links(ctx), "enp2s0 up"); c.OK || c.Found != "NO-CARRIER,BROADCAST,MULTICAST,UP" {
		t.Errorf("enp2s0 without carrier: %+v", c)
	}
}
