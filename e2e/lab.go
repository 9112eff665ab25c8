// Package e2e is the end-to-end lab: virtual machines booted from the node
// image under QEMU (TCG, OVMF, q35) on two bridges in a network namespace
// of their own, driven the way a user would drive real machines (a disk,
// a CIDATA volume, power), and checked from the namespace and from a root
// shell on each guest's second serial port. TestLab (KUBEBOOT_E2E=1) runs
// the scenarios; docs/e2e.md says how.
package e2e

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
	"kubeboot.dev/kubeboot/bootstrapd/stage"
)

// The lab's two networks, as in the reference: the nodes' network with the
// default gateway, and the second (data) network. Each is a bridge in the
// lab's namespace holding the gateway address; nothing routes them out.
const (
	BridgeMgmt  = "br-mgmt"
	BridgeData  = "br-data"
	GatewayMgmt = "172.16.0.254/24"
	GatewayData = "10.0.0.254/24"
)

// nsPrefix names the lab's namespaces (kblab-PID) and workPrefix its work
// directories (kubeboot-e2e-PID-*), so a later run can tell those of a
// test process that died from a running lab's.
const (
	nsPrefix   = "kblab-"
	workPrefix = "kubeboot-e2e-"
)

// Options configure a lab.
type Options struct {
	Repo     string    // the module root (configs/, bin/, out/)
	Out      string    // where logs and the report go (out/e2e)
	Kubeboot string    // bin/kubeboot
	Log      io.Writer // progress lines
	// CPUModel is QEMU's -cpu for every VM; "" means max (all the features
	// TCG emulates).
	CPUModel string
}

// Lab is the namespace, its bridges, the VMs and everything to undo.
type Lab struct {
	NS       string // network namespace
	Work     string // 0700 temp dir: overlays, firmware vars, sockets, CIDATA volumes, kubeconfigs
	Out      string
	Repo     string
	Kubeboot string
	Log      io.Writer
	Memory   *MemorySampler
	CPUModel string // QEMU -cpu of every VM

	mu       sync.Mutex
	undo     []undoStep
	closed   bool
	closing  sync.Once
	closeErr error
	stopped  string // the signal that tore the lab down
	vms      []*VM
	hosts    map[string]string // name -> address, the namespace's /etc/hosts
	stopSigs func()
}

type undoStep struct {
	what string
	fn   func() error
}

// New builds the lab: namespace, bridges with the gateways, its /etc/hosts,
// and a handler that tears everything down on SIGINT and SIGTERM before the
// process exits. Close undoes it all (also what New did before failing).
func New(ctx context.Context, o Options) (*Lab, error) {
	l := &Lab{
		NS: fmt.Sprintf("%s%d", nsPrefix, os.Getpid()), Out: o.Out, Repo: o.Repo,
		Kubeboot: o.Kubeboot, Log: o.Log, hosts: map[string]string{}, CPUModel: cmp.Or(o.CPUModel, "max"),
	}
	l.watchSignals()
	removeStaleLabs(l.Log)
	if err := l.build(ctx); err != nil {
		return nil, errors.Join(err, l.Close())
	}
	return l, nil
}

func (l *Lab) build(ctx context.Context) error {
	if err := os.MkdirAll(l.Out, 0o755); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", workPrefix, os.Getpid()))
	if err != nil {
		return err
	}
	l.Work = work
	l.onClose("remove "+work, func() error { return os.RemoveAll(work) })

	if err := run(ctx, "ip", "netns", "add", l.NS); err != nil {
		return err
	}
	l.onClose("delete namespace "+l.NS, func() error { return deleteNamespace(l.NS) })
	steps := [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", BridgeMgmt, "type", "bridge"},
		{"addr", "add", GatewayMgmt, "dev", BridgeMgmt},
		{"link", "set", BridgeMgmt, "up"},
		{"link", "add", BridgeData, "type", "bridge"},
		{"addr", "add", GatewayData, "dev", BridgeData},
		{"link", "set", BridgeData, "up"},
	}
	for _, s := range steps {
		if err := l.ip(ctx, s...); err != nil {
			return err
		}
	}
	if err := l.writeHosts(); err != nil {
		return err
	}
	l.Memory = startMemorySampler()
	l.onClose("stop the memory sampler", func() error { l.Memory.Stop(); return nil })
	return nil
}

// ip runs `ip -n NS args`.
func (l *Lab) ip(ctx context.Context, args ...string) error {
	return run(ctx, "ip", append([]string{"-n", l.NS}, args...)...)
}

// AddTap makes a tap device (QEMU opens it by name) on bridge.
func (l *Lab) AddTap(ctx context.Context, name, bridge string) error {
	if err := l.ip(ctx, "tuntap", "add", "dev", name, "mode", "tap"); err != nil {
		return err
	}
	l.onClose("delete tap "+name, func() error {
		// Gone with the namespace when that went first.
		if exec.Command("ip", "-n", l.NS, "link", "show", name).Run() != nil {
			return nil
		}
		return run(context.Background(), "ip", "-n", l.NS, "link", "del", name)
	})
	if err := l.ip(ctx, "link", "set", name, "master", bridge); err != nil {
		return err
	}
	return l.ip(ctx, "link", "set", name, "up")
}

// AddVLAN carries VLAN id of the trunk bridge to the access bridge
// (VLANPort); its taps are named after the id.
func (l *Lab) AddVLAN(ctx context.Context, id uint16, trunk, access string) (*VLANPort, error) {
	tn, an := fmt.Sprintf("vl%d-trunk", id), fmt.Sprintf("vl%d-access", id)
	v, err := newVLANPort(l.NS, id, tn, an)
	if err != nil {
		return nil, err
	}
	l.onClose(fmt.Sprintf("stop the VLAN %d port", id), v.Close)
	for _, s := range [][]string{
		{"link", "set", tn, "master", trunk}, {"link", "set", tn, "up"},
		{"link", "set", an, "master", access}, {"link", "set", an, "up"},
	} {
		if err := l.ip(ctx, s...); err != nil {
			return nil, err
		}
	}
	v.Start()
	return v, nil
}

// AddHosts adds names to the namespace's /etc/hosts (ip netns exec
// bind-mounts /etc/netns/NS/hosts over /etc/hosts for the commands it runs).
func (l *Lab) AddHosts(ip string, names ...string) error {
	l.mu.Lock()
	for _, n := range names {
		l.hosts[n] = ip
	}
	l.mu.Unlock()
	return l.writeHosts()
}

func (l *Lab) writeHosts() error {
	dir := filepath.Join("/etc/netns", l.NS)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		l.onClose("remove "+dir, func() error { return os.RemoveAll(dir) })
	}
	l.mu.Lock()
	var b strings.Builder
	b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost\n")
	for _, n := range slices.Sorted(maps.Keys(l.hosts)) {
		fmt.Fprintf(&b, "%s\t%s\n", l.hosts[n], n)
	}
	l.mu.Unlock()
	tmp := filepath.Join(dir, ".hosts.tmp")
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, "hosts"))
}

// Command is a command run inside the lab's namespace.
func (l *Lab) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", l.NS, name}, args...)...)
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// Exec runs a command inside the namespace and returns its combined
// output; the error carries the output's end.
func (l *Lab) Exec(ctx context.Context, name string, args ...string) (string, error) {
	out, err := l.Command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s (in %s): %w: %s", name, strings.Join(args, " "), l.NS, err, tail(string(out), 10))
	}
	return string(out), nil
}

// Ping sends ICMP echos from the namespace (busybox: the host has no
// ping of its own) until one is answered, for at most 30 s; it returns
// how many it sent.
func (l *Lab) Ping(ctx context.Context, addr string) (int, error) {
	deadline := time.Now().Add(30 * time.Second)
	for n := 1; ; n++ {
		_, err := l.Exec(ctx, "busybox", "ping", "-c", "1", "-W", "3", addr)
		if err == nil || time.Now().After(deadline) {
			return n, err
		}
	}
}

// Diagnose describes the lab's network for an error: neighbours, the
// bridges' forwarding tables, link counters.
func (l *Lab) Diagnose(ctx context.Context) string {
	var b strings.Builder
	for _, c := range [][]string{
		{"ip", "-n", l.NS, "neigh"},
		{"bridge", "-n", l.NS, "fdb", "show", "dynamic"},
		{"ip", "-n", l.NS, "-s", "-br", "link"},
	} {
		out, err := exec.CommandContext(ctx, c[0], c[1:]...).CombinedOutput()
		fmt.Fprintf(&b, "lab$ %s\n%s", strings.Join(c, " "), out)
		if err != nil {
			fmt.Fprintf(&b, "(%v)\n", err)
		}
	}
	return b.String()
}

// VMs are the lab's machines, in the order they were made.
func (l *Lab) VMs() []*VM {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.vms)
}

// onClose registers an undo step; Close runs them last first. After
// Close, the step runs at once.
func (l *Lab) onClose(what string, fn func() error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		_ = fn()
		return
	}
	defer l.mu.Unlock()
	l.undo = append(l.undo, undoStep{what, fn})
}

func (l *Lab) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// Close stops every VM and undoes every step, last first. It is safe to
// call more than once and from the signal handler: a second caller waits
// for the first to finish.
func (l *Lab) Close() error {
	l.closing.Do(func() { l.closeErr = l.teardown() })
	return l.closeErr
}

func (l *Lab) teardown() error {
	l.mu.Lock()
	l.closed = true
	vms := slices.Clone(l.vms)
	undo := l.undo
	l.undo = nil
	l.mu.Unlock()
	var errs []error
	for _, vm := range vms {
		if err := vm.kill(); err != nil {
			errs = append(errs, fmt.Errorf("stop VM %s: %w", vm.Name, err))
		}
	}
	for i := len(undo) - 1; i >= 0; i-- {
		if err := undo[i].fn(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", undo[i].what, err))
		}
	}
	if l.stopSigs != nil {
		l.stopSigs()
	}
	return errors.Join(errs...)
}

// Stopped says why the lab was torn down before its end ("" if it was
// not): a signal, or the test's deadline.
func (l *Lab) Stopped() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stopped
}

// Abort tears the lab down now, saying why; whatever runs sees its VMs
// gone.
func (l *Lab) Abort(why string) error {
	l.mu.Lock()
	if l.stopped == "" {
		l.stopped = why
	}
	l.mu.Unlock()
	fmt.Fprintf(l.Log, "e2e: %s: tearing the lab down\n", why)
	return l.Close()
}

// watchSignals tears the lab down on SIGINT or SIGTERM, then exits with
// the shell's code for the signal: the test framework would not run
// cleanups when the process is interrupted.
func (l *Lab) watchSignals() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	var once sync.Once
	l.stopSigs = func() { once.Do(func() { signal.Stop(ch); close(done) }) }
	go func() {
		select {
		case sig := <-ch:
			if err := l.Abort(sig.String()); err != nil {
				fmt.Fprintf(l.Log, "e2e: teardown: %v\n", err)
			}
			os.Exit(128 + int(sig.(syscall.Signal)))
		case <-done:
		}
	}()
}

// removeStaleLabs deletes the namespaces, /etc/netns entries and work
// directories of labs whose test process is gone: a run killed with
// SIGKILL cannot clean up (its QEMUs died with it: parent-death signal).
func removeStaleLabs(log io.Writer) {
	namespaces, _ := filepath.Glob("/run/netns/" + nsPrefix + "*")
	etc, _ := filepath.Glob("/etc/netns/" + nsPrefix + "*")
	work, _ := filepath.Glob(filepath.Join(os.TempDir(), workPrefix+"*-*"))
	for _, p := range slices.Concat(namespaces, etc, work) {
		name := filepath.Base(p)
		id := strings.TrimPrefix(strings.TrimPrefix(name, nsPrefix), workPrefix)
		id, _, _ = strings.Cut(id, "-")
		pid, err := strconv.Atoi(id)
		if err != nil || pid == os.Getpid() || processAlive(pid) {
			continue
		}
		fmt.Fprintf(log, "e2e: removing %s of a lab whose process %d is gone\n", p, pid)
		if strings.HasPrefix(p, "/run/netns/") {
			err = deleteNamespace(name)
		} else {
			err = os.RemoveAll(p)
		}
		if err != nil {
			fmt.Fprintf(log, "e2e: %v\n", err)
		}
	}
}

// processAlive says whether pid runs a test binary (a recycled pid running
// something else counts as gone).
func processAlive(pid int) bool {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	return err == nil && strings.HasSuffix(exe, ".test")
}

func deleteNamespace(name string) error {
	if _, err := os.Stat(filepath.Join("/run/netns", name)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return run(context.Background(), "ip", "netns", "del", name)
}

// run runs a command on the host and returns an error with its output.
func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// inNamespace runs f on a thread in the named network namespace (the way
// bootstrapd's stages do): sockets and taps it opens stay in that namespace.
func inNamespace(nsName string, f func() error) error {
	h, err := netns.GetFromName(nsName)
	if err != nil {
		return err
	}
	defer h.Close()
	return (&stage.Env{NetNS: h}).InNetNS(f)
}
