package network

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"kubeboot.dev/kubeboot/internal/netnstest"

	"github.com/vishvananda/netns"

	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/machineconfig"
)

// Reference fixture (the manual procedure's controller).
const (
	mac1 = "52:54:00:80:ad:b6"
	mac2 = "52:54:00:6a:9d:95"
)

var nsSeq atomic.Int64

func needRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root to create network namespaces (CI runs as root)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		tb.Skip("needs ip from iproute2 (scripts/setup-host.sh installs it)")
	}
}

// cmd runs a command and fails the test with its output on error.
// newNetNS creates a uniquely named network namespace, deleted at cleanup.
func newNetNS(tb testing.TB, role string) (string, netns.NsHandle) {
	tb.Helper()
	name := fmt.Sprintf("kbnet-%s-%d-%d", role, os.Getpid(), nsSeq.Add(1))
	return name, netnstest.New(tb, name)
}

// testNet is the reference machine's network: a node namespace with
// enp1s0/enp2s0 (veths with the reference MACs) and a router namespace
// holding their peers r1 (172.16.0.254/24) and r2 (10.0.0.254/24).
type testNet struct {
	node, router string
	nodeNS       netns.NsHandle
	root         string
}

// nodeLink names the node side of a veth pair, its MAC and the router side.
type nodeLink struct{ name, mac, peer, peerAddr string }

var referenceLinks = []nodeLink{
	{"enp1s0", mac1, "r1", "172.16.0.254/24"},
	{"enp2s0", mac2, "r2", "10.0.0.254/24"},
}

func newTestNet(tb testing.TB, links []nodeLink) *testNet {
	tb.Helper()
	needRoot(tb)
	n := &testNet{root: tb.TempDir()}
	n.node, n.nodeNS = newNetNS(tb, "node")
	n.router, _ = newNetNS(tb, "router")
	for _, l := range links {
		netnstest.Run(tb, "ip", "link", "add", "name", l.name, "address", l.mac, "netns", n.node,
			"type", "veth", "peer", "name", l.peer, "netns", n.router)
		if l.peerAddr != "" {
			netnstest.Run(tb, "ip", "-n", n.router, "addr", "add", l.peerAddr, "dev", l.peer)
		}
		netnstest.Run(tb, "ip", "-n", n.router, "link", "set", l.peer, "up")
	}
	return n
}

func (n *testNet) env(nw machineconfig.Network) *stage.Env {
	return &stage.Env{
		Root:     n.root,
		StateDir: filepath.Join(n.root, "state"),
		NetNS:    n.nodeNS,
		Config:   &machineconfig.MachineConfig{Hostname: "controller.home.local", Network: nw},
		Log:      slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
}

func testStage() *networkStage {
	s := New().(*networkStage)
	s.carrierTimeout = 3 * time.Second
	s.dhcpTimeout = 10 * time.Second
	return s
}

func apply(tb testing.TB, s *networkStage, env *stage.Env) []string {
	tb.Helper()
	ch, err := s.Apply(context.Background(), env)
	if err != nil {
		tb.Fatalf("Apply: %v", err)
	}
	return strs(ch)
}

func plan(tb testing.TB, s *networkStage, env *stage.Env) []string {
	tb.Helper()
	ch, err := s.Plan(context.Background(), env)
	if err != nil {
		tb.Fatalf("Plan: %v", err)
	}
	return strs(ch)
}

func strs(ch []stage.Change) []string {
	out := []string{}
	for _, c := range ch {
		out = append(out, string(c))
	}
	return out
}

// ipJSON runs `ip -j ARGS` in the node namespace and decodes it.
func (n *testNet) ipJSON(tb testing.TB, args ...string) []map[string]any {
	tb.Helper()
	out := netnstest.Run(tb, "ip", append([]string{"-n", n.node, "-j"}, args...)...)
	var v []map[string]any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		tb.Fatalf("ip -j %v: %v\n%s", args, err, out)
	}
	return v
}

// ipRoutes renders `ip -j route` of the node as `ip route` lines (sorted by
// the kernel), the form the reference procedure shows.
func (n *testNet) ipRoutes(tb testing.TB) []string {
	tb.Helper()
	var lines []string
	for _, r := range n.ipJSON(tb, "route", "show") {
		parts := []string{fmt.Sprint(r["dst"])}
		if gw, ok := r["gateway"]; ok {
			parts = append(parts, "via", fmt.Sprint(gw))
		}
		parts = append(parts, "dev", fmt.Sprint(r["dev"]))
		if p, ok := r["protocol"]; ok {
			parts = append(parts, "proto", fmt.Sprint(p))
		}
		if s, ok := r["scope"]; ok {
			parts = append(parts, "scope", fmt.Sprint(s))
		}
		if s, ok := r["prefsrc"]; ok {
			parts = append(parts, "src", fmt.Sprint(s))
		}
		if m, ok := r["metric"]; ok {
			parts = append(parts, "metric", fmt.Sprint(m))
		}
		lines = append(lines, strings.Join(parts, " "))
	}
	return lines
}

// ipAddrs lists "dev addr/len flags" for the node's global addresses.
func (n *testNet) ipAddrs(tb testing.TB) map[string][]string {
	tb.Helper()
	out := map[string][]string{}
	for _, l := range n.ipJSON(tb, "addr", "show") {
		name := fmt.Sprint(l["ifname"])
		infos, _ := l["addr_info"].([]any)
		for _, ai := range infos {
			a := ai.(map[string]any)
			if a["scope"] != "global" {
				continue
			}
			s := fmt.Sprintf("%v/%v", a["local"], a["prefixlen"])
			if a["noprefixroute"] == true {
				s += " noprefixroute"
			}
			out[name] = append(out[name], s)
		}
	}
	return out
}

func intp(i int) *int { return &i }
