package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Firmware: OVMF's code (read-only) and a fresh copy of its variable store
// per flashed disk, as a new machine has.
const (
	OVMFCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	OVMFVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
)

// debugShell is the SMBIOS type 11 string systemd-boot appends to the
// kernel command line of the lab's VMs only: a root shell on ttyS1.
const debugShell = "io.systemd.boot.kernel-cmdline-extra=systemd.debug_shell=/dev/ttyS1"

// NIC is one virtio NIC of a VM, a tap on one of the lab's bridges. The
// first NIC sits behind PCIe root port 1 and the guest names it enp1s0,
// the second enp2s0 (../shared/notes/qemu-reference-vm.md).
type NIC struct {
	MAC    string
	Bridge string
}

// VMSpec is a machine: its disk image, its machine config (on a CIDATA
// volume made by `kubeboot cidata`) and its NICs.
type VMSpec struct {
	Name   string // short (taps are NAME-1, NAME-2): ctl, wrk, cp2, net
	Image  string // the image flashed onto the disk; never written
	Config string // machine config; "" for an image with one baked in (no CIDATA)
	// Background runs QEMU 10 nice levels below the lab (a worker): on
	// two shared cores a booting worker otherwise takes half the CPU of
	// the control plane, whose API server then failed its own start-up
	// checks and restarted in a loop (e2e, 2026-11-29). The worker then
	// boots slowly: docs/e2e.md.
	Background bool
	// KernelArgs are added to the kernel command line (systemd-boot's
	// SMBIOS extra, beside the debug shell), e.g.
	// systemd.mask=bootstrapd.service for make bench-boot's floor.
	KernelArgs string
	// Disk is a raw disk file that `kubeboot flash` wrote (through a loop
	// device), config included: the VM boots it as a machine boots its
	// own disk, with no overlay of Image and no CIDATA volume.
	Disk          string
	NetworkConfig string // netplan v2 file put on the CIDATA volume as network-config
	NICs          []NIC
	MemoryMiB     int
	CPUs          int
	// ClockOffset starts the guest's real-time clock this far from the
	// host's (QEMU -rtc base=): a machine whose clock is wrong.
	ClockOffset time.Duration
}

// VM is a machine of the lab. Its disk is a qcow2 overlay of the image
// (a reflash is a fresh overlay), and QEMU runs inside the lab's
// namespace with parent-death signal SIGKILL, so it never outlives the
// test process.
type VM struct {
	Name   string
	Spec   VMSpec
	lab    *Lab
	dir    string // in the lab's work dir
	LogDir string // out/e2e/NAME

	mu       sync.Mutex
	instance int // QEMU processes started, for log names
	cmd      *exec.Cmd
	exited   chan struct{}
	Started  time.Time // when this QEMU started
	Console  *Console
	Shell    *Shell
	QMP      *QMP
	closers  []io.Closer
}

// NewVM flashes a machine (overlay, firmware vars, CIDATA) and plugs its
// NICs into the bridges; Start powers it on.
func (l *Lab) NewVM(ctx context.Context, spec VMSpec) (*VM, error) {
	if spec.MemoryMiB == 0 {
		spec.MemoryMiB = 3072
	}
	if spec.CPUs == 0 {
		spec.CPUs = 2
	}
	vm := &VM{Name: spec.Name, Spec: spec, lab: l, dir: filepath.Join(l.Work, spec.Name), LogDir: filepath.Join(l.Out, spec.Name)}
	if err := os.MkdirAll(vm.dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.RemoveAll(vm.LogDir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(vm.LogDir, 0o755); err != nil {
		return nil, err
	}
	for i, nic := range spec.NICs {
		if err := l.AddTap(ctx, vm.tap(i), nic.Bridge); err != nil {
			return nil, err
		}
	}
	l.mu.Lock()
	l.vms = append(l.vms, vm)
	l.mu.Unlock()
	if err := vm.flash(ctx); err != nil {
		return nil, err
	}
	return vm, nil
}

func (vm *VM) tap(i int) string { return fmt.Sprintf("%s-%d", vm.Name, i+1) }

// Netdev is QEMU's id of NIC i (for QMP set_link).
func (vm *VM) Netdev(i int) string { return fmt.Sprintf("nic%d", i+1) }

func (vm *VM) path(name string) string { return filepath.Join(vm.dir, name) }

// flash gives the VM a new disk (a fresh overlay of the image, 16 GiB as
// a disk bigger than the image is), a new firmware variable store and a
// CIDATA volume made from the config by `kubeboot cidata`.
func (vm *VM) flash(ctx context.Context) error {
	if vm.Spec.Disk != "" {
		return copyFile(OVMFVars, vm.path("vars.fd"), 0o600)
	}
	base, err := filepath.Abs(vm.Spec.Image)
	if err != nil {
		return err
	}
	format := "raw"
	if strings.HasSuffix(base, ".qcow2") {
		format = "qcow2"
	}
	disk := vm.path("disk.qcow2")
	if err := os.Remove(disk); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := run(ctx, "qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", format, disk, "16G"); err != nil {
		return err
	}
	if err := copyFile(OVMFVars, vm.path("vars.fd"), 0o600); err != nil {
		return err
	}
	if vm.Spec.Config == "" {
		return nil
	}
	args := []string{"cidata", "-o", vm.path("cidata.iso"), "--config", vm.Spec.Config}
	if vm.Spec.NetworkConfig != "" {
		args = append(args, "--network-config", vm.Spec.NetworkConfig)
	}
	return run(ctx, vm.lab.Kubeboot, args...)
}

// Resize grows the VM's disk (the overlay) by delta, e.g. "+4G", as moving
// the node to a bigger disk would; the VM must be off.
func (vm *VM) Resize(ctx context.Context, delta string) error {
	if vm.Spec.Disk != "" {
		return fmt.Errorf("%s: resize of a flashed disk", vm.Name)
	}
	if vm.Running() {
		return fmt.Errorf("%s: resize of a running VM", vm.Name)
	}
	return run(ctx, "qemu-img", "resize", "-q", vm.path("disk.qcow2"), delta)
}

func (vm *VM) qemuArgs() []string {
	s := vm.Spec
	args := []string{
		"-name", s.Name,
		"-machine", "q35", "-accel", "tcg,thread=multi", "-cpu", vm.lab.CPUModel,
		"-smp", fmt.Sprint(s.CPUs), "-m", fmt.Sprint(s.MemoryMiB),
		"-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none",
		"-qmp", "unix:" + vm.path("qmp.sock") + ",server=on,wait=off",
	}
	// Root ports 1-2 for the NICs (enp1s0, enp2s0), 3 for the disk, 4 for
	// CIDATA.
	for i := 1; i <= 4; i++ {
		multi := ""
		if i == 1 {
			multi = ",multifunction=on"
		}
		args = append(args, "-device", fmt.Sprintf("pcie-root-port,id=rp%d,bus=pcie.0,chassis=%d,port=0x%x,addr=0x2.0x%d%s", i, i, 0x10+i-1, i-1, multi))
	}
	for i, nic := range s.NICs {
		args = append(args,
			"-netdev", fmt.Sprintf("tap,id=%s,ifname=%s,script=no,downscript=no", vm.Netdev(i), vm.tap(i)),
			"-device", fmt.Sprintf("virtio-net-pci,netdev=%s,mac=%s,bus=rp%d,addr=0x0", vm.Netdev(i), nic.MAC, i+1))
	}
	disk, format := vm.path("disk.qcow2"), "qcow2"
	if s.Disk != "" {
		disk, format = s.Disk, "raw"
	}
	args = append(args,
		"-drive", "file="+disk+",format="+format+",if=none,id=disk0,cache=unsafe",
		"-device", "virtio-blk-pci,drive=disk0,bus=rp3,addr=0x0,bootindex=1")
	if s.ClockOffset != 0 {
		args = append(args, "-rtc", "base="+time.Now().UTC().Add(s.ClockOffset).Format("2006-01-02T15:04:05"))
	}
	if s.Config != "" {
		args = append(args,
			"-drive", "file="+vm.path("cidata.iso")+",format=raw,if=none,id=disk1,readonly=on",
			"-device", "virtio-blk-pci,drive=disk1,bus=rp4,addr=0x0")
	}
	return append(args,
		"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+OVMFCode,
		"-drive", "if=pflash,format=raw,unit=1,file="+vm.path("vars.fd"),
		"-smbios", "type=11,value="+strings.TrimSpace(debugShell+" "+s.KernelArgs),
		"-chardev", "socket,id=console,path="+vm.path("console.sock"),
		"-serial", "chardev:console",
		"-chardev", "socket,id=shell,path="+vm.path("shell.sock"),
		"-serial", "chardev:shell",
	)
}

// Start powers the VM on. Its console goes to LogDir/serial-N.log (N
// counts the QEMU processes of this VM), the shell transcript to
// shell-N.log, QEMU's own output to qemu-N.log.
func (vm *VM) Start(ctx context.Context) error {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.cmd != nil {
		return fmt.Errorf("%s is running", vm.Name)
	}
	if vm.lab.isClosed() {
		return fmt.Errorf("start %s: the lab is torn down", vm.Name)
	}
	vm.instance++
	n := vm.instance
	var closers []io.Closer
	fail := func(err error) error {
		for _, c := range closers {
			c.Close()
		}
		return fmt.Errorf("start %s: %w", vm.Name, err)
	}
	logFile := func(name string) (*os.File, error) {
		f, err := os.Create(filepath.Join(vm.LogDir, fmt.Sprintf("%s-%d.log", name, n)))
		if err == nil {
			closers = append(closers, f)
		}
		return f, err
	}
	serialLog, err := logFile("serial")
	if err != nil {
		return fail(err)
	}
	shellLog, err := logFile("shell")
	if err != nil {
		return fail(err)
	}
	qemuLog, err := logFile("qemu")
	if err != nil {
		return fail(err)
	}
	// QEMU connects to the lab's listeners as it starts, so no byte of
	// the firmware's output is lost.
	listen := func(name string) (*net.UnixListener, error) {
		p := vm.path(name)
		os.Remove(p)
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
		if err == nil {
			closers = append(closers, ln)
		}
		return ln, err
	}
	conLn, err := listen("console.sock")
	if err != nil {
		return fail(err)
	}
	shLn, err := listen("shell.sock")
	if err != nil {
		return fail(err)
	}
	os.Remove(vm.path("qmp.sock"))

	argv := []string{"netns", "exec", vm.lab.NS}
	if vm.Spec.Background {
		// nice execs QEMU: the same pid, and its threads start at that level.
		argv = append(argv, "nice", "-n", "10")
	}
	argv = append(append(argv, "qemu-system-x86_64"), vm.qemuArgs()...)
	cmd := exec.Command("ip", argv...)
	cmd.Stdout, cmd.Stderr = qemuLog, qemuLog
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return fail(err)
	}
	exited := make(chan struct{})
	go func() {
		err := cmd.Wait()
		fmt.Fprintf(qemuLog, "qemu exited: %v\n", err)
		close(exited)
	}()
	vm.lab.Memory.Track(vm.Name, cmd.Process.Pid)
	accept := func(ln *net.UnixListener) (net.Conn, error) {
		if err := ln.SetDeadline(time.Now().Add(60 * time.Second)); err != nil {
			return nil, err
		}
		c, err := ln.Accept()
		if err != nil {
			return nil, fmt.Errorf("QEMU did not connect to %s (see %s): %w", ln.Addr(), qemuLog.Name(), err)
		}
		closers = append(closers, c)
		return c, nil
	}
	abort := func(err error) error {
		cmd.Process.Signal(syscall.SIGKILL)
		<-exited
		vm.lab.Memory.Untrack(vm.Name)
		return fail(err)
	}
	con, err := accept(conLn)
	if err != nil {
		return abort(err)
	}
	sh, err := accept(shLn)
	if err != nil {
		return abort(err)
	}
	qctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	q, err := dialQMP(qctx, vm.path("qmp.sock"))
	if err != nil {
		return abort(err)
	}
	closers = append(closers, q)
	vm.cmd, vm.exited, vm.Started, vm.closers = cmd, exited, start, closers
	vm.Console = newConsole(con, start, serialLog)
	vm.Shell = newShell(sh, shellLog)
	vm.QMP = q
	disk := "an overlay of " + filepath.Base(vm.Spec.Image)
	if vm.Spec.Disk != "" {
		disk = filepath.Base(vm.Spec.Disk) + ", flashed"
	}
	fmt.Fprintf(vm.lab.Log, "e2e: %s: QEMU started (pid %d, %d MiB, disk %s)\n", vm.Name, cmd.Process.Pid, vm.Spec.MemoryMiB, disk)
	return nil
}

// Running says whether QEMU runs.
func (vm *VM) Running() bool {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.cmd != nil
}

// Exited is closed when QEMU exits (nil before Start).
func (vm *VM) Exited() <-chan struct{} {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.exited
}

// WaitBoot waits for the kernel of the boot whose console output starts at
// line from, then for the debug shell. Keystrokes must not reach the
// firmware or systemd-boot, which read every serial port.
func (vm *VM) WaitBoot(ctx context.Context, from int) (ConsoleLine, error) {
	l, _, err := vm.Console.WaitFor(ctx, from, "Linux version")
	if err != nil {
		return l, fmt.Errorf("%s: the kernel did not start: %w", vm.Name, err)
	}
	if err := vm.Shell.Init(ctx); err != nil {
		return l, fmt.Errorf("%s: %w", vm.Name, err)
	}
	return l, nil
}

// Run runs a bash script in the guest (at most limit).
func (vm *VM) Run(ctx context.Context, script string, limit time.Duration) (Result, error) {
	r, err := vm.Shell.Run(ctx, script, limit)
	if err != nil {
		return r, fmt.Errorf("%s: %w", vm.Name, err)
	}
	return r, nil
}

// Check runs script and wants exit status 0; it returns the output.
func (vm *VM) Check(ctx context.Context, script string, limit time.Duration) (string, error) {
	r, err := vm.Run(ctx, script, limit)
	if err != nil {
		return r.String(), err
	}
	if r.Code != 0 {
		return r.String(), fmt.Errorf("%s: `%s` exited %d: %s", vm.Name, firstLine(script), r.Code, tail(r.String(), 15))
	}
	return r.String(), nil
}

// Reboot reboots the guest from its shell; the next boot's console starts
// at the line it returns (for WaitBoot).
func (vm *VM) Reboot(ctx context.Context) int {
	mark := vm.Console.Mark()
	vm.Shell.Detach("systemctl reboot")
	return mark
}

// Poweroff shuts the guest down cleanly and waits for QEMU to exit.
func (vm *VM) Poweroff(ctx context.Context) error {
	vm.Shell.Detach("systemctl poweroff")
	select {
	case <-vm.Exited():
	case <-time.After(3 * time.Minute):
		return errors.Join(fmt.Errorf("%s did not power off within 3 minutes", vm.Name), vm.kill())
	case <-ctx.Done():
		return errors.Join(ctx.Err(), vm.kill())
	}
	return vm.kill()
}

// Reflash cuts the power, puts a fresh overlay of the image (and a fresh
// firmware store and CIDATA volume from the same config) in place of the
// disk, and powers the VM on: a dead node replaced by a new one.
func (vm *VM) Reflash(ctx context.Context) error {
	if vm.Spec.Disk != "" {
		return fmt.Errorf("%s: its disk was written by kubeboot flash; the lab reflashes overlays only", vm.Name)
	}
	if err := vm.kill(); err != nil {
		return err
	}
	if err := vm.flash(ctx); err != nil {
		return err
	}
	return vm.Start(ctx)
}

// kill stops QEMU by its pid (SIGKILL: a power cut) and closes its
// sockets and logs.
func (vm *VM) kill() error {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.cmd == nil {
		return nil
	}
	select {
	case <-vm.exited:
	default:
		if err := vm.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return err
		}
		select {
		case <-vm.exited:
		case <-time.After(30 * time.Second):
			return fmt.Errorf("QEMU (pid %d) did not exit after SIGKILL", vm.cmd.Process.Pid)
		}
	}
	vm.lab.Memory.Untrack(vm.Name)
	for _, c := range vm.closers {
		c.Close()
	}
	vm.cmd, vm.closers = nil, nil
	return nil
}

// Kill cuts the power.
func (vm *VM) Kill() error { return vm.kill() }

func copyFile(from, to string, mode os.FileMode) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, mode)
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	if len(l) > 120 {
		l = l[:120] + "..."
	}
	return l
}
