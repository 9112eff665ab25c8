package network

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"kubeboot.dev/kubeboot/internal/netnstest"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/machineconfig"
)

// controllerNetwork is the network section of configs/controller.yaml,
// the reference controller's values, loaded and validated as bootstrapd
// would.
func controllerNetwork(t testing.TB) machineconfig.Network {
	t.Helper()
	cfg, err := machineconfig.Load("../../configs/controller.yaml")
	if err != nil {
		t.Fatalf("load configs/controller.yaml: %v", err)
	}
	return cfg.Network
}

var controllerRoutes = []string{
	"default via 172.16.0.254 dev enp1s0 proto static metric 100",
	"10.0.0.0/24 dev enp2s0 proto kernel scope link src 10.0.0.11 metric 101",
	"172.16.0.0/24 dev enp1s0 proto kernel scope link src 172.16.0.11 metric 100",
}

func TestApplyControllerAndReapply(t *testing.T) {
	n := newTestNet(t, referenceLinks)
	env := n.env(controllerNetwork(t))
	s := testStage()

	got := apply(t, s, env)
	want := []string{
		"enp1s0: set up",
		"enp2s0: set up",
		"enp1s0: add address 172.16.0.11/24",
		"enp2s0: add address 10.0.0.11/24",
		"enp1s0: add route 172.16.0.0/24 proto kernel scope link src 172.16.0.11 metric 100",
		"enp1s0: add route default via 172.16.0.254 proto static metric 100",
		"enp2s0: add route 10.0.0.0/24 proto kernel scope link src 10.0.0.11 metric 101",
		// The config names no nameservers and no link uses DHCP: the defaults.
		"write /etc/resolv.conf (nameserver 1.1.1.1 8.8.8.8; search none)",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("first Apply changes:\n got %q\nwant %q", got, want)
	}

	// What the kernel holds, through ip -j ...
	if routes := n.ipRoutes(t); !slices.Equal(routes, controllerRoutes) {
		t.Errorf("ip route:\n got %q\nwant %q", routes, controllerRoutes)
	}
	addrs := n.ipAddrs(t)
	if !slices.Equal(addrs["enp1s0"], []string{"172.16.0.11/24 noprefixroute"}) || !slices.Equal(addrs["enp2s0"], []string{"10.0.0.11/24 noprefixroute"}) {
		t.Errorf("ip addr: got %v", addrs)
	}
	// ... and through netlink.
	h, err := netlink.NewHandleAt(n.nodeNS)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for name, cidr := range map[string]string{"enp1s0": "172.16.0.11/24", "enp2s0": "10.0.0.11/24"} {
		l, err := h.LinkByName(name)
		if err != nil {
			t.Fatalf("link %s: %v", name, err)
		}
		if l.Attrs().Flags&net.FlagUp == 0 || !hasCarrier(l) {
			t.Errorf("%s not up with carrier: %v", name, l.Attrs().Flags)
		}
		as, err := h.AddrList(l, netlink.FAMILY_V4)
		if err != nil || len(as) != 1 || as[0].IPNet.String() != cidr || as[0].Flags&unix.IFA_F_NOPREFIXROUTE == 0 {
			t.Errorf("%s netlink addresses %v (err %v), want only %s noprefixroute", name, as, err, cidr)
		}
	}
	l1, _ := h.LinkByName("enp1s0")
	rs, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: nil, LinkIndex: l1.Attrs().Index}, netlink.RT_FILTER_OIF)
	if err != nil {
		t.Fatal(err)
	}
	var def *netlink.Route
	for i := range rs {
		if ones, _ := maskOf(rs[i].Dst); ones == 0 {
			def = &rs[i]
		}
	}
	if def == nil || !def.Gw.Equal(net.ParseIP("172.16.0.254")) || def.Priority != 100 || def.Protocol != unix.RTPROT_STATIC {
		t.Errorf("netlink default route on enp1s0 = %+v, want via 172.16.0.254 metric 100 proto static", def)
	}
	if b, err := os.ReadFile(filepath.Join(n.root, "etc/resolv.conf")); err != nil || !strings.Contains(string(b), "\nnameserver 1.1.1.1\nnameserver 8.8.8.8\n") {
		t.Errorf("resolv.conf with the default nameservers: %q, %v", b, err)
	}

	// Idempotence: nothing changes, in the stage's words and in the kernel's.
	beforeR, beforeA := netnstest.Run(t, "ip", "-n", n.node, "-j", "route", "show"), netnstest.Run(t, "ip", "-n", n.node, "-j", "addr", "show")
	if again := apply(t, s, env); len(again) != 0 {
		t.Errorf("second Apply changed %q, want nothing", again)
	}
	if p := plan(t, s, env); len(p) != 0 {
		t.Errorf("Plan after Apply = %q, want nothing", p)
	}
	afterR, afterA := netnstest.Run(t, "ip", "-n", n.node, "-j", "route", "show"), netnstest.Run(t, "ip", "-n", n.node, "-j", "addr", "show")
	if beforeR != afterR {
		t.Errorf("ip -j route changed on re-apply:\n%s\n%s", beforeR, afterR)
	}
	if beforeA != afterA {
		t.Errorf("ip -j addr changed on re-apply:\n%s\n%s", beforeA, afterA)
	}

	// The node reaches the router through the configured addresses.
	ping(t, n, "172.16.0.254")
	ping(t, n, "10.0.0.254")
}

func maskOf(n *net.IPNet) (int, int) {
	if n == nil {
		return 0, 32
	}
	return n.Mask.Size()
}

func ping(t *testing.T, n *testNet, ip string) {
	t.Helper()
	if _, err := exec.LookPath("busybox"); err != nil {
		t.Skip("needs busybox for ping (scripts/setup-host.sh installs busybox-static)")
	}
	out, err := exec.Command("ip", "netns", "exec", n.node, "busybox", "ping", "-c", "1", "-W", "3", ip).CombinedOutput()
	if err != nil {
		t.Errorf("ping %s from the node namespace: %v\n%s", ip, err, out)
	}
}

func TestResolvConf(t *testing.T) {
	n := newTestNet(t, referenceLinks)
	cfg := controllerNetwork(t)
	cfg.Nameservers = machineconfig.Nameservers{Addresses: []string{"172.16.0.254", "10.0.0.254"}, Search: []string{"home.local"}}
	s := testStage()
	got := apply(t, s, n.env(cfg))
	if !slices.Contains(got, "write /etc/resolv.conf (nameserver 172.16.0.254 10.0.0.254; search home.local)") {
		t.Fatalf("changes %q lack the resolv.conf write", got)
	}
	path := filepath.Join(n.root, "etc/resolv.conf")
	b, err := os.ReadFile(path)
	if err != nil || !strings.HasSuffix(string(b), "nameserver 172.16.0.254\nnameserver 10.0.0.254\nsearch home.local\n") {
		t.Fatalf("resolv.conf = %q (%v)", b, err)
	}
	before, _ := os.Stat(path)
	if again := apply(t, s, n.env(cfg)); len(again) != 0 {
		t.Errorf("re-Apply changed %q", again)
	}
	if after, _ := os.Stat(path); !os.SameFile(before, after) {
		t.Error("resolv.conf was rewritten although its content was right")
	}
	cfg.Nameservers.Addresses = []string{"10.0.0.254"}
	if got := apply(t, s, n.env(cfg)); !slices.Equal(got, []string{"write /etc/resolv.conf (nameserver 10.0.0.254; search home.local)"}) {
		t.Errorf("changed nameservers: %q", got)
	}
	if after, _ := os.Stat(path); os.SameFile(before, after) {
		t.Error("resolv.conf was edited in place, not replaced by rename")
	}
	if leftovers, _ := filepath.Glob(filepath.Join(n.root, "etc/.resolv.conf.*")); len(leftovers) > 0 {
		t.Errorf("temp files left: %v", leftovers)
	}
}

func TestPlanMatchesApplyAndChangesNothing(t *testing.T) {
	n := newTestNet(t, referenceLinks)
	env := n.env(controllerNetwork(t))
	s := testStage()
	beforeR, beforeA := netnstest.Run(t, "ip", "-n", n.node, "-j", "route", "show"), netnstest.Run(t, "ip", "-n", n.node, "-j", "link", "show")
	p := plan(t, s, env)
	if afterR, afterA := netnstest.Run(t, "ip", "-n", n.node, "-j", "route", "show"), netnstest.Run(t, "ip", "-n", n.node, "-j", "link", "show"); beforeR != afterR || beforeA != afterA {
		t.Fatalf("Plan changed the kernel:\n%s\n%s\n%s\n%s", beforeR, afterR, beforeA, afterA)
	}
	if _, err := os.Stat(filepath.Join(n.root, "etc/resolv.conf")); err == nil {
		t.Fatal("Plan wrote resolv.conf")
	}
	if _, err := os.Stat(statePath(env)); err == nil {
		t.Fatal("Plan wrote the state file")
	}
	if a := apply(t, s, env); !slices.Equal(p, a) {
		t.Errorf("Plan and Apply differ:\nplan  %q\napply %q", p, a)
	}
}

func TestChangedConfigDiff(t *testing.T) {
	n := newTestNet(t, referenceLinks)
	s := testStage()
	apply(t, s, n.env(controllerNetwork(t)))

	changed := controllerNetwork(t)
	changed.Interfaces[0].Addresses = []string{"172.16.0.11/24", "172.16.0.12/24"} // new address
	changed.Interfaces[1].Addresses = []string{"10.0.0.12/24"}                     // 10.0.0.11 removed
	changed.Interfaces[1].RouteMetric = intp(102)                                  // metric changed
	env := n.env(changed)
	want := []string{
		"enp1s0: add address 172.16.0.12/24",
		"enp2s0: add address 10.0.0.12/24",
		"enp2s0: add route 10.0.0.0/24 proto kernel scope link src 10.0.0.12 metric 102",
		"enp2s0: remove route 10.0.0.0/24 proto kernel scope link src 10.0.0.11 metric 101",
		"enp2s0: remove address 10.0.0.11/24",
	}
	if p := plan(t, s, env); !slices.Equal(p, want) {
		t.Errorf("Plan of the changed config:\n got %q\nwant %q", p, want)
	}
	if got := apply(t, s, env); !slices.Equal(got, want) {
		t.Fatalf("Apply of the changed config:\n got %q\nwant %q", got, want)
	}
	wantRoutes := []string{
		"default via 172.16.0.254 dev enp1s0 proto static metric 100",
		"10.0.0.0/24 dev enp2s0 proto kernel scope link src 10.0.0.12 metric 102",
		"172.16.0.0/24 dev enp1s0 proto kernel scope link src 172.16.0.11 metric 100",
	}
	if routes := n.ipRoutes(t); !slices.Equal(routes, wantRoutes) {
		t.Errorf("ip route:\n got %q\nwant %q", routes, wantRoutes)
	}
	addrs := n.ipAddrs(t)
	if !slices.Equal(addrs["enp1s0"], []string{"172.16.0.11/24 noprefixroute", "172.16.0.12/24 noprefixroute"}) ||
		!slices.Equal(addrs["enp2s0"], []string{"10.0.0.12/24 noprefixroute"}) {
		t.Errorf("ip addr: got %v", addrs)
	}
	if again := apply(t, s, env); len(again) != 0 {
		t.Errorf("re-Apply changed %q", again)
	}
	ping(t, n, "10.0.0.254")
}

func TestRemovesOnlyOwnedRoutesAndKeepsLinkLocal(t *testing.T) {
	n := newTestNet(t, referenceLinks)
	s := testStage()
	withExtra := controllerNetwork(t)
	withExtra.Interfaces[1].Routes = []machineconfig.Route{{To: "192.168.50.0/24", Via: "10.0.0.254"}}
	got := apply(t, s, n.env(withExtra))
	if !slices.Contains(got, "enp2s0: add route 192.168.50.0/24 via 10.0.0.254 proto static metric 101") {
		t.Fatalf("route without metric should take the link's routeMetric 101: %q", got)
	}
	// Someone else's route on a managed link, and an address nobody configured.
	netnstest.Run(t, "ip", "-n", n.node, "route", "add", "192.168.60.0/24", "via", "10.0.0.254", "dev", "enp2s0", "proto", "static", "metric", "101")
	netnstest.Run(t, "ip", "-n", n.node, "addr", "add", "10.0.0.99/24", "dev", "enp2s0", "noprefixroute")

	got = apply(t, s, n.env(controllerNetwork(t)))
	want := []string{
		"enp2s0: remove route 192.168.50.0/24 via 10.0.0.254 proto static metric 101",
		"enp2s0: remove address 10.0.0.99/24",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("changes:\n got %q\nwant %q", got, want)
	}
	routes := n.ipRoutes(t)
	if !slices.Contains(routes, "192.168.60.0/24 via 10.0.0.254 dev enp2s0 proto static metric 101") {
		t.Errorf("a route bootstrapd did not add was removed: %q", routes)
	}
	// IPv6 link-local addresses the kernel gave the veths stay.
	for _, l := range n.ipJSON(t, "-6", "addr", "show", "dev", "enp1s0") {
		infos, _ := l["addr_info"].([]any)
		if len(infos) == 0 {
			t.Errorf("enp1s0 lost its IPv6 link-local address")
		}
	}
}

func TestRenameByMAC(t *testing.T) {
	n := newTestNet(t, []nodeLink{{"eth7", mac1, "r1", "172.16.0.254/24"}, {"enp2s0", mac2, "r2", "10.0.0.254/24"}})
	netnstest.Run(t, "ip", "-n", n.node, "link", "set", "eth7", "up") // renaming needs it down: the stage must handle that
	env := n.env(controllerNetwork(t))
	s := testStage()
	got := apply(t, s, env)
	if got[0] != "enp1s0: rename from eth7 (matched (macAddress 52:54:00:80:ad:b6))" {
		t.Errorf("first change %q, want the rename", got[0])
	}
	if slices.Contains(got, "enp1s0: set up") {
		t.Errorf("a link that was up before the rename must not count as raised: %q", got)
	}
	links := n.ipJSON(t, "link", "show")
	var names []string
	for _, l := range links {
		names = append(names, l["ifname"].(string))
		if l["ifname"] == "enp1s0" && l["address"] != mac1 {
			t.Errorf("enp1s0 has MAC %v, want %s", l["address"], mac1)
		}
	}
	if !slices.Contains(names, "enp1s0") || slices.Contains(names, "eth7") {
		t.Errorf("links after rename: %v", names)
	}
	if routes := n.ipRoutes(t); !slices.Equal(routes, controllerRoutes) {
		t.Errorf("ip route:\n got %q\nwant %q", routes, controllerRoutes)
	}
	if again := apply(t, s, env); len(again) != 0 {
		t.Errorf("re-Apply after rename changed %q", again)
	}
	ping(t, n, "172.16.0.254")
}

func TestMTU(t *testing.T) {
	n := newTestNet(t, referenceLinks)
	cfg := controllerNetwork(t)
	cfg.Interfaces[0].MTU = 9000
	s := testStage()
	env := n.env(cfg)
	got := apply(t, s, env)
	if !slices.Contains(got, "enp1s0: set mtu 9000 (was 1500)") {
		t.Errorf("changes %q lack the MTU change", got)
	}
	for _, l := range n.ipJSON(t, "link", "show", "dev", "enp1s0") {
		if l["mtu"] != float64(9000) {
			t.Errorf("enp1s0 mtu %v, want 9000", l["mtu"])
		}
	}
	if again := apply(t, s, env); len(again) != 0 {
		t.Errorf("re-Apply changed %q", again)
	}
}

func TestCarrierWait(t *testing.T) {
	n := newTestNet(t, referenceLinks)
	netnstest.Run(t, "ip", "-n", n.router, "link", "set", "r1", "down") // enp1s0 gets no carrier
	s := testStage()
	s.carrierTimeout = 500 * time.Millisecond
	_, err := s.Apply(context.Background(), n.env(controllerNetwork(t)))
	if err == nil || !stage.IsTemporary(err) || !strings.Contains(err.Error(), "enp1s0") || strings.Contains(err.Error(), "enp2s0") {
		t.Fatalf("Apply with enp1s0 down at the far end: err %v (temporary %v), want a Temporary error naming only enp1s0", err, stage.IsTemporary(err))
	}

	optional := controllerNetwork(t)
	optional.Interfaces[0].Optional = true
	if _, err := s.Apply(context.Background(), n.env(optional)); err != nil {
		t.Fatalf("Apply with optional enp1s0 without carrier: %v", err)
	}
	if a := n.ipAddrs(t); !slices.Equal(a["enp1s0"], []string{"172.16.0.11/24 noprefixroute"}) {
		t.Errorf("optional link still gets its addresses: %v", a)
	}
}

func TestMissingLink(t *testing.T) {
	n := newTestNet(t, referenceLinks[1:]) // no enp1s0
	_, err := testStage().Apply(context.Background(), n.env(controllerNetwork(t)))
	if err == nil || !stage.IsTemporary(err) || !strings.Contains(err.Error(), "network.interfaces[0]") || !strings.Contains(err.Error(), mac1) {
		t.Fatalf("err %v, want a Temporary error naming network.interfaces[0] and the MAC", err)
	}
	optional := controllerNetwork(t)
	optional.Interfaces[0].Optional = true
	if _, err := testStage().Apply(context.Background(), n.env(optional)); err != nil {
		t.Fatalf("absent optional link: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	cfg := controllerNetwork(t)
	cfg.Interfaces[1].DHCP6 = true
	cfg.Interfaces[0].Addresses = []string{"172.16.0.11"}
	cfg.Interfaces[0].Routes = []machineconfig.Route{{To: "default"}}
	_, err := specs(&cfg)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		"network.interfaces[1].dhcp6: DHCPv6 is not supported yet",
		`network.interfaces[0].addresses[0]: "172.16.0.11" is not an address in CIDR form`,
		`network.interfaces[0].routes[0]: to "default" needs via`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestRetryDump(t *testing.T) {
	calls := 0
	v, err := retryDump(func() (int, error) {
		calls++
		if calls < 3 {
			return 0, netlink.ErrDumpInterrupted
		}
		return 7, nil
	})
	if v != 7 || err != nil || calls != 3 {
		t.Errorf("retryDump = %d, %v after %d calls", v, err, calls)
	}
	_, err = retryDump(func() (int, error) { return 0, netlink.ErrDumpInterrupted })
	if !errors.Is(err, netlink.ErrDumpInterrupted) {
		t.Errorf("endless interruption: %v", err)
	}
}

// VLANs and bonds need the 8021q and bonding modules; this machine's kernel
// has neither, so the test skips when creating them is "not supported".
// The same test runs in the QEMU node image, whose kernel has both.
func TestVLANAndBond(t *testing.T) {
	n := newTestNet(t, append(referenceLinks, nodeLink{"enp3s0", "52:54:00:12:34:56", "r3", ""}))
	cfg := machineconfig.Network{
		Interfaces: []machineconfig.Interface{
			{Name: "enp2s0", Match: &machineconfig.Match{MACAddress: mac2}},
			{Name: "enp3s0"},
			{Name: "enp1s0", Match: &machineconfig.Match{MACAddress: mac1}, IPConfig: machineconfig.IPConfig{Addresses: []string{"172.16.0.11/24"}}},
		},
		Bonds: []machineconfig.Bond{{Name: "bond0", Interfaces: []string{"enp2s0", "enp3s0"},
			Parameters: machineconfig.BondParameters{Mode: "active-backup", MIIMonitorInterval: 100, Primary: "enp2s0"},
			IPConfig:   machineconfig.IPConfig{Addresses: []string{"10.0.0.11/24"}, RouteMetric: intp(101)}}},
		VLANs: []machineconfig.VLAN{{Name: "enp1s0.10", ID: 10, Link: "enp1s0",
			IPConfig: machineconfig.IPConfig{Addresses: []string{"192.168.10.11/24"}, Optional: true}}},
	}
	s := testStage()
	env := n.env(cfg)
	_, err := s.Apply(context.Background(), env)
	if errors.Is(err, unix.EOPNOTSUPP) {
		t.Skipf("kernel without bonding/8021q support (%v); this test runs in the QEMU node image", err)
	}
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	h, _ := netlink.NewHandleAt(n.nodeNS)
	defer h.Close()
	b, err := h.LinkByName("bond0")
	if err != nil {
		t.Fatal(err)
	}
	bond := b.(*netlink.Bond)
	if bond.Mode != netlink.BOND_MODE_ACTIVE_BACKUP || bond.Miimon != 100 {
		t.Errorf("bond0 mode %s miimon %d", bond.Mode, bond.Miimon)
	}
	for _, m := range []string{"enp2s0", "enp3s0"} {
		l, _ := h.LinkByName(m)
		if l.Attrs().MasterIndex != b.Attrs().Index {
			t.Errorf("%s not enslaved to bond0", m)
		}
	}
	v, err := h.LinkByName("enp1s0.10")
	if err != nil || v.(*netlink.Vlan).VlanId != 10 {
		t.Errorf("vlan enp1s0.10: %v %v", v, err)
	}
	if again := apply(t, s, env); len(again) != 0 {
		t.Errorf("re-Apply changed %q", again)
	}
}
