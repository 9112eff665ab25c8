package network

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"kubeboot.dev/kubeboot/machineconfig"
)

// referenceOptions are the DHCP options of the reference network.
var referenceOptions = []string{
	"dhcp-option=option:router,172.16.0.254",
	"dhcp-option=option:dns-server,172.16.0.254",
	"dhcp-option=option:domain-name,home.local",
}

// startDnsmasq runs a real DHCP server (Debian's dnsmasq, DNS off) on the
// router side of enp1s0, stopped at cleanup. options are dnsmasq.conf
// lines, read from a file: quoted values there may hold escapes (\n).
func startDnsmasq(t *testing.T, n *testNet, options ...string) string {
	t.Helper()
	bin, err := exec.LookPath("dnsmasq")
	if err != nil {
		t.Skip("needs dnsmasq as the DHCP server (scripts/setup-host.sh installs dnsmasq-base)")
	}
	dir := t.TempDir()
	leases := filepath.Join(dir, "leases")
	conf := filepath.Join(dir, "dnsmasq.conf")
	if err := os.WriteFile(conf, []byte(strings.Join(options, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	c := exec.Command("ip", "netns", "exec", n.router, bin,
		"--keep-in-foreground", "--conf-file="+conf, "--no-resolv", "--no-hosts", "--port=0",
		"--interface=r1", "--bind-interfaces", "--user=root", "--pid-file="+filepath.Join(dir, "pid"),
		"--dhcp-range=172.16.0.100,172.16.0.150,255.255.255.0,1h",
		"--dhcp-leasefile="+leases, "--log-dhcp", "--log-facility=-",
		"--no-ping") // no 3 s ICMP probe of the address before offering it
	c.Stdout, c.Stderr = &log, &log
	if err := c.Start(); err != nil {
		t.Fatalf("start dnsmasq: %v", err)
	}
	// Wait until it listens on the DHCP port, so the client's first
	// DISCOVER is not lost to a server still starting.
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, _ := exec.Command("ip", "netns", "exec", n.router, "ss", "-H", "-uln", "sport", "=", ":67").Output()
		if len(bytes.TrimSpace(out)) > 0 {
			break
		}
		if time.Now().After(deadline) {
			c.Process.Kill()
			c.Wait()
			t.Fatalf("dnsmasq does not listen on udp/67 after 5s:\n%s", log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Cleanup(func() {
		c.Process.Kill()
		c.Wait()
		if t.Failed() {
			t.Logf("dnsmasq log:\n%s", log.String())
		}
	})
	return leases
}

func TestDHCPv4(t *testing.T) {
	n := newTestNet(t, referenceLinks)
	leases := startDnsmasq(t, n, referenceOptions...)
	cfg := controllerNetwork(t)
	cfg.Interfaces[0].Addresses = nil
	cfg.Interfaces[0].Routes = nil
	cfg.Interfaces[0].DHCP4 = true
	cfg.Nameservers = machineconfig.Nameservers{}
	s := testStage()
	env := n.env(cfg)

	if p := plan(t, s, env); !slices.Contains(p, "enp1s0: request DHCPv4 lease") {
		t.Errorf("Plan %q lacks the lease request", p)
	}
	got := apply(t, s, env)
	re := regexp.MustCompile(`^enp1s0: DHCPv4 lease (172\.16\.0\.1[0-5][0-9])/24 from 172\.16\.0\.254 \(router 172\.16\.0\.254, dns 172\.16\.0\.254, renew after 30m0s\)$`)
	var ip string
	for _, c := range got {
		if m := re.FindStringSubmatch(c); m != nil {
			ip = m[1]
		}
	}
	if ip == "" {
		t.Fatalf("no lease change in %q", got)
	}
	wantRoutes := []string{
		"default via 172.16.0.254 dev enp1s0 proto dhcp metric 100",
		"10.0.0.0/24 dev enp2s0 proto kernel scope link src 10.0.0.11 metric 101",
		"172.16.0.0/24 dev enp1s0 proto kernel scope link src " + ip + " metric 100",
	}
	if routes := n.ipRoutes(t); !slices.Equal(routes, wantRoutes) {
		t.Errorf("ip route:\n got %q\nwant %q", routes, wantRoutes)
	}
	// The lease address carries the lease's lifetime, not "forever".
	for _, l := range n.ipJSON(t, "-4", "addr", "show", "dev", "enp1s0") {
		infos, _ := l["addr_info"].([]any)
		if len(infos) != 1 {
			t.Fatalf("enp1s0 addresses %v, want the lease's only", infos)
		}
		a := infos[0].(map[string]any)
		if a["local"] != ip || a["dynamic"] != true {
			t.Errorf("enp1s0 address %v, want %s dynamic", a, ip)
		}
		if vl, _ := a["valid_life_time"].(float64); vl <= 0 || vl > 3600 {
			t.Errorf("valid_life_time %v, want the 1h lease", a["valid_life_time"])
		}
	}
	resolv, _ := os.ReadFile(filepath.Join(n.root, "etc/resolv.conf"))
	if !strings.Contains(string(resolv), "nameserver 172.16.0.254\nsearch home.local\n") {
		t.Errorf("resolv.conf from the lease = %q", resolv)
	}
	if l, _ := os.ReadFile(leases); !strings.Contains(string(l), mac1) || !strings.Contains(string(l), ip) {
		t.Errorf("dnsmasq lease file %q lacks %s %s", l, mac1, ip)
	}
	// Before T1 the lease stands: nothing to do.
	if again := apply(t, s, env); len(again) != 0 {
		t.Errorf("re-Apply within the lease changed %q", again)
	}
	ping(t, n, "172.16.0.254")

	// Leaving DHCP for a static address drops the lease's address and route.
	static := controllerNetwork(t)
	static.Nameservers = machineconfig.Nameservers{}
	got = apply(t, s, n.env(static))
	want := []string{
		"enp1s0: add address 172.16.0.11/24",
		"enp1s0: replace route 172.16.0.0/24 proto kernel scope link src 172.16.0.11 metric 100 (was: 172.16.0.0/24 proto kernel scope link src " + ip + " metric 100 dev enp1s0)",
		"enp1s0: replace route default via 172.16.0.254 proto static metric 100 (was: default via 172.16.0.254 proto dhcp metric 100 dev enp1s0)",
		"enp1s0: remove address " + ip + "/24",
	}
	if !slices.Equal(got, want) {
		t.Errorf("switch to static:\n got %q\nwant %q", got, want)
	}
	if routes := n.ipRoutes(t); !slices.Equal(routes, controllerRoutes) {
		t.Errorf("ip route after switch to static:\n got %q\nwant %q", routes, controllerRoutes)
	}
}
