package main

// End-to-end tests of the bootstrapd binary against real kernel facilities:
// each node is a network namespace with veth links named and addressed like
// the reference (enp1s0 52:54:00:80:ad:b6, enp2s0 52:54:00:6a:9d:95), whose
// peers sit in a second namespace, plus a persistent UTS namespace (a file
// bind-mounted by `unshare --uts=FILE`) so the hostname survives between
// runs the way it would on one boot. bootstrapd runs as
// `ip netns exec NS nsenter --uts=FILE bootstrapd ...`.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"kubeboot.dev/kubeboot/internal/netnstest"

	"github.com/vishvananda/netns"
)

const controllerConfig = "../../configs/controller.yaml"

// Secret values of configs/controller.yaml that must never be written
// anywhere by bootstrapd.
var controllerSecrets = []string{"kbex01.exampletoken0001", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// binary builds bootstrapd once for all tests.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "bootstrapd-test-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "bootstrapd")
		// Built as the Makefile builds it: without cgo, whose thread
		// stacks would not fit the address-space limit of the hostile
		// input tests.
		cmd := exec.Command("go", "build", "-o", binPath, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

func needRootAndTools(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network and UTS namespaces")
	}
	for _, tool := range []string{"ip", "nft", "unshare", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (scripts/setup-host.sh installs it)", tool)
		}
	}
}

// node is one simulated machine.
type node struct {
	t          *testing.T
	ns, peerNS string // network namespaces
	uts        string // file holding the UTS namespace
	root       string
}

var nodeSeq int

func newNode(t *testing.T) *node {
	t.Helper()
	nodeSeq++
	n := &node{
		t:      t,
		ns:     fmt.Sprintf("kbt-node-%d-%d", os.Getpid(), nodeSeq),
		peerNS: fmt.Sprintf("kbt-peer-%d-%d", os.Getpid(), nodeSeq),
		root:   t.TempDir(),
	}
	dir := t.TempDir()
	n.uts = filepath.Join(dir, "uts")
	netnstest.New(t, n.ns)
	netnstest.New(t, n.peerNS)
	netnstest.Run(t, "ip", "-n", n.ns, "link", "add", "enp1s0", "address", "52:54:00:80:ad:b6", "type", "veth", "peer", "name", "p1", "netns", n.peerNS)
	netnstest.Run(t, "ip", "-n", n.ns, "link", "add", "enp2s0", "address", "52:54:00:6a:9d:95", "type", "veth", "peer", "name", "p2", "netns", n.peerNS)
	// The peer side plays the gateway 172.16.0.254 and a client on 10.0.0.0/24.
	netnstest.Run(t, "ip", "-n", n.peerNS, "addr", "add", "172.16.0.254/24", "dev", "p1")
	netnstest.Run(t, "ip", "-n", n.peerNS, "addr", "add", "10.0.0.254/24", "dev", "p2")
	netnstest.Run(t, "ip", "-n", n.peerNS, "link", "set", "p1", "up")
	netnstest.Run(t, "ip", "-n", n.peerNS, "link", "set", "p2", "up")

	if err := os.WriteFile(n.uts, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	netnstest.Run(t, "unshare", "--uts="+n.uts, "hostname", "image-default")
	t.Cleanup(func() { exec.Command("umount", n.uts).Run() })
	return n
}

// bootstrapd runs the binary on the node and returns its exit status and
// combined output.
func (n *node) bootstrapd(env []string, args ...string) (int, string) {
	n.t.Helper()
	full := append([]string{"netns", "exec", n.ns, "nsenter", "--uts=" + n.uts, binary(n.t)}, args...)
	cmd := exec.Command("ip", full...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &exit):
		return exit.ExitCode(), string(out)
	}
	n.t.Fatalf("bootstrapd %v: %v\n%s", args, err, out)
	return 0, ""
}

func (n *node) mustRun(args ...string) string {
	n.t.Helper()
	code, out := n.bootstrapd(nil, args...)
	if code != 0 {
		n.t.Fatalf("bootstrapd %v: exit %d\n%s", args, code, out)
	}
	return out
}

func (n *node) hostname() string {
	return strings.TrimSpace(netnstest.Run(n.t, "nsenter", "--uts="+n.uts, "hostname"))
}

// kernelState is what the kernel holds for the node, in a comparable form.
type kernelState struct {
	Hostname  string
	Addresses []string
	Routes    []string
	Nft       string
	Sysctls   map[string]string
}

func (n *node) kernel() kernelState {
	t := n.t
	t.Helper()
	var s kernelState
	s.Hostname = n.hostname()

	var links []struct {
		Ifname    string `json:"ifname"`
		Address   string `json:"address"`
		Operstate string `json:"operstate"`
		Flags     []string
		AddrInfo  []struct {
			Family    string `json:"family"`
			Local     string `json:"local"`
			Prefixlen int    `json:"prefixlen"`
			Scope     string `json:"scope"`
		} `json:"addr_info"`
	}
	decode(t, netnstest.Run(t, "ip", "-n", n.ns, "-j", "addr", "show"), &links)
	for _, l := range links {
		for _, a := range l.AddrInfo {
			if a.Family == "inet6" && a.Scope == "link" {
				continue // derived from the MAC by the kernel
			}
			s.Addresses = append(s.Addresses, fmt.Sprintf("%s %s up=%v %s/%d", l.Ifname, l.Address, slices.Contains(l.Flags, "UP"), a.Local, a.Prefixlen))
		}
	}
	for _, family := range []string{"-4", "-6"} {
		var routes []map[string]any
		decode(t, netnstest.Run(t, "ip", "-n", n.ns, "-j", family, "route", "show", "table", "all"), &routes)
		for _, r := range routes {
			// ip leaves out the defaults: unicast routes of the main table.
			if r["type"] == nil {
				r["type"] = "unicast"
			}
			if r["table"] == nil {
				r["table"] = "main"
			}
			s.Routes = append(s.Routes, fmt.Sprintf("%v %v via=%v dev=%v metric=%v proto=%v table=%v", r["type"], r["dst"], r["gateway"], r["dev"], r["metric"], r["protocol"], r["table"]))
		}
	}
	slices.Sort(s.Addresses)
	slices.Sort(s.Routes)

	var ruleset any
	decode(t, netnstest.Run(t, "ip", "netns", "exec", n.ns, "nft", "-j", "list", "ruleset"), &ruleset)
	s.Nft = canonicalNft(ruleset)

	s.Sysctls = map[string]string{}
	for _, k := range []string{"net/ipv4/ip_forward", "net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables"} {
		s.Sysctls[k] = strings.TrimSpace(netnstest.Run(t, "ip", "netns", "exec", n.ns, "cat", "/proc/sys/"+k))
	}
	return s
}

// canonicalNft drops what differs between equal rulesets: object handles
// (they count up as objects are added and removed) and nft's version info.
func canonicalNft(v any) string {
	var strip func(any) any
	strip = func(v any) any {
		switch x := v.(type) {
		case map[string]any:
			delete(x, "handle")
			delete(x, "metainfo")
			for k, e := range x {
				x[k] = strip(e)
			}
		case []any:
			var out []any
			for _, e := range x {
				if m, ok := e.(map[string]any); ok && len(m) == 1 && m["metainfo"] != nil {
					continue
				}
				out = append(out, strip(e))
			}
			return out
		}
		return v
	}
	b, _ := json.Marshal(strip(v))
	return string(b)
}

func decode(t *testing.T, data string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(data), v); err != nil {
		t.Fatalf("decode %q: %v", data, err)
	}
}

// files returns every file under the node's root (except the state
// records' timings) with its mode and content.
func (n *node) files(withTimes bool) map[string]string {
	n.t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(n.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel := strings.TrimPrefix(p, n.root)
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 {
			target, err := os.Readlink(p)
			out[rel] = "-> " + target
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		content := string(data)
		if strings.HasPrefix(rel, "/var/lib/kubeboot/") && !withTimes {
			content = stateSummary(n.t, rel, data)
		}
		if withTimes {
			content += fmt.Sprintf(" @%d", info.ModTime().UnixNano())
		}
		out[rel] = fmt.Sprintf("%v %s", info.Mode(), content)
		return nil
	})
	if err != nil {
		n.t.Fatal(err)
	}
	return out
}

// stateSummary keeps what must match between a clean run and a resumed one:
// which stages are recorded with which config, not when.
func stateSummary(t *testing.T, rel string, data []byte) string {
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		return string(data) // not a record of ours
	}
	for _, k := range []string{"started", "finished", "duration", "time", "loaded", "changes", "attempts"} {
		delete(m, k)
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// inNS runs fn on a thread in the named network namespace; sockets made
// there belong to it.
func inNS(t *testing.T, name string, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := netns.Set(h); err != nil {
		t.Fatal(err)
	}
	defer netns.Set(orig)
	fn()
}

// probe connects from the peer namespace to addr:port on the node, where a
// listener waits, and reports whether the connection was accepted.
func (n *node) probe(addr string, port int) bool {
	t := n.t
	t.Helper()
	var ln net.Listener
	inNS(t, n.ns, func() {
		var err error
		ln, err = net.Listen("tcp", fmt.Sprintf(":%d", port))
		if err != nil {
			t.Fatal(err)
		}
	})
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	ok := false
	inNS(t, n.peerNS, func() {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(addr, fmt.Sprint(port)), 1500*time.Millisecond)
		if err == nil {
			c.Close()
			ok = true
		}
	})
	return ok
}

func noSecrets(t *testing.T, where, text string) {
	t.Helper()
	for _, s := range controllerSecrets {
		if strings.Contains(text, s) {
			t.Errorf("%s contains a secret of the config", where)
		}
	}
}

// TestControllerHostNetworkFirewall is the "done when": in a fresh
// netns with enp1s0/enp2s0, `bootstrapd run --config configs/controller.yaml
// --root $TMP --only hostname,network,firewall` leaves the addresses, the
// default route with metric 100, the hostname and a firewall accepting 6443
// and dropping an unlisted port; running it again changes nothing.
func TestControllerHostNetworkFirewall(t *testing.T) {
	needRootAndTools(t)
	n := newNode(t)
	planArgs := []string{"plan", "--config", controllerConfig, "--root", n.root, "--only", "hostname,network,firewall"}
	out := n.mustRun(planArgs...)
	for _, want := range []string{"hostname: 3 changes", "enp1s0: add address 172.16.0.11/24", "firewall: "} {
		if !strings.Contains(out, want) {
			t.Errorf("plan output lacks %q:\n%s", want, out)
		}
	}
	if entries, _ := os.ReadDir(n.root); len(entries) != 0 || n.hostname() != "image-default" {
		t.Fatalf("plan changed the node: %v, hostname %q", entries, n.hostname())
	}

	args := []string{"run", "--config", controllerConfig, "--root", n.root, "--only", "hostname,network,firewall"}
	notes := listenNotify(t)
	code, out := n.bootstrapd([]string{"NOTIFY_SOCKET=" + notes.path}, args...)
	if code != 0 {
		t.Fatalf("run: exit %d\n%s", code, out)
	}
	noSecrets(t, "the first run's output", out)
	got := notes.messages(t)
	for _, want := range []string{"STATUS=validating", "STATUS=applying network", "READY=1\nSTATUS=applied; 24 changes"} {
		if !slices.Contains(got, want) {
			t.Errorf("sd_notify messages %q lack %q", got, want)
		}
	}

	k := n.kernel()
	if k.Hostname != "controller.home.local" {
		t.Errorf("hostname = %q", k.Hostname)
	}
	for _, want := range []string{"enp1s0 52:54:00:80:ad:b6 up=true 172.16.0.11/24", "enp2s0 52:54:00:6a:9d:95 up=true 10.0.0.11/24"} {
		if !slices.Contains(k.Addresses, want) {
			t.Errorf("addresses %q lack %q", k.Addresses, want)
		}
	}
	if want := "unicast default via=172.16.0.254 dev=enp1s0 metric=100 proto=static table=main"; !slices.Contains(k.Routes, want) {
		t.Errorf("routes %q lack %q", k.Routes, want)
	}
	if !n.probe("172.16.0.11", 6443) {
		t.Error("6443/tcp is not accepted")
	}
	if n.probe("172.16.0.11", 7777) {
		t.Error("7777/tcp (not listed) is accepted")
	}
	if data, _ := os.ReadFile(filepath.Join(n.root, "etc/hostname")); string(data) != "controller.home.local\n" {
		t.Errorf("/etc/hostname = %q", data)
	}

	filesBefore, kernelBefore := n.files(true), n.kernel()
	out = n.mustRun(args...)
	if !strings.Contains(out, "changes=0") || strings.Contains(out, "msg=changed") {
		t.Errorf("second run reported changes:\n%s", out)
	}
	if got := n.files(true); fmt.Sprint(got) != fmt.Sprint(filesBefore) {
		t.Errorf("second run changed files:\nbefore %v\nafter  %v", filesBefore, got)
	}
	if got := n.kernel(); fmt.Sprint(got) != fmt.Sprint(kernelBefore) {
		t.Errorf("second run changed the kernel:\nbefore %+v\nafter  %+v", kernelBefore, got)
	}

	status := n.mustRun("status", "--root", n.root)
	for _, want := range []string{"source:  --config " + controllerConfig, "done:    no", "failed:  no", "hostname", "network", "firewall"} {
		if !strings.Contains(status, want) {
			t.Errorf("status lacks %q:\n%s", want, status)
		}
	}
	noSecrets(t, "status", status)
}

// TestCrashAtEachStageBoundary stops bootstrapd right after each stage's
// record is written, as a power cut would, reruns it, and checks that the
// node ends exactly like one that ran through without stopping.
func TestCrashAtEachStageBoundary(t *testing.T) {
	needRootAndTools(t)
	stages := []string{"hostname", "network", "firewall", "sysprep"}
	var only []string
	if swaps, _ := os.ReadFile("/proc/swaps"); strings.Count(strings.TrimSpace(string(swaps)), "\n") > 0 {
		// sysprep would turn off the host's swap, which is not the test's to touch.
		t.Log("the host has active swap: leaving sysprep out")
		stages = stages[:3]
		only = []string{"--only", strings.Join(stages, ",")}
	}
	run := func(n *node, env ...string) (int, string) {
		return n.bootstrapd(env, append([]string{"run", "--config", controllerConfig, "--root", n.root}, only...)...)
	}

	clean := newNode(t)
	if code, out := run(clean); code != 0 {
		t.Fatalf("clean run: exit %d\n%s", code, out)
	}
	wantFiles, wantKernel := clean.files(false), clean.kernel()
	t.Logf("clean run: kernel %+v", wantKernel)
	if len(only) == 0 {
		if _, ok := wantFiles["/var/lib/kubeboot/done"]; !ok {
			t.Fatal("the clean run wrote no done marker")
		}
	}

	for _, boundary := range stages {
		t.Run("after "+boundary, func(t *testing.T) {
			n := newNode(t)
			n.t = t
			code, out := run(n, CrashAfterEnv+"="+boundary)
			if code != exitCrashHook {
				t.Fatalf("run with %s=%s: exit %d, want %d\n%s", CrashAfterEnv, boundary, code, exitCrashHook, out)
			}
			if _, err := os.Stat(filepath.Join(n.root, "var/lib/kubeboot/stages", boundary+".json")); err != nil {
				t.Fatalf("no record of %s at the crash: %v", boundary, err)
			}
			if _, err := os.Stat(filepath.Join(n.root, "var/lib/kubeboot/done")); err == nil {
				t.Fatal("done marker written before the run finished")
			}
			code, out = run(n)
			if code != 0 {
				t.Fatalf("rerun: exit %d\n%s", code, out)
			}
			// Stages finished before the crash are not applied again.
			for _, s := range stages[:slices.Index(stages, boundary)+1] {
				if !strings.Contains(out, `msg="up to date" stage=`+s) {
					t.Errorf("rerun did not find %s up to date:\n%s", s, out)
				}
			}
			if got := n.files(false); fmt.Sprint(got) != fmt.Sprint(wantFiles) {
				t.Errorf("files differ from a clean run:\ngot  %v\nwant %v", got, wantFiles)
			}
			if got := n.kernel(); fmt.Sprint(got) != fmt.Sprint(wantKernel) {
				t.Errorf("kernel differs from a clean run:\ngot  %+v\nwant %+v", got, wantKernel)
			}
			for p, content := range n.files(false) {
				noSecrets(t, p, content)
			}
		})
	}
}

// notifySocket stands in for systemd's NOTIFY_SOCKET.
type notifySocket struct {
	path string
	conn *net.UnixConn
}

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	p := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: p, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &notifySocket{path: p, conn: c}
}

// messages returns what was sent so far.
func (s *notifySocket) messages(t *testing.T) []string {
	var out []string
	buf := make([]byte, 4096)
	for {
		s.conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := s.conn.Read(buf)
		if err != nil {
			return out
		}
		out = append(out, string(buf[:n]))
	}
}

// TestFailureMarker runs a config whose module cannot be loaded: the run
// fails in sysprep, the failed marker and status say so, and a run with a
// good config clears the marker.
func TestFailureMarker(t *testing.T) {
	needRootAndTools(t)
	if swaps, _ := os.ReadFile("/proc/swaps"); strings.Count(strings.TrimSpace(string(swaps)), "\n") > 0 {
		t.Skip("the host has active swap; sysprep would turn it off for the whole machine")
	}
	n := newNode(t)
	good, err := os.ReadFile(controllerConfig)
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, append(good, "system:\n  modules: [kubeboot_no_such_module]\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out := n.bootstrapd(nil, "run", "--config", bad, "--root", n.root, "--only", "hostname,sysprep")
	if code != exitFail || !strings.Contains(out, "stage sysprep: kernel module kubeboot_no_such_module") && !strings.Contains(out, "stage sysprep: modprobe kubeboot_no_such_module") {
		t.Fatalf("exit %d, want 1 with the module named:\n%s", code, out)
	}
	data, err := os.ReadFile(filepath.Join(n.root, "var/lib/kubeboot/failed"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct{ Stage, Reason string }
	decode(t, string(data), &f)
	if f.Stage != "sysprep" || !strings.Contains(f.Reason, "kubeboot_no_such_module") {
		t.Errorf("failed marker = %s", data)
	}
	if info, _ := os.Stat(filepath.Join(n.root, "var/lib/kubeboot/failed")); info.Mode().Perm() != 0o600 {
		t.Errorf("failed marker mode %v", info.Mode())
	}
	status := n.mustRun("status", "--root", n.root)
	if !strings.Contains(status, "failed:  stage sysprep at ") {
		t.Errorf("status:\n%s", status)
	}
	noSecrets(t, "the failed marker", string(data))
	noSecrets(t, "status", status)

	n.mustRun("run", "--config", controllerConfig, "--root", n.root, "--only", "hostname,sysprep")
	if _, err := os.Stat(filepath.Join(n.root, "var/lib/kubeboot/failed")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("failed marker still there after a good run: %v", err)
	}
}
