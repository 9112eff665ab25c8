package firewall

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"kubeboot.dev/kubeboot/bootstrapd/stage"
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

// The Debian rootfs the container boots; building it takes about a minute,
// so it is cached outside the repository, keyed by what goes into it.
var (
	rootfsSuite    = "trixie"
	rootfsPackages = []string{"systemd", "systemd-sysv", "dbus", "firewalld", "nftables", "iproute2"}
)

func cachedRootfs(t *testing.T) string {
	t.Helper()
	sum := sha256.Sum256([]byte(rootfsSuite + "|minbase|" + strings.Join(rootfsPackages, ",")))
	base := os.Getenv("KUBEBOOT_TEST_CACHE")
	if base == "" {
		base = "/var/cache/kubeboot-test"
	}
	dir := filepath.Join(base, "nspawn-rootfs-"+hex.EncodeToString(sum[:])[:12])
	if _, err := os.Stat(dir + ".ok"); err == nil {
		return dir
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		t.Fatal(err)
	}
	// Concurrent test runs build it once.
	lock, err := os.OpenFile(dir+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir + ".ok"); err == nil {
		return dir
	}
	tmp := dir + ".tmp"
	_ = os.RemoveAll(tmp)
	t.Logf("building %s with mmdebstrap (once; about a minute)", dir)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "mmdebstrap", "--variant=minbase", "--mode=root",
		"--include="+strings.Join(rootfsPackages, ","), rootfsSuite, tmp).CombinedOutput()
	if err != nil {
		_ = os.RemoveAll(tmp)
		t.Fatalf("mmdebstrap %s: %v\n%s", rootfsSuite, err, out)
	}
	_ = os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir+".ok", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// container is a booted systemd-nspawn machine whose network namespace is
// one the test made.
type container struct {
	name    string
	nspawn  *exec.Cmd
	exited  chan struct{}
	initPID int
}

// bootContainer boots rootfs with systemd-nspawn (flags from
// shared/notes/feasibility.md): --keep-unit because the host has no systemd
// bus, --private-network with --network-namespace-path so the container
// keeps CAP_NET_ADMIN in the test's namespace, --volatile=overlay so
// firewalld's permanent config lands in a tmpfs, not in the cached rootfs.
// nspawn is started inside a cgroup of its own, where it creates its
// payload and supervisor cgroups, so nothing is left at the host's root.
func bootContainer(t *testing.T, rootfs, netnsName, bindDir string) *container {
	t.Helper()
	c := &container{name: netnsName + "m", exited: make(chan struct{})}
	var cgroups []string
	for _, h := range []string{"/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified"} {
		if _, err := os.Stat(filepath.Join(h, "cgroup.procs")); err != nil {
			continue
		}
		cg := filepath.Join(h, "kubeboot-"+c.name)
		if err := os.Mkdir(cg, 0o755); err != nil {
			t.Fatal(err)
		}
		cgroups = append(cgroups, cg)
	}
	if len(cgroups) == 0 {
		if err := os.Mkdir("/sys/fs/cgroup/kubeboot-"+c.name, 0o755); err == nil {
			cgroups = append(cgroups, "/sys/fs/cgroup/kubeboot-"+c.name)
		}
	}
	t.Cleanup(func() {
		for _, cg := range cgroups {
			removeCgroupTree(t, cg)
		}
		// nspawn's per-machine runtime files, then its directories if no
		// other machine uses them.
		_ = os.RemoveAll("/run/systemd/nspawn/propagate/" + c.name)
		for _, d := range []string{"/run/systemd/nspawn/propagate", "/run/systemd/nspawn/locks", "/run/systemd/nspawn"} {
			_ = os.Remove(d)
		}
	})

	var join strings.Builder
	for _, cg := range cgroups {
		fmt.Fprintf(&join, "echo $$ > %s/cgroup.procs && ", cg)
	}
	logFile := filepath.Join(t.TempDir(), "console.log")
	log, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	c.nspawn = exec.Command("sh", "-c", join.String()+`exec "$@"`, "sh",
		"systemd-nspawn", "-D", rootfs, "-M", c.name, "-b", "--register=no", "--keep-unit",
		"--console=read-only", "--private-network", "--network-namespace-path=/run/netns/"+netnsName,
		"--volatile=overlay", "--bind-ro="+bindDir+":/mnt/kubeboot-test")
	c.nspawn.Stdout, c.nspawn.Stderr = log, log
	c.nspawn.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := c.nspawn.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = c.nspawn.Wait(); log.Close(); close(c.exited) }()
	t.Cleanup(func() { c.stop(t, logFile) })

	deadline := time.Now().Add(30 * time.Second)
	for c.initPID == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("systemd-nspawn started no container init within 30s; console:\n%s", readFile(logFile))
		}
		select {
		case <-c.exited:
			t.Fatalf("systemd-nspawn exited: %v; console:\n%s", c.nspawn.ProcessState, readFile(logFile))
		case <-time.After(100 * time.Millisecond):
		}
		c.initPID = childNamed(c.nspawn.Process.Pid, "systemd")
	}
	return c
}

func readFile(p string) string { b, _ := os.ReadFile(p); return string(b) }

// childNamed returns the pid of a child of pid whose comm is name.
func childNamed(pid int, name string) int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, task := range tasks {
		for _, f := range strings.Fields(readFile(task)) {
			if strings.TrimSpace(readFile("/proc/"+f+"/comm")) == name {
				n, _ := strconv.Atoi(f)
				return n
			}
		}
	}
	return 0
}

func (c *container) stop(t *testing.T, logFile string) {
	if c.initPID != 0 {
		_ = exec.Command("nsenter", "-t", strconv.Itoa(c.initPID), "-a", "systemctl", "poweroff").Run()
	}
	select {
	case <-c.exited:
		return
	case <-time.After(30 * time.Second):
	}
	t.Logf("container %s did not power off in 30s; killing it. console:\n%s", c.name, readFile(logFile))
	if c.initPID != 0 {
		_ = syscall.Kill(c.initPID, syscall.SIGKILL) // ends its whole pid namespace
	}
	_ = c.nspawn.Process.Kill()
	<-c.exited
}

// removeCgroupTree removes a cgroup and its children, deepest first; each
// is empty once the container is gone.
func removeCgroupTree(t *testing.T, root string) {
	var dirs []string
	_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	slices.Reverse(dirs)
	for _, d := range dirs {
		var err error
		for range 50 { // a just-exited process can hold it for a moment
			if err = os.Remove(d); err == nil || os.IsNotExist(err) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil && !os.IsNotExist(err) {
			t.Errorf("remove cgroup %s: %v", d, err)
		}
	}
}

// exec runs a command inside the container, with extra environment.
func (c *container) exec(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(c.initPID), "-a"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s in container %s: %v\n%s", strings.Join(args, " "), c.name, err, stderr.String())
	}
	return string(out), nil
}

func (c *container) mustExec(t *testing.T, args ...string) string {
	t.Helper()
	out, err := c.exec(t, nil, args...)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
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
	out, err := c.exec(t, []string{innerEnv + "=" + string(req)}, "/mnt/kubeboot-test/firewall.test")
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
		out, _ := c.exec(t, nil, "firewall-cmd", "--state")
		if strings.TrimSpace(out) == "running" {
			return
		}
		if time.Now().After(deadline) {
			status, _ := c.exec(t, nil, "systemctl", "status", "--no-pager", "firewalld", "dbus")
			t.Fatalf("firewalld not running after 90s:\n%s", status)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func copyExecutable(t *testing.T, dir string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(filepath.Join(dir, "firewall.test"), os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
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
	requireRoot(t, "systemd-nspawn", "mmdebstrap", "nsenter")
	if testing.Short() {
		t.Skip("boots a container; skipped with -short")
	}
	rootfs := cachedRootfs(t)
	l := newLab(t)
	listenTCP(t, l.nodeNS, ":6443")
	listenTCP(t, l.nodeNS, ":8081")
	bind := t.TempDir()
	copyExecutable(t, bind)
	c := bootContainer(t, rootfs, l.node, bind)
	c.waitFirewalld(t)

	// Backend auto finds firewalld; no zone or interfaces: the default zone.
	cfg := controllerConfig(t)
	cfg.Firewall = machineconfig.Firewall{Backend: machineconfig.BackendAuto}
	cfg.Users[0].SSHAuthorizedKeys = nil // no sshd: Debian's ssh service is closed
	listenTCP(t, l.nodeNS, ":22")
	zone := c.mustExec(t, "firewall-cmd", "--get-default-zone")
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
		if got := portList(c.mustExec(t, append([]string{"firewall-cmd"}, args...)...)); !slices.Equal(got, wantPorts) {
			t.Errorf("firewall-cmd %s = %q, want %q", strings.Join(args, " "), got, wantPorts)
		}
	}
	wantChanges(t, "second apply (firewalld)", c.stage(t, "apply", cfg).Changes)
	if !c.stage(t, "ports-open", cfg).PortsOpen {
		t.Error("PortsOpen false after apply")
	}
	if strings.Contains(c.mustExec(t, "nft", "list", "tables"), "inet "+TableName) {
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
		if got := c.mustExec(t, append([]string{"firewall-cmd"}, args...)...); got != "internal" {
			t.Errorf("firewall-cmd %s = %q, want internal", strings.Join(args, " "), got)
		}
	}
	assertOpen(t, probeTCP(t, l.clientNS, "", nodeIP+":8081"), "8081/tcp once listed, in zone internal")
	wantChanges(t, "apply again (zone internal)", c.stage(t, "apply", cfg).Changes)
	// A reload throws the runtime away and loads the permanent config: the
	// permanent half must hold everything.
	c.mustExec(t, "firewall-cmd", "--reload")
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
	requireRoot(t, "systemd-nspawn", "mmdebstrap", "nsenter")
	if testing.Short() {
		t.Skip("boots a container; skipped with -short")
	}
	rootfs := cachedRootfs(t)
	l := newLab(t)
	pod := addPodNetwork(t, l)
	listenTCP(t, l.nodeNS, ":6443")
	listenTCP(t, l.nodeNS, ":8081")
	listenTCP(t, pod, ":8080")
	listenTCP(t, l.clientNS, clientIP+":9000")
	bind := t.TempDir()
	copyExecutable(t, bind)
	c := bootContainer(t, rootfs, l.node, bind)
	c.waitFirewalld(t)

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
		if got := c.mustExec(t, append([]string{"firewall-cmd"}, args...)...); got != "172.17.0.0/16" {
			t.Errorf("firewall-cmd %s = %q", strings.Join(args, " "), got)
		}
	}
	wantChanges(t, "second apply", c.stage(t, "apply", cfg).Changes)
	if !c.stage(t, "ports-open", cfg).PortsOpen {
		t.Error("PortsOpen false after apply")
	}
}
