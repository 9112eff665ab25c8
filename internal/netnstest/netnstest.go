// Package netnstest gives tests the real kernel's network namespaces: named
// ones, made with iproute2 (so `ip -n NAME` and `ip netns exec` work on
// them), with lo up, and deleted when the test ends, also on failure.
package netnstest

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
)

// Run runs a command and fails the test with its output if it fails.
func Run(tb testing.TB, name string, args ...string) string {
	tb.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// New creates the namespace name (callers make it unique) and returns a
// handle to it; both are gone after the test.
func New(tb testing.TB, name string) netns.NsHandle {
	tb.Helper()
	Run(tb, "ip", "netns", "add", name)
	tb.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			tb.Errorf("delete netns %s: %v %s", name, err, out)
		}
	})
	h, err := netns.GetFromName(name)
	if err != nil {
		tb.Fatalf("open netns %s: %v", name, err)
	}
	tb.Cleanup(func() { h.Close() })
	Run(tb, "ip", "-n", name, "link", "set", "lo", "up")
	return h
}

// Veth links the namespaces a and b with a veth pair whose ends are both
// called name, gives them addrA and addrB (CIDR) and sets them up.
func Veth(tb testing.TB, a, b, name, addrA, addrB string) {
	tb.Helper()
	Run(tb, "ip", "link", "add", name, "netns", a, "type", "veth", "peer", "name", name, "netns", b)
	for _, end := range [][2]string{{a, addrA}, {b, addrB}} {
		Run(tb, "ip", "-n", end[0], "addr", "add", end[1], "dev", name)
		Run(tb, "ip", "-n", end[0], "link", "set", name, "up")
	}
}
