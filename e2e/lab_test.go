package e2e

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"kubeboot.dev/kubeboot/internal/cachetest"
	"kubeboot.dev/kubeboot/internal/secrettest"
	"kubeboot.dev/kubeboot/machineconfig"
)

// scenario is one step of the lab's story, with its own time limit. A
// scenario whose needs did not pass is not run (the report says why).
type scenario struct {
	name, title string
	limit       time.Duration
	needs       []string
	// onlyNamed: run only when named in KUBEBOOT_E2E_SCENARIOS (make
	// bench-boot's floor, make faults' power cuts), not by make e2e.
	onlyNamed bool
	run       func(s *sc, ctx context.Context) error
}

// The scenarios, in order (issue 9). The limits are for TCG on two shared
// cores: a control plane's first boot took 6-7 minutes from power-on to
// coredns running (../shared/notes/kubeadm-under-qemu.md), two VMs booting
// at once each boot half as fast.
var scenarios = []scenario{
	{name: "controller", title: "configs/controller.yaml (init) reaches Ready; kube-system runs; kubectl from the lab",
		limit: 45 * time.Minute, run: (*sc).controller},
	{name: "worker", title: "configs/worker.yaml joins and is Ready; pods across nodes, cluster DNS, pod CIDR",
		limit: 35 * time.Minute, needs: []string{"controller"}, run: (*sc).worker},
	{name: "worker-reflash", title: "the worker is reflashed and rejoins with no keystroke; no stale Node",
		limit: 35 * time.Minute, needs: []string{"worker"}, run: (*sc).workerReflash},
	{name: "control-plane", title: "configs/control-plane.yaml joins (etcd 2 members), is reflashed and rejoins (exactly 2 healthy members)",
		limit: 70 * time.Minute, needs: []string{"controller"}, run: (*sc).controlPlane},
	{name: "reboot", title: "the controller reboots: bootstrapd changes nothing, the cluster is Ready again",
		limit: 35 * time.Minute, needs: []string{"controller"}, run: (*sc).reboot},
	{name: "access", title: "two machines from one image (an overlay with CIDATA; a disk kubeboot flash wrote), clocks 1 h ahead: NTP sync from the lab before Kubernetes; SSH with the configured key only; a pod's image through the lab's registry mirror; different host keys",
		limit: 40 * time.Minute, run: (*sc).access},
	{name: "network", title: "active-backup bond with a VLAN: native config baked in, then netplan v2 on CIDATA; reboot, disk growth",
		limit: 45 * time.Minute, run: (*sc).network},
	{name: "floor", title: "bench-boot's floor: the controller's image with bootstrapd masked, the reference's steps by script, kubeadm init with the same config",
		limit: 45 * time.Minute, needs: []string{"controller"}, onlyNamed: true, run: (*sc).floor},
	{name: "powercut", title: "a controller's first boot has its power cut at each of 7 points, booting again after each, then converges: Ready, kube-system running, bootstrapd verify as on an uninterrupted boot",
		limit: 75 * time.Minute, onlyNamed: true, run: (*sc).powercut},
}

// env is what the scenarios share: the lab, the cluster's nodes, the
// admin kubeconfig copied out of the controller.
type env struct {
	t          *testing.T
	lab        *Lab
	repo       string
	image      string // out/node.qcow2
	report     *Report
	kubectlBin string
	kubeconfig string // the admin's, copied out of the controller (0600 in the lab's 0700 work dir)
	secrets    secrettest.Scanner
	tokenID    string // the bundle's bootstrap token id (its public half)
	nodes      map[string]*node
}

// node is a VM of the cluster with its machine config.
type node struct {
	vm     *VM
	cfg    *machineconfig.MachineConfig
	config string // the config file
	addr   string // enp1s0's address (without prefix): how the lab reaches it
	member bool   // joined and was Ready: later scenarios expect it
}

// sc is one scenario's run.
type sc struct {
	*env
	rep   *ScenarioReport
	start time.Time
	boots []*boot
}

// TestLab runs the end-to-end scenarios under QEMU. It needs root, the
// image (make image), bin/kubeboot and the host tools of
// scripts/setup-host.sh; it writes out/e2e/report.json and keeps every
// node's serial console (and on failure its journal and bootstrapd status)
// under out/e2e/NODE/.
//
//	KUBEBOOT_E2E=1 flock /work/locks/qemu go test ./e2e -run TestLab -v -timeout 5h
//
// KUBEBOOT_E2E_SCENARIOS=network,controller runs only the named ones
// (and floor and powercut only when named); KUBEBOOT_E2E_OUT puts the report
// and evidence elsewhere (make bench-boot: out/bench-boot);
// KUBEBOOT_E2E_CPU sets QEMU's -cpu model (default max).
func TestLab(t *testing.T) {
	if os.Getenv("KUBEBOOT_E2E") != "1" {
		t.Skip("boots QEMU VMs for an hour or more: set KUBEBOOT_E2E=1 (make e2e); see docs/e2e.md")
	}
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, repo: repo, image: filepath.Join(repo, "out/node.qcow2"), nodes: map[string]*node{}}
	e.requireHost()
	e.report = newReport(e.image)

	lab, err := New(context.Background(), Options{
		Repo: repo, Out: cmp.Or(os.Getenv("KUBEBOOT_E2E_OUT"), filepath.Join(repo, "out/e2e")), Kubeboot: filepath.Join(repo, "bin/kubeboot"), Log: os.Stdout,
		CPUModel: os.Getenv("KUBEBOOT_E2E_CPU"),
	})
	if err != nil {
		t.Fatal(err)
	}
	e.lab = lab
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Errorf("lab teardown: %v", err)
			e.report.Teardown = err.Error()
		}
	})
	// go test's own timeout kills the process without cleanups: stop
	// everything a little before it.
	if deadline, ok := t.Deadline(); ok {
		stop := time.AfterFunc(time.Until(deadline)-2*time.Minute, func() {
			lab.Abort("the test's -timeout is 2 minutes away")
		})
		t.Cleanup(func() { stop.Stop() })
	}

	selected := os.Getenv("KUBEBOOT_E2E_SCENARIOS")
	passed := map[string]bool{}
	for _, scn := range scenarios {
		rep := &ScenarioReport{Name: scn.name, Title: scn.title, LimitSeconds: scn.limit.Seconds(), Checks: []string{}}
		e.report.Scenarios = append(e.report.Scenarios, rep)
		named := slices.Contains(strings.Split(selected, ","), scn.name)
		switch {
		case selected != "" && !named:
			rep.NotRun = "not selected (KUBEBOOT_E2E_SCENARIOS=" + selected + ")"
			continue
		case scn.onlyNamed && !named:
			rep.NotRun = "not selected: run only when named (make bench-boot, make faults)"
			continue
		}
		if i := slices.IndexFunc(scn.needs, func(n string) bool { return !passed[n] }); i >= 0 {
			rep.NotRun = fmt.Sprintf("needs scenario %q, which did not pass", scn.needs[i])
			fmt.Printf("e2e: %s: NOT RUN: %s\n", scn.name, rep.NotRun)
			continue
		}
		passed[scn.name] = e.runScenario(scn, rep)
		// A run stopped later (Ctrl-C, the deadline) keeps what ended.
		e.report.Seconds = time.Since(e.report.Started).Seconds()
		if err := e.report.Write(filepath.Join(lab.Out, "report.json")); err != nil {
			t.Error(err)
		}
	}
	e.report.Complete = true
	e.report.Seconds = time.Since(e.report.Started).Seconds()
	e.report.Passed = e.scanForSecrets(lab.Out)
	for _, s := range e.report.Scenarios {
		if !strings.HasPrefix(s.NotRun, "not selected") {
			e.report.Passed = e.report.Passed && s.Passed
		}
	}
	if err := e.report.Write(filepath.Join(lab.Out, "report.json")); err != nil {
		t.Error(err)
	}
	e.report.Summary(os.Stdout, filepath.Join(lab.Out, "report.json"))
}

// scanForSecrets looks for the cluster bundle's secrets in every file the
// run kept (consoles, shell transcripts, journals and status of failed
// nodes): there must be none, whatever the file's mode, since out/e2e is
// meant to be shared. It reports false on a hit or a failed scan.
func (e *env) scanForSecrets(out string) bool {
	if e.secrets == nil {
		return true
	}
	hits, err := e.secrets.ScanTree(out)
	switch {
	case err != nil:
		e.report.Secrets = fmt.Sprintf("scan of %s failed: %v", out, err)
	case len(hits) > 0:
		e.report.Secrets = fmt.Sprintf("%d secrets found under %s: first %v", len(hits), out, hits[0])
	default:
		e.report.Secrets = fmt.Sprintf("none of the bundle's secrets in any file under %s", out)
		return true
	}
	e.t.Error(e.report.Secrets)
	return false
}

// requireHost fails (not skips: KUBEBOOT_E2E=1 asked for the lab) when the
// machine cannot run it, naming what is missing.
func (e *env) requireHost() {
	t := e.t
	if os.Geteuid() != 0 {
		t.Fatal("the lab needs root (network namespace, taps)")
	}
	for _, tool := range []string{"qemu-system-x86_64", "qemu-img", "ip", "busybox", "socat", "ssh", "ssh-keygen", "ssh-keyscan", "systemd-nspawn", "mmdebstrap"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing: run scripts/setup-host.sh", tool)
		}
	}
	for _, f := range []string{OVMFCode, OVMFVars} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("%v: run scripts/setup-host.sh (package ovmf)", err)
		}
	}
	if _, err := os.Stat(e.image); err != nil {
		t.Fatalf("%v: run make image", err)
	}
	if _, err := os.Stat(filepath.Join(e.repo, "bin/kubeboot")); err != nil {
		t.Fatalf("%v: run make build", err)
	}
	// The pinned kubectl; cachetest skips what is not built, and a skipped
	// subtest leaves the path empty.
	t.Run("kubectl", func(t *testing.T) { e.kubectlBin = cachetest.File(t, "kubectl") })
	if e.kubectlBin == "" {
		t.Fatal("the pinned kubectl is not in the artifact cache: run make artifacts")
	}
}

// runScenario runs one scenario within its limit, prints its pass/fail
// line, and on failure keeps every running node's evidence.
func (e *env) runScenario(scn scenario, rep *ScenarioReport) bool {
	s := &sc{env: e, rep: rep, start: time.Now()}
	fmt.Printf("e2e: %s: start (limit %s): %s\n", scn.name, scn.limit, scn.title)
	e.lab.Memory.Window()
	ctx, cancel := context.WithTimeout(context.Background(), scn.limit)
	err := func() (err error) {
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("panic: %v", p)
			}
		}()
		return scn.run(s, ctx)
	}()
	cancel()
	rep.Seconds = time.Since(s.start).Seconds()
	rep.Memory = e.lab.Memory.Window()
	if why := e.lab.Stopped(); err != nil && why != "" {
		err = fmt.Errorf("the lab was torn down (%s): %w", why, err)
	}
	if err != nil {
		rep.Error = err.Error()
		e.t.Errorf("scenario %s: %v", scn.name, err)
		fmt.Printf("e2e: %s: FAIL after %.0f s: %v\n", scn.name, rep.Seconds, err)
		s.timingsOfFailedBoots()
		for _, vm := range e.lab.VMs() {
			rep.Evidence = append(rep.Evidence, vm.Evidence(context.Background())...)
		}
		return false
	}
	rep.Passed = true
	fmt.Printf("e2e: %s: PASS in %.0f s\n", scn.name, rep.Seconds)
	return true
}

// timingsOfFailedBoots reads what the guests know of the boots a failure
// cut short (the last boot of each running VM), best effort.
func (s *sc) timingsOfFailedBoots() {
	last := map[*VM]*boot{}
	for _, b := range s.boots {
		last[b.vm] = b
	}
	for vm, b := range last {
		if vm.Running() && len(b.Stages) == 0 {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			_ = vm.Timings(ctx, b.BootReport)
			cancel()
		}
	}
}

// ok records a check that held.
func (s *sc) ok(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.rep.Checks = append(s.rep.Checks, msg)
	fmt.Printf("e2e: %s: ok: %s\n", s.rep.Name, msg)
}

// oks records several.
func (s *sc) oks(prefix string, checks []string) {
	for _, c := range checks {
		s.ok("%s%s", prefix, c)
	}
}

// boot is the timing record of a boot of vm; origin is the moment the boot
// began (QEMU's start, or the reboot command).
type boot struct {
	*BootReport
	vm     *VM
	origin time.Time
	mark   int // the boot's first console line
}

func (s *sc) newBoot(vm *VM, kind string, origin time.Time, mark int) *boot {
	b := &boot{BootReport: &BootReport{Node: vm.Name, Boot: kind}, vm: vm, origin: origin, mark: mark}
	if mark == 0 {
		b.QEMUStartedAt = vm.Started.Sub(s.start).Seconds()
	}
	s.rep.Boots = append(s.rep.Boots, b.BootReport)
	s.boots = append(s.boots, b)
	return b
}

func (b *boot) since(t time.Time) float64 { return t.Sub(b.origin).Seconds() }

// consoleAt converts a console line's time into seconds since origin.
func (b *boot) consoleAt(l ConsoleLine) float64 { return b.since(b.vm.Started.Add(l.At)) }

// awaitHost waits for the boot's kernel, the debug shell and bootstrapd's
// host phase.
func (s *sc) awaitHost(ctx context.Context, b *boot) error {
	kl, err := b.vm.WaitBoot(ctx, b.mark)
	if err != nil {
		return err
	}
	b.KernelAt = b.consoleAt(kl)
	b.ShellAt = b.since(time.Now())
	if b.mark == 0 {
		if l, _, ok := b.vm.Console.Find(0, ""); ok {
			b.FirmwareAt = b.consoleAt(l)
		}
	}
	if _, err := b.vm.WaitBootstrapd(ctx, "host"); err != nil {
		return err
	}
	b.HostPhaseAt = b.since(time.Now())
	if l, _, ok := b.vm.Console.Find(b.mark, " login: "); ok {
		b.LoginAt = b.consoleAt(l)
	}
	s.ok("%s: booted (kernel at %.0f s), bootstrapd's host phase through at %.0f s", b.vm.Name, b.KernelAt, b.HostPhaseAt)
	return nil
}

// finish reads the guest's timings into the boot's record.
func (s *sc) finish(ctx context.Context, b *boot) error {
	return b.vm.Timings(ctx, b.BootReport)
}

// loadConfig reads a machine config with the secrets bundle it names.
func (e *env) loadConfig(path string) (*machineconfig.MachineConfig, error) {
	if !filepath.IsAbs(path) {
		path = filepath.Join(e.repo, path)
	}
	return machineconfig.LoadWithFiles(path)
}

// nicsOf are the VM's NICs for cfg: one per interface matched by MAC, in
// order (enp1s0, enp2s0), on the bridges given.
func nicsOf(cfg *machineconfig.MachineConfig, bridges ...string) ([]NIC, error) {
	var nics []NIC
	for _, it := range cfg.Network.Interfaces {
		if it.Match == nil || it.Match.MACAddress == "" {
			continue
		}
		if len(nics) == len(bridges) {
			return nil, fmt.Errorf("the config has more NICs matched by MAC than the lab gives the VM (%d)", len(bridges))
		}
		nics = append(nics, NIC{MAC: it.Match.MACAddress, Bridge: bridges[len(nics)]})
	}
	if len(nics) != len(bridges) {
		return nil, fmt.Errorf("the config matches %d NICs by MAC, the lab gives the VM %d", len(nics), len(bridges))
	}
	return nics, nil
}

// checkHostname: the kernel's hostname is the config's.
func (s *sc) checkHostname(ctx context.Context, vm *VM, cfg *machineconfig.MachineConfig) error {
	out, err := vm.Check(ctx, "hostname", time.Minute)
	if err != nil {
		return err
	}
	if out != cfg.Hostname {
		return fmt.Errorf("%s: hostname %q, want %s", vm.Name, out, cfg.Hostname)
	}
	s.ok("%s: hostname %s", vm.Name, out)
	return nil
}

// checkSystem: systemd finished the boot with multi-user.target active and
// no failed unit; a node that cannot join (the network scenario's, with no
// control plane) may have bootstrapd.service failed, and only that.
func (s *sc) checkSystem(ctx context.Context, vm *VM, joins bool) error {
	state, failed, err := vm.SystemState(ctx, 10*time.Minute)
	if err != nil {
		return err
	}
	if _, err := vm.Check(ctx, "systemctl is-active multi-user.target", time.Minute); err != nil {
		return err
	}
	allowed := []string{}
	if !joins {
		allowed = append(allowed, "bootstrapd.service")
	}
	for _, u := range failed {
		if !slices.Contains(allowed, u) {
			out, _ := vm.Check(ctx, "systemctl status --no-pager -n 20 "+u, time.Minute)
			return fmt.Errorf("%s: unit %s failed (system %s):\n%s", vm.Name, u, state, out)
		}
	}
	if joins && state != "running" {
		return fmt.Errorf("%s: systemd's state is %q, want running", vm.Name, state)
	}
	s.ok("%s: multi-user.target active, system %s, failed units: %s", vm.Name, state, orNone(failed))
	return nil
}

func orNone(l []string) string {
	if len(l) == 0 {
		return "none"
	}
	return strings.Join(l, ", ")
}

// checkNetwork: the config's network is in place and every static IPv4
// address on a lab bridge answers ping from the lab.
func (s *sc) checkNetwork(ctx context.Context, vm *VM, cfg *machineconfig.MachineConfig) error {
	checked, err := vm.CheckNetwork(ctx, cfg)
	if err != nil {
		return err
	}
	s.ok("%s: network as configured: %s", vm.Name, strings.Join(checked, "; "))
	var pinged []string
	for _, l := range cfg.Network.Links() {
		for _, a := range l.Addresses {
			ip, _, _ := strings.Cut(a, "/")
			n, err := s.lab.Ping(ctx, ip)
			if err != nil {
				guest, _ := vm.Check(ctx, "ip -s link; ip neigh; cat /proc/net/bonding/* 2>/dev/null", time.Minute)
				return fmt.Errorf("%s: %s (%s) does not answer ping from the lab for 30 s: %w\n%s\n%s$ ip -s link; ip neigh; /proc/net/bonding/*\n%s", vm.Name, ip, l.Name, err, s.lab.Diagnose(ctx), vm.Name, guest)
			}
			if n > 1 {
				ip += fmt.Sprintf(" (after %d pings)", n)
			}
			pinged = append(pinged, ip)
		}
	}
	s.ok("%s: answers ping from the lab on %s", vm.Name, strings.Join(pinged, ", "))
	return nil
}
