package firewall

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/internal/nspawntest"
	"kubeboot.dev/kubeboot/machineconfig"
)

// The firewalld test runs this very test binary inside a booted Debian
// container, where it talks to the container's system bus. innerEnv carries
// the request; TestMain answers it instead of running tests.
const innerEnv = "KUBEBOOT_FIREWALL_INNER"

type innerRequest struct {
	Op     string // plan, apply or ports-open
	Config *machineconfig.MachineConfig
}

type innerResult struct {
	Changes   []stage.Change
	PortsOpen bool
	Error     string
}

func TestMain(m *testing.M) {
	if req := os.Getenv(innerEnv); req != "" {
		os.Exit(runInner(req))
	}
	os.Exit(m.Run())
}

func runInner(raw string) int {
	var req innerRequest
	if err := json.Unmarshal([]byte(raw), &req); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	env := &stage.Env{Root: "/", NetNS: netns.None(), Config: req.Config, Data: &stage.RunData{},
		Log: slog.New(slog.NewTextHandler(os.Stderr, nil))}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var res innerResult
	var err error
	switch req.Op {
	case "plan":
		res.Changes, err = New().Plan(ctx, env)
	case "apply":
		res.Changes, err = New().Apply(ctx, env)
	case "ports-open":
		res.PortsOpen, err = portsVerified(env)
	default:
		err = fmt.Errorf("unknown op %q", req.Op)
	}
	if err != nil {
		res.Error = err.Error()
	}
	_ = json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

// The Debian rootfs the container boots (nspawntest.Rootfs caches it).
var (
	rootfsSuite    = "trixie"
	rootfsPackages = []string{"systemd", "systemd-sysv", "dbus", "firewalld", "nftables", "iproute2"}
)

// container is a booted Debian with firewalld, in the lab's node
// namespace, with this test binary at nspawntest.BindDir/firewall.test.
type container struct{ *nspawntest.Container }

// bootFirewalld boots the container in the lab's node namespace and waits
// for firewalld.
func bootFirewalld(t *testing.T, l *lab) *container {
	t.Helper()
	rootfs := nspawntest.Rootfs(t, rootfsSuite, rootfsPackages)
	bind := t.TempDir()
	nspawntest.CopySelf(t, bind, "firewall.test")
	c := &container{nspawntest.Boot(t, rootfs, l.node, bind)}
	c.waitFirewalld(t)
	return c
}

// stage runs the firewall stage inside the container and fails the test
// on an error.
func (c *container) stage(t *testing.T, op string, cfg *machineconfig.MachineConfig) innerResult {
	t.Helper()
	res := c.stageResult(t, op, cfg)
	if res.Error != "" {
		t.Fatalf("%s in the container: %s", op, res.Error)
	}
	return res
}

func (c *container) stageResult(t *testing.T, op string, cfg *machineconfig.MachineConfig) innerResult {
	t.Helper()
	req, err := json.Marshal(innerRequest{Op: op, Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.Exec(t, []string{innerEnv + "=" + string(req)}, nspawntest.BindDir+"/firewall.test")
	if err != nil {
		t.Fatal(err)
	}
	var res innerResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%s: reading %q: %v", op, out, err)
	}
	return res
}

func (c *container) waitFirewalld(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		out, _ := c.Exec(t, nil, "firewall-cmd", "--state")
		if strings.TrimSpace(out) == "running" {
			return
		}
		if time.Now().After(deadline) {
			status, _ := c.Exec(t, nil, "systemctl", "status", "--no-pager", "firewalld", "dbus")
			t.Fatalf("firewalld not running after 90s:\n%s", status)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func portList(s string) []string {
	f := strings.Fields(s)
	slices.Sort(f)
	return f
}

// TestFirewalldNspawn runs the stage against a real firewalld: Debian
// trixie booted with systemd-nspawn in a network namespace holding enp1s0,
// probed from a client namespace over the veth.
func TestFirewalldNspawn(t *testing.T) {
	nspawntest.Require(t)
	l := newLab(t)
	listenTCP(t, l.nodeNS, ":6443")
	listenTCP(t, l.nodeNS, ":8081")
	c := bootFirewalld(t, l)

	// Backend auto finds firewalld; no zone or interfaces: the default zone.
	cfg := controllerConfig(t)
	cfg.Firewall = machineconfig.Firewall{Backend: machineconfig.BackendAuto}
	cfg.Users[0].SSHAuthorizedKeys = nil // no sshd: Debian's ssh service is closed
	listenTCP(t, l.nodeNS, ":22")
	zone := c.MustExec(t, "firewall-cmd", "--get-default-zone")
	if zone != "public" {
		t.Fatalf("default zone %q, want Debian's public", zone)
	}
	planned := c.stage(t, "plan", cfg).Changes
	if open := c.stage(t, "ports-open", cfg); open.PortsOpen {
		t.Error("PortsOpen true before the ports were opened")
	}
	changes := c.stage(t, "apply", cfg).Changes
	t.Logf("first apply against firewalld: %q", changes)
	var want []stage.Change
	for _, p := range []string{"2379-2380/tcp", "6443/tcp", "10250/tcp", "10257/tcp", "10259/tcp"} {
		for _, layer := range []string{"runtime", "permanent"} {
			want = append(want, stage.Change(fmt.Sprintf("firewalld zone public: open %s (%s)", p, layer)))
		}
	}
	want = append(want, "firewalld zone public: close service ssh (runtime)", "firewalld zone public: close service ssh (permanent)")
	want = append(want, "firewalld zone trusted: bind source 172.17.0.0/16 (runtime)", "firewalld zone trusted: bind source 172.17.0.0/16 (permanent)",
		"firewalld policy kubeboot-pods: forward from any zone to zone trusted (permanent)", "firewalld policy kubeboot-pods: load into the runtime (reload)")
	wantChanges(t, "first apply (firewalld)", changes, changeStrings(want)...)
	if !slices.Equal(planned, changes) {
		t.Errorf("Plan said %q, Apply did %q", planned, changes)
	}
	wantPorts := []string{"10250/tcp", "10257/tcp", "10259/tcp", "2379-2380/tcp", "6443/tcp"}
	for _, args := range [][]string{{"--zone=public", "--list-ports"}, {"--permanent", "--zone=public", "--list-ports"}} {
		if got := portList(c.MustExec(t, append([]string{"firewall-cmd"}, args...)...)); !slices.Equal(got, wantPorts) {
			t.Errorf("firewall-cmd %s = %q, want %q", strings.Join(args, " "), got, wantPorts)
		}
	}
	wantChanges(t, "second apply (firewalld)", c.stage(t, "apply", cfg).Changes)
	if !c.stage(t, "ports-open", cfg).PortsOpen {
		t.Error("PortsOpen false after apply")
	}
	if strings.Contains(c.MustExec(t, "nft", "list", "tables"), "inet "+TableName) {
		t.Error("backend auto with firewalld running created table inet kubeboot too")
	}
	assertOpen(t, probeTCP(t, l.clientNS, "", nodeIP+":6443"), "6443/tcp through firewalld")
	if err := probeTCP(t, l.clientNS, "", nodeIP+":8081"); err == nil {
		t.Error("unlisted 8081/tcp got through firewalld")
	}
	if err := probeTCP(t, l.clientNS, "", nodeIP+":22"); err == nil {
		t.Error("22/tcp got through firewalld with no SSH key in the config")
	}

	// A zone of our choosing, bound to enp1s0, with an extra port.
	cfg.Firewall.Zone = "internal"
	cfg.Firewall.Interfaces = []string{"enp1s0"}
	cfg.Firewall.Ports = []string{"8081/tcp"}
	changes = c.stage(t, "apply", cfg).Changes
	for _, w := range []string{
		"firewalld zone internal: bind interface enp1s0 (runtime)", "firewalld zone internal: bind interface enp1s0 (permanent)",
		"firewalld zone internal: open 6443/tcp (runtime)", "firewalld zone internal: open 8081/tcp (permanent)",
	} {
		if !slices.Contains(changes, stage.Change(w)) {
			t.Errorf("zone internal apply: missing %q in %q", w, changes)
		}
	}
	for _, args := range [][]string{{"--get-zone-of-interface=enp1s0"}, {"--permanent", "--get-zone-of-interface=enp1s0"}} {
		if got := c.MustExec(t, append([]string{"firewall-cmd"}, args...)...); got != "internal" {
			t.Errorf("firewall-cmd %s = %q, want internal", strings.Join(args, " "), got)
		}
	}
	assertOpen(t, probeTCP(t, l.clientNS, "", nodeIP+":8081"), "8081/tcp once listed, in zone internal")
	wantChanges(t, "apply again (zone internal)", c.stage(t, "apply", cfg).Changes)
	// A reload throws the runtime away and loads the permanent config: the
	// permanent half must hold everything.
	c.MustExec(t, "firewall-cmd", "--reload")
	wantChanges(t, "apply after firewall-cmd --reload", c.stage(t, "apply", cfg).Changes)
	assertOpen(t, probeTCP(t, l.clientNS, "", nodeIP+":6443"), "6443/tcp after reload")

	// A key: sshPort opens in the zone, runtime and permanent.
	cfg.Users[0].SSHAuthorizedKeys = []string{testKey}
	wantChanges(t, "apply with an SSH key", c.stage(t, "apply", cfg).Changes,
		"firewalld zone internal: open 22/tcp (runtime)", "firewalld zone internal: open 22/tcp (permanent)")
	assertOpen(t, probeTCP(t, l.clientNS, "", nodeIP+":22"), "22/tcp once admin has a key")

	cfg.Firewall.Zone = "nosuchzone"
	if res := c.stageResult(t, "apply", cfg); !strings.Contains(res.Error, `firewall.zone "nosuchzone"`) {
		t.Errorf("apply with an unknown zone: want an error naming firewall.zone, got %+v", res)
	}
}

func changeStrings(cs []stage.Change) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = string(c)
	}
	return out
}

// TestFirewalldPodNetwork shows what firewalld 2.x (Debian trixie) does to
// pod traffic and that trusting the pod subnet fixes it. Without it: a
// pod's packets to an unlisted node port are rejected (cni0 falls into the
// default zone) and so is forwarded pod traffic between nodes (firewalld
// forwards between two interfaces of the default zone only when they are
// bound to it explicitly). With kubernetes.podSubnet bound as a source of
// the trusted zone and the policy forwarding to it, all of it passes, and
// another node's address reaches a local pod (host-gw: the API server
// calling a webhook pod on a worker).
func TestFirewalldPodNetwork(t *testing.T) {
	nspawntest.Require(t)
	l := newLab(t)
	pod := addPodNetwork(t, l)
	listenTCP(t, l.nodeNS, ":6443")
	listenTCP(t, l.nodeNS, ":8081")
	listenTCP(t, pod, ":8080")
	listenTCP(t, l.clientNS, clientIP+":9000")
	c := bootFirewalld(t, l)

	cfg := controllerConfig(t)
	cfg.Firewall = machineconfig.Firewall{Backend: machineconfig.BackendFirewalld}
	cfg.Kubernetes.PodSubnet = ""
	c.stage(t, "apply", cfg)
	var rejected []string
	for what, err := range map[string]error{
		"pod -> node 8081":           probeTCP(t, pod, "", nodeIP+":8081"),
		"remote pod -> local pod":    probeTCP(t, l.clientNS, remotePodIP, localPodIP+":8080"),
		"pod -> outside (forwarded)": probeTCP(t, pod, "", clientIP+":9000"),
	} {
		if err != nil {
			rejected = append(rejected, what)
		}
	}
	slices.Sort(rejected)
	t.Logf("firewalld without the pod subnet trusted rejects: %q", rejected)
	if len(rejected) == 0 {
		t.Error("firewalld let all pod traffic through without the pod subnet trusted: the test no longer shows why the stage binds it")
	}

	cfg.Kubernetes.PodSubnet = "172.17.0.0/16"
	if err := probeTCP(t, l.clientNS, clientIP, localPodIP+":8080"); err == nil {
		t.Error("another node's address reached a pod before the policy existed")
	}
	wantChanges(t, "trusting the pod subnet", c.stage(t, "apply", cfg).Changes,
		"firewalld zone trusted: bind source 172.17.0.0/16 (runtime)", "firewalld zone trusted: bind source 172.17.0.0/16 (permanent)",
		"firewalld policy kubeboot-pods: forward from any zone to zone trusted (permanent)",
		"firewalld policy kubeboot-pods: load into the runtime (reload)")
	assertOpen(t, probeTCP(t, pod, "", nodeIP+":8081"), "pod -> node 8081 (unlisted port)")
	assertOpen(t, probeTCP(t, pod, "", serviceIP+":443"), "pod -> kubernetes Service -> node 6443")
	assertOpen(t, probeTCP(t, pod, "", clientIP+":9000"), "pod -> outside (forwarded)")
	assertOpen(t, probeTCP(t, l.clientNS, remotePodIP, localPodIP+":8080"), "remote pod -> local pod (forwarded)")
	assertOpen(t, probeTCP(t, l.clientNS, clientIP, localPodIP+":8080"), "another node's address -> a local pod (forwarded)")
	assertOpen(t, probeTCP(t, l.clientNS, "", nodeIP+":6443"), "6443/tcp still open after the reload")
	for _, args := range [][]string{{"--zone=trusted", "--list-sources"}, {"--permanent", "--zone=trusted", "--list-sources"}} {
		if got := c.MustExec(t, append([]string{"firewall-cmd"}, args...)...); got != "172.17.0.0/16" {
			t.Errorf("firewall-cmd %s = %q", strings.Join(args, " "), got)
		}
	}
	wantChanges(t, "second apply", c.stage(t, "apply", cfg).Changes)
	if !c.stage(t, "ports-open", cfg).PortsOpen {
		t.Error("PortsOpen false after apply")
	}
}
