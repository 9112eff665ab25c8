package firewall

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"kubeboot.dev/kubeboot/internal/netnstest"

	"github.com/vishvananda/netns"

	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/machineconfig"
)

// lab is a node network namespace wired to a client namespace over two
// veth pairs named like the reference machine's NICs:
//
//	node enp1s0 172.16.0.11/24  <->  client eth0 172.16.0.254/24 (+ .200)
//	node enp2s0 10.0.0.11/24    <->  client eth1 10.0.0.254/24
type lab struct {
	node, client     string // netns names
	nodeNS, clientNS netns.NsHandle
}

const (
	nodeIP      = "172.16.0.11"
	clientIP    = "172.16.0.254"
	otherIP     = "172.16.0.200" // a client address outside firewall.sources
	nodeIP2     = "10.0.0.11"
	clientIP2   = "10.0.0.254"
	probeTimout = 700 * time.Millisecond

	localPodIP  = "172.17.0.2" // behind the node's cni0 (172.17.0.1/24)
	remotePodIP = "172.17.1.2" // a pod of another node, on the client's eth0
	serviceIP   = "10.96.0.1"  // DNATed to nodeIP:6443, as kube-proxy does
)

func requireRoot(tb testing.TB, tools ...string) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root for network namespaces and nftables (CI runs as root)")
	}
	for _, tool := range append([]string{"ip", "nft"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			tb.Skipf("needs %s in PATH (scripts/setup-host.sh installs it)", tool)
		}
	}
}

func newLab(tb testing.TB) *lab {
	tb.Helper()
	requireRoot(tb)
	id := fmt.Sprintf("kbfw%d%d", os.Getpid()%100000, time.Now().UnixNano()%1000)
	l := &lab{node: id + "n", client: id + "c"}
	l.nodeNS = netnstest.New(tb, l.node)
	l.clientNS = netnstest.New(tb, l.client)
	netnstest.Run(tb, "ip", "link", "add", "enp1s0", "netns", l.node, "type", "veth", "peer", "name", "eth0", "netns", l.client)
	netnstest.Run(tb, "ip", "link", "add", "enp2s0", "netns", l.node, "type", "veth", "peer", "name", "eth1", "netns", l.client)
	for _, a := range [][]string{
		{l.node, "enp1s0", nodeIP + "/24"}, {l.node, "enp2s0", nodeIP2 + "/24"},
		{l.client, "eth0", clientIP + "/24"}, {l.client, "eth0", otherIP + "/24"}, {l.client, "eth1", clientIP2 + "/24"},
	} {
		netnstest.Run(tb, "ip", "-n", a[0], "addr", "add", a[2], "dev", a[1])
		netnstest.Run(tb, "ip", "-n", a[0], "link", "set", a[1], "up")
	}
	return l
}

// addPodNetwork gives the lab's node what flannel host-gw and kube-proxy
// would: a pod namespace (returned) on the bridge cni0, a route to another
// node's pod range (172.17.1.0/24 via the client, which holds that pod's
// address and routes the node's range back), forwarding on, and a DNAT of
// the kubernetes Service to the API server port.
func addPodNetwork(tb testing.TB, l *lab) netns.NsHandle {
	tb.Helper()
	name := l.node + "p"
	pod := netnstest.New(tb, name)
	for _, args := range [][]string{
		{"-n", l.node, "link", "add", PodBridge, "type", "bridge"},
		{"-n", l.node, "addr", "add", "172.17.0.1/24", "dev", PodBridge},
		{"-n", l.node, "link", "set", PodBridge, "up"},
		{"link", "add", "vethpod", "netns", l.node, "type", "veth", "peer", "name", "eth0", "netns", name},
		{"-n", l.node, "link", "set", "vethpod", "master", PodBridge, "up"},
		{"-n", name, "addr", "add", localPodIP + "/24", "dev", "eth0"},
		{"-n", name, "link", "set", "eth0", "up"},
		{"-n", name, "route", "add", "default", "via", "172.17.0.1"},
		{"-n", l.node, "route", "add", "172.17.1.0/24", "via", clientIP},
		{"-n", l.client, "addr", "add", remotePodIP + "/24", "dev", "eth0"},
		{"-n", l.client, "route", "add", "172.17.0.0/24", "via", nodeIP},
	} {
		netnstest.Run(tb, "ip", args...)
	}
	netnstest.Run(tb, "ip", "netns", "exec", l.node, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
	netnstest.Run(tb, "ip", "netns", "exec", l.node, "nft", "add table ip kubesim; add chain ip kubesim prerouting { type nat hook prerouting priority -100; }; add rule ip kubesim prerouting ip daddr "+serviceIP+" tcp dport 443 dnat to "+nodeIP+":6443")
	return pod
}

// inNS runs fn on a thread switched into ns. Sockets made in fn stay in ns
// after it returns.
func inNS(tb testing.TB, ns netns.NsHandle, fn func()) {
	tb.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		tb.Fatal(err)
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		tb.Fatal(err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			panic("cannot return to the original netns: " + err.Error())
		}
	}()
	fn()
}

// listenTCP serves an echo of "ok" on every connection to port in ns.
func listenTCP(tb testing.TB, ns netns.NsHandle, addr string) {
	tb.Helper()
	var ln net.Listener
	inNS(tb, ns, func() {
		var err error
		if ln, err = net.Listen("tcp", addr); err != nil {
			tb.Fatal(err)
		}
	})
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("ok"))
			c.Close()
		}
	}()
}

// listenUDP echoes every datagram back to its sender.
func listenUDP(tb testing.TB, ns netns.NsHandle, addr string) {
	tb.Helper()
	var pc net.PacketConn
	inNS(tb, ns, func() {
		var err error
		if pc, err = net.ListenPacket("udp", addr); err != nil {
			tb.Fatal(err)
		}
	})
	tb.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 64)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(buf[:n], from)
		}
	}()
}

// probeTCP connects from ns (optionally from a given source address) and
// reads the listener's "ok". It returns nil when the port let us in.
func probeTCP(tb testing.TB, ns netns.NsHandle, from, to string) error {
	tb.Helper()
	var conn net.Conn
	var err error
	inNS(tb, ns, func() {
		d := net.Dialer{Timeout: probeTimout}
		if from != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
		}
		conn, err = d.Dial("tcp", to)
	})
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(probeTimout))
	got, err := io.ReadAll(conn)
	if err != nil {
		return err
	}
	if string(got) != "ok" {
		return fmt.Errorf("read %q from %s, want ok", got, to)
	}
	return nil
}

// probeUDP sends a datagram from ns and waits for the echo.
func probeUDP(tb testing.TB, ns netns.NsHandle, to string) error {
	tb.Helper()
	var conn net.Conn
	var err error
	inNS(tb, ns, func() { conn, err = net.Dial("udp", to) })
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(probeTimout))
	if _, err := conn.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 8)
	n, err := conn.Read(buf)
	if err != nil {
		return err
	}
	if string(buf[:n]) != "ping" {
		return fmt.Errorf("echo %q from %s, want ping", buf[:n], to)
	}
	return nil
}

func assertOpen(tb testing.TB, err error, what string) {
	tb.Helper()
	if err != nil {
		tb.Errorf("%s: want accepted, got %v", what, err)
	}
}

// assertDropped wants a timeout: a dropped SYN or datagram gets no answer,
// unlike a closed port (refused) or a reject.
func assertDropped(tb testing.TB, err error, what string) {
	tb.Helper()
	var ne net.Error
	if err == nil {
		tb.Errorf("%s: want dropped, but it was accepted", what)
	} else if !errors.As(err, &ne) || !ne.Timeout() {
		tb.Errorf("%s: want dropped (timeout), got %v", what, err)
	}
}

// loadConfig loads one of the repository's example configs
// (configs/controller.yaml is the reference machine) with the nftables
// backend forced, so a host running firewalld does not divert the test.
func loadConfig(tb testing.TB, name string) *machineconfig.MachineConfig {
	tb.Helper()
	cfg, err := machineconfig.Load("../../configs/" + name)
	if err != nil {
		tb.Fatalf("load configs/%s: %v", name, err)
	}
	cfg.Firewall.Backend = machineconfig.BackendNftables
	return cfg
}

// testKey is a public key (its private half was thrown away): with it on
// a user, the node runs sshd and the firewall opens sshPort.
const testKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFPVFSJya7rtuih4ot6mTjQySoYVMpcttWd+3vxNZMel admin@laptop"

// controllerConfig is configs/controller.yaml with an SSH key for admin.
func controllerConfig(tb testing.TB) *machineconfig.MachineConfig {
	cfg := loadConfig(tb, "controller.yaml")
	cfg.Users[0].SSHAuthorizedKeys = []string{testKey}
	return cfg
}

func testEnv(tb testing.TB, ns netns.NsHandle, cfg *machineconfig.MachineConfig) *stage.Env {
	return &stage.Env{
		Root: tb.TempDir(), NetNS: ns, Config: cfg, Data: &stage.RunData{},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// portsVerified is what the kubeadm stage reads: whether the firewall
// stage's plan, being empty, vouched for the role's ports.
func portsVerified(env *stage.Env) (bool, error) {
	env.Data.Firewall = stage.FirewallResult{}
	changes, err := New().Plan(context.Background(), env)
	if err != nil {
		return false, err
	}
	fw := env.Data.Firewall
	if len(changes) > 0 && len(fw.Open) > 0 {
		return false, fmt.Errorf("plan has %d changes but published %v as open", len(changes), fw.Open)
	}
	return len(fw.Open) > 0, nil
}

// nftJSON is `nft -j list ruleset` in ns ("" for the test's own netns).
func nftJSON(tb testing.TB, ns string) string {
	tb.Helper()
	args := []string{"-j", "list", "ruleset"}
	if ns != "" {
		args = append([]string{"netns", "exec", ns, "nft"}, args...)
		return netnstest.Run(tb, "ip", args...)
	}
	return netnstest.Run(tb, "nft", args...)
}
