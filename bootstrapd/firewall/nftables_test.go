package firewall

import (
	"context"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"kubeboot.dev/kubeboot/internal/netnstest"

	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/machineconfig"
)

func apply(t *testing.T, env *stage.Env) []stage.Change {
	t.Helper()
	changes, err := New().Apply(context.Background(), env)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return changes
}

func plan(t *testing.T, env *stage.Env) []stage.Change {
	t.Helper()
	changes, err := New().Plan(context.Background(), env)
	if err != nil {
		t.Fatalf("Plan: %v", err)
	}
	return changes
}

func wantChanges(t *testing.T, what string, got []stage.Change, want ...string) {
	t.Helper()
	g := make([]string, len(got))
	for i, c := range got {
		g[i] = string(c)
	}
	if !slices.Equal(g, want) {
		t.Fatalf("%s:\n got %q\nwant %q", what, g, want)
	}
}

func TestNftablesControlPlane(t *testing.T) {
	l := newLab(t)
	hostBefore := nftJSON(t, "")
	// A table someone else owns (iptables-nft, kube-proxy) must survive.
	netnstest.Run(t, "ip", "netns", "exec", l.node, "nft", "add table ip kube-proxy; add chain ip kube-proxy input { type filter hook input priority -10; policy accept; }; add rule ip kube-proxy input tcp dport 9999 counter accept")
	foreign := netnstest.Run(t, "ip", "netns", "exec", l.node, "nft", "-j", "list", "table", "ip", "kube-proxy")

	for _, p := range []string{":6443", ":8081", ":22", ":10250"} {
		listenTCP(t, l.nodeNS, p)
	}
	listenTCP(t, l.clientNS, clientIP+":9000")

	cfg := controllerConfig(t)
	env := testEnv(t, l.nodeNS, cfg)

	// Before: nothing filters, the unlisted port answers.
	assertOpen(t, probeTCP(t, l.clientNS, "", nodeIP+":8081"), "8081 before apply")

	if open, err := portsVerified(env); err != nil || open {
		t.Errorf("ports verified before apply = %v, %v; want false", open, err)
	}
	planned := plan(t, env)
	changes := apply(t, env)
	wantChanges(t, "first apply", changes, []string{
		"nftables: create table inet kubeboot (input policy drop)",
		"nftables: trust pod network 172.17.0.0/16",
		"nftables: open 2379-2380/tcp", "nftables: open 6443/tcp",
		"nftables: open 10250/tcp", "nftables: open 10257/tcp", "nftables: open 10259/tcp",
		`nftables: add rule "established"`, `nftables: add rule "loopback"`,
		`nftables: add rule "icmpv6 neighbor discovery"`, `nftables: add rule "invalid"`,
		`nftables: add rule "icmp"`, `nftables: add rule "icmpv6"`, `nftables: add rule "ssh 22/tcp"`,
		`nftables: add rule "pod network from cni0 @pods4"`, `nftables: add rule "tcp ports"`,
	}...)
	if !slices.Equal(planned, changes) {
		t.Errorf("Plan said %q, Apply did %q", planned, changes)
	}

	assertOpen(t, probeTCP(t, l.clientNS, "", nodeIP+":6443"), "6443/tcp (kube-apiserver)")
	assertOpen(t, probeTCP(t, l.clientNS, "", nodeIP+":10250"), "10250/tcp (kubelet)")
	assertOpen(t, probeTCP(t, l.clientNS, "", nodeIP+":22"), "22/tcp (ssh)")
	assertOpen(t, probeTCP(t, l.clientNS, "", nodeIP2+":6443"), "6443/tcp over enp2s0 (no interface restriction)")
	assertDropped(t, probeTCP(t, l.clientNS, "", nodeIP+":8081"), "unlisted 8081/tcp")
	// A connection the node opens gets its replies (ct established).
	assertOpen(t, probeTCP(t, l.nodeNS, "", clientIP+":9000"), "node -> client:9000 replies")
	// Loopback is never filtered.
	assertOpen(t, probeTCP(t, l.nodeNS, "", "127.0.0.1:8081"), "loopback 8081")
	if _, err := exec.LookPath("busybox"); err == nil {
		if out, err := exec.Command("ip", "netns", "exec", l.client, "busybox", "ping", "-c", "1", "-W", "2", nodeIP).CombinedOutput(); err != nil {
			t.Errorf("ICMP echo to the node: %v\n%s", err, out)
		}
	} else {
		t.Log("busybox not installed: ICMP echo not probed")
	}

	if open, err := portsVerified(env); err != nil || !open {
		t.Errorf("ports verified after apply = %v, %v; want true", open, err)
	}

	// Idempotent: nothing to do, and the kernel ruleset is byte-identical.
	rulesetAfterFirst := nftJSON(t, l.node)
	wantChanges(t, "plan after apply", plan(t, env))
	wantChanges(t, "second apply", apply(t, env))
	if got := nftJSON(t, l.node); got != rulesetAfterFirst {
		t.Errorf("second apply changed the ruleset:\nbefore %s\nafter  %s", rulesetAfterFirst, got)
	}
	if !strings.Contains(rulesetAfterFirst, `"policy": "drop"`) || strings.Contains(rulesetAfterFirst, `"hook": "forward"`) {
		t.Errorf("want an input chain with policy drop and no forward chain:\n%s", rulesetAfterFirst)
	}

	// An extra port: exactly that port opens.
	cfg.Firewall.Ports = []string{"8081/tcp"}
	wantChanges(t, "plan with 8081/tcp", plan(t, env), "nftables: open 8081/tcp")
	wantChanges(t, "apply with 8081/tcp", apply(t, env), "nftables: open 8081/tcp")
	assertOpen(t, probeTCP(t, l.clientNS, "", nodeIP+":8081"), "8081/tcp after adding it")

	// Only the extras, SSH moved: the role's ports close, SSH's rule moves.
	f := false
	ssh := 2222
	cfg.Firewall.KubernetesPorts = &f
	cfg.Firewall.SSHPort = &ssh
	wantChanges(t, "apply without role ports", apply(t, env),
		"nftables: close 2379-2380/tcp", "nftables: close 6443/tcp",
		"nftables: close 10250/tcp", "nftables: close 10257/tcp", "nftables: close 10259/tcp",
		`nftables: add rule "ssh 2222/tcp"`, `nftables: remove rule "ssh 22/tcp"`)
	assertDropped(t, probeTCP(t, l.clientNS, "", nodeIP+":6443"), "6443/tcp after kubernetesPorts: false")
	assertDropped(t, probeTCP(t, l.clientNS, "", nodeIP+":22"), "22/tcp after sshPort: 2222")
	assertOpen(t, probeTCP(t, l.clientNS, "", nodeIP+":8081"), "8081/tcp still listed")

	if got := netnstest.Run(t, "ip", "netns", "exec", l.node, "nft", "-j", "list", "table", "ip", "kube-proxy"); got != foreign {
		t.Errorf("table ip kube-proxy was touched:\nbefore %s\nafter  %s", foreign, got)
	}
	if got := nftJSON(t, ""); got != hostBefore {
		t.Errorf("the host's own ruleset changed:\nbefore %s\nafter  %s", hostBefore, got)
	}
}

func TestNftablesWorker(t *testing.T) {
	l := newLab(t)
	listenTCP(t, l.nodeNS, ":30080")
	listenTCP(t, l.nodeNS, ":6443")
	listenUDP(t, l.nodeNS, ":30000")
	listenUDP(t, l.nodeNS, ":8081")
	cfg := loadConfig(t, "worker.yaml")
	if cfg.Role != machineconfig.RoleWorker {
		t.Fatalf("configs/worker.yaml has role %q", cfg.Role)
	}
	env := testEnv(t, l.nodeNS, cfg)
	changes := apply(t, env)
	for _, want := range []string{"nftables: open 30000-32767/tcp", "nftables: open 30000-32767/udp", "nftables: open 10256/tcp", "nftables: open 10250/tcp"} {
		if !slices.Contains(changes, stage.Change(want)) {
			t.Errorf("worker apply: missing %q in %q", want, changes)
		}
	}
	assertOpen(t, probeUDP(t, l.clientNS, nodeIP+":30000"), "30000/udp (NodePort)")
	assertOpen(t, probeTCP(t, l.clientNS, "", nodeIP+":30080"), "30080/tcp (NodePort)")
	assertDropped(t, probeUDP(t, l.clientNS, nodeIP+":8081"), "unlisted 8081/udp")
	assertDropped(t, probeTCP(t, l.clientNS, "", nodeIP+":6443"), "6443/tcp on a worker")
	wantChanges(t, "second apply", apply(t, env))
}

func TestNftablesRestrictions(t *testing.T) {
	l := newLab(t)
	listenTCP(t, l.nodeNS, ":6443")
	listenTCP(t, l.nodeNS, ":22")
	cfg := controllerConfig(t)
	cfg.Firewall.Interfaces = []string{"enp1s0"}
	cfg.Firewall.Sources = []string{clientIP + "/32", "fd00::/64"}
	env := testEnv(t, l.nodeNS, cfg)
	changes := apply(t, env)
	for _, want := range []string{
		"nftables: accept ports on interface enp1s0",
		"nftables: accept ports from 172.16.0.254/32", "nftables: accept ports from fd00::/64",
		`nftables: add rule "tcp ports on @ifaces from @src4"`, `nftables: add rule "tcp ports on @ifaces from @src6"`,
	} {
		if !slices.Contains(changes, stage.Change(want)) {
			t.Errorf("apply: missing %q in %q", want, changes)
		}
	}
	assertOpen(t, probeTCP(t, l.clientNS, clientIP, nodeIP+":6443"), "6443 from a listed source on enp1s0")
	assertDropped(t, probeTCP(t, l.clientNS, otherIP, nodeIP+":6443"), "6443 from "+otherIP+" (not in firewall.sources)")
	assertDropped(t, probeTCP(t, l.clientNS, clientIP2, nodeIP2+":6443"), "6443 over enp2s0 (not in firewall.interfaces)")
	assertOpen(t, probeTCP(t, l.clientNS, otherIP, nodeIP+":22"), "ssh is not restricted")
	wantChanges(t, "second apply", apply(t, env))

	cfg.Firewall.Sources = []string{clientIP + "/32", otherIP + "/32"}
	wantChanges(t, "plan with a second source", plan(t, env),
		"nftables: accept ports from 172.16.0.200/32", "nftables: stop accepting ports from fd00::/64",
		`nftables: remove rule "tcp ports on @ifaces from @src6"`)
	apply(t, env)
	assertOpen(t, probeTCP(t, l.clientNS, otherIP, nodeIP+":6443"), "6443 from "+otherIP+" once listed")
}

// Without an SSH key the node runs no sshd: no ssh rule, port 22 dropped.
func TestNftablesSSHOnlyWithKeys(t *testing.T) {
	l := newLab(t)
	listenTCP(t, l.nodeNS, ":22")
	cfg := controllerConfig(t)
	cfg.Users[0].SSHAuthorizedKeys = nil
	env := testEnv(t, l.nodeNS, cfg)
	apply(t, env)
	if rules := netnstest.Run(t, "ip", "netns", "exec", l.node, "nft", "list", "chain", "inet", "kubeboot", "input"); strings.Contains(rules, "ssh") {
		t.Errorf("an ssh rule without any SSH key:\n%s", rules)
	}
	assertDropped(t, probeTCP(t, l.clientNS, "", nodeIP+":22"), "22/tcp with no SSH key")
	cfg.Users[0].SSHAuthorizedKeys = []string{testKey}
	wantChanges(t, "apply with a key", apply(t, env), `nftables: add rule "ssh 22/tcp"`)
	assertOpen(t, probeTCP(t, l.clientNS, "", nodeIP+":22"), "22/tcp once admin has a key")
}

// A rule deleted by hand is noticed and put back, giving the same ruleset.
func TestNftablesRepairsTampering(t *testing.T) {
	l := newLab(t)
	env := testEnv(t, l.nodeNS, controllerConfig(t))
	apply(t, env)
	want := nftJSON(t, l.node)
	handle := ""
	for _, line := range strings.Split(netnstest.Run(t, "ip", "netns", "exec", l.node, "nft", "-a", "list", "chain", "inet", "kubeboot", "input"), "\n") {
		if strings.Contains(line, `comment "ssh 22/tcp"`) {
			handle = line[strings.LastIndex(line, " ")+1:]
		}
	}
	if handle == "" {
		t.Fatal("no ssh rule in chain inet kubeboot input")
	}
	netnstest.Run(t, "ip", "netns", "exec", l.node, "nft", "delete", "rule", "inet", "kubeboot", "input", "handle", handle)
	netnstest.Run(t, "ip", "netns", "exec", l.node, "nft", "add", "element", "inet", "kubeboot", "tcp_ports", "{ 8081 }")
	wantChanges(t, "plan after tampering", plan(t, env),
		"nftables: close 8081/tcp", `nftables: add rule "ssh 22/tcp"`)
	apply(t, env)
	if got := nftJSON(t, l.node); stripHandles(got) != stripHandles(want) {
		t.Errorf("after repair:\n got %s\nwant %s", got, want)
	}
}

// stripHandles drops what differs between two identical tables built at
// different times: rule handles and the table handle.
func stripHandles(s string) string {
	var b strings.Builder
	for _, f := range strings.Split(s, `"handle": `) {
		if b.Len() > 0 {
			if i := strings.IndexAny(f, ",}"); i >= 0 {
				f = f[i:]
			}
		}
		b.WriteString(f)
	}
	return b.String()
}

func BenchmarkApplyNoChange(b *testing.B) {
	l := newLab(b)
	env := testEnv(b, l.nodeNS, controllerConfig(b))
	st := New()
	if _, err := st.Apply(context.Background(), env); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		changes, err := st.Apply(context.Background(), env)
		if err != nil || len(changes) != 0 {
			b.Fatalf("Apply on an applied ruleset: %q, %v", changes, err)
		}
	}
}

// Backend none leaves the kernel alone, even on a node whose ports are shut.
func TestBackendNone(t *testing.T) {
	l := newLab(t)
	cfg := controllerConfig(t)
	cfg.Firewall.Backend = machineconfig.BackendNone
	env := testEnv(t, l.nodeNS, cfg)
	before := nftJSON(t, l.node)
	wantChanges(t, "plan", plan(t, env))
	wantChanges(t, "apply", apply(t, env))
	if got := nftJSON(t, l.node); got != before {
		t.Errorf("backend none changed the ruleset:\n%s", got)
	}
	if open, err := portsVerified(env); err != nil || open {
		t.Errorf("ports verified with backend none = %v, %v; want false (nothing verified)", open, err)
	}
}

// TestNftablesPodNetwork puts a pod behind the node's cni0 bridge and a
// "pod on another node" (172.17.1.2, routed host-gw style via the client)
// and checks what the pod network needs passes: the node's own pods reach
// any port of the node (also with ports restricted to enp1s0), through a
// Service DNAT too; pods reach the outside; a remote pod reaches the local
// one (forwarded: the table has no forward chain). A pod source arriving on
// enp1s0 gets only the listed ports. vxlan opens 8472/udp.
func TestNftablesPodNetwork(t *testing.T) {
	l := newLab(t)
	pod := addPodNetwork(t, l)
	listenTCP(t, l.nodeNS, ":6443")
	listenTCP(t, l.nodeNS, ":8081")
	listenTCP(t, pod, ":8080")
	listenTCP(t, l.clientNS, clientIP+":9000")
	cfg := controllerConfig(t)
	cfg.Firewall.Interfaces = []string{"enp1s0"}
	cfg.Kubernetes.PodSubnet = ""
	env := testEnv(t, l.nodeNS, cfg)
	apply(t, env)
	assertDropped(t, probeTCP(t, pod, "", nodeIP+":8081"), "pod -> node 8081 without the pod network trusted")

	cfg.Kubernetes.PodSubnet = "172.17.0.0/16"
	wantChanges(t, "trusting the pod network", apply(t, env),
		"nftables: trust pod network 172.17.0.0/16", `nftables: add rule "pod network from cni0 @pods4"`)
	assertOpen(t, probeTCP(t, pod, "", nodeIP+":8081"), "pod -> node 8081 (unlisted port)")
	assertOpen(t, probeTCP(t, pod, "", nodeIP+":6443"), "pod -> node 6443 (ports restricted to enp1s0)")
	assertOpen(t, probeTCP(t, pod, "", serviceIP+":443"), "pod -> kubernetes Service -> node 6443")
	assertOpen(t, probeTCP(t, pod, "", clientIP+":9000"), "pod -> outside")
	assertOpen(t, probeTCP(t, l.clientNS, remotePodIP, localPodIP+":8080"), "remote pod -> local pod (forwarded)")
	assertDropped(t, probeTCP(t, l.clientNS, remotePodIP, nodeIP+":8081"), "a pod source on enp1s0 -> unlisted 8081")
	assertOpen(t, probeTCP(t, l.clientNS, remotePodIP, nodeIP+":6443"), "a pod source on enp1s0 -> listed 6443")
	wantChanges(t, "second apply", apply(t, env))

	cfg.Kubernetes.PodNetwork.Backend = machineconfig.PodNetworkVXLAN
	wantChanges(t, "vxlan", apply(t, env), "nftables: open 8472/udp", `nftables: add rule "udp ports on @ifaces"`)
}
