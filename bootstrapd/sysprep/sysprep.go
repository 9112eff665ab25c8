// Package sysprep is the stage that gives the kernel what Kubernetes needs
// and `kubeadm init phase preflight` checks for, now and on later boots:
//
//   - modules overlay (containerd's snapshotter) and br_netfilter (bridged
//     pod traffic through iptables), plus the config's system.modules:
//     loaded now, listed in /etc/modules-load.d/kubeboot.conf;
//   - sysctls net.ipv4.ip_forward=1 (preflight's FileContent check),
//     net.bridge.bridge-nf-call-ip{,6}tables=1, IPv6 forwarding when the
//     cluster uses IPv6 (preflight checks it then), plus system.sysctls:
//     written to /proc/sys now, listed in /etc/sysctl.d/90-kubeboot.conf;
//   - swap off (preflight's Swap check): every active swap is turned off and
//     swap.target is masked so no swap unit starts on later boots.
//
// The rest of preflight (CPU and memory, free ports, kubelet enabled, the
// runtime socket, tools in PATH, kernel config) is either fixed by the
// image or cannot be fixed on a running node.
package sysprep

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"kubeboot.dev/kubeboot/atomicfile"
	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/machineconfig"
)

// Files written under the root.
const (
	ModulesFile = "/etc/modules-load.d/kubeboot.conf"
	SysctlFile  = "/etc/sysctl.d/90-kubeboot.conf"
	// SwapMask masks swap.target: swap units are pulled in only by it.
	SwapMask = "/etc/systemd/system/swap.target"
)

// RequiredModules are always loaded.
var RequiredModules = []string{"overlay", "br_netfilter"}

// builtinWitness names, for modules that may be built in without showing
// under /sys/module (a built-in module appears there only when it has
// parameters), a procfs path that exists once the module's code runs.
var builtinWitness = map[string]func(env *stage.Env) bool{
	"br_netfilter": func(env *stage.Env) bool { return exists(env.ProcPath("sys/net/bridge")) },
	"overlay": func(env *stage.Env) bool {
		data, _ := os.ReadFile(env.ProcPath("filesystems"))
		return bytes.Contains(data, []byte("\toverlay\n"))
	},
}

// Stage is the sysprep stage.
type Stage struct{}

// New returns the sysprep stage.
func New() stage.Stage { return Stage{} }

func (Stage) Name() string { return "sysprep" }

// Modules returns the modules the config needs, required ones first.
func Modules(cfg *machineconfig.MachineConfig) []string {
	out := slices.Clone(RequiredModules)
	for _, m := range cfg.System.Modules {
		if !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	return out
}

// Sysctls returns the settings the config needs, required ones first, then
// the config's in key order.
func Sysctls(cfg *machineconfig.MachineConfig) []machineconfig.Sysctl {
	out := slices.Clone(cfg.RequiredSysctls())
	for _, k := range slices.Sorted(maps.Keys(cfg.System.Sysctls)) {
		if !slices.ContainsFunc(out, func(s machineconfig.Sysctl) bool { return s.Key == k }) {
			out = append(out, machineconfig.Sysctl{Key: k, Value: cfg.System.Sysctls[k]})
		}
	}
	return out
}

// Inputs: the kernel settings the config asks for, and the cluster's
// address families (IPv6 forwarding).
func (Stage) Inputs(cfg *machineconfig.MachineConfig) any {
	return struct {
		System machineconfig.System
		IPv6   bool
	}{cfg.System, cfg.UsesIPv6()}
}

func (s Stage) Plan(_ context.Context, env *stage.Env) ([]stage.Change, error) {
	return s.run(env, false)
}

func (s Stage) Apply(_ context.Context, env *stage.Env) ([]stage.Change, error) {
	return s.run(env, true)
}

// run finds, and with apply makes, every change; modules come before
// sysctls because net.bridge.* exists only once br_netfilter runs.
func (Stage) run(env *stage.Env, apply bool) ([]stage.Change, error) {
	var changes []stage.Change
	add := func(format string, a ...any) { changes = append(changes, stage.Change(fmt.Sprintf(format, a...))) }

	mods := Modules(env.Config)
	for _, m := range mods {
		present, err := moduleLoaded(env, m)
		if err != nil {
			return changes, err
		}
		if present {
			continue
		}
		add("load kernel module %s", m)
		if apply {
			if err := loadModule(env, m); err != nil {
				return changes, err
			}
		}
	}
	var modConf strings.Builder
	modConf.WriteString("# Written by bootstrapd: kernel modules Kubernetes needs, loaded at boot.\n")
	for _, m := range mods {
		modConf.WriteString(m + "\n")
	}
	if c, err := syncFile(env, ModulesFile, modConf.String(), apply); err != nil {
		return changes, err
	} else if c != "" {
		changes = append(changes, c)
	}

	sysctls := Sysctls(env.Config)
	err := env.InNetNS(func() error {
		for _, s := range sysctls {
			path := env.ProcPath(filepath.Join("sys", sysctlPath(s.Key)))
			cur, err := os.ReadFile(path)
			if errors.Is(err, fs.ErrNotExist) && !apply {
				// The module that provides it is not loaded yet.
				add("sysctl %s: (absent) -> %s", s.Key, s.Value)
				continue
			}
			if err != nil {
				return fmt.Errorf("sysctl %s: %w (is the module providing it loaded?)", s.Key, err)
			}
			if machineconfig.NormalizeSysctl(string(cur)) == machineconfig.NormalizeSysctl(s.Value) {
				continue
			}
			add("sysctl %s: %s -> %s", s.Key, machineconfig.NormalizeSysctl(string(cur)), s.Value)
			if apply {
				if err := os.WriteFile(path, []byte(s.Value+"\n"), 0); err != nil {
					return fmt.Errorf("sysctl %s=%s: %w", s.Key, s.Value, err)
				}
			}
		}
		return nil
	})
	if err != nil {
		return changes, err
	}
	var sysConf strings.Builder
	sysConf.WriteString("# Written by bootstrapd: kernel settings Kubernetes needs, applied at boot by systemd-sysctl.\n")
	for _, s := range sysctls {
		fmt.Fprintf(&sysConf, "%s = %s\n", s.Key, s.Value)
	}
	if c, err := syncFile(env, SysctlFile, sysConf.String(), apply); err != nil {
		return changes, err
	} else if c != "" {
		changes = append(changes, c)
	}

	swaps, err := activeSwaps(env)
	if err != nil {
		return changes, err
	}
	for _, sw := range swaps {
		add("swap off %s", sw)
		if apply {
			if err := swapoff(sw); err != nil {
				return changes, fmt.Errorf("swapoff %s: %w", sw, err)
			}
		}
	}
	if target, _ := os.Readlink(env.Path(SwapMask)); target != "/dev/null" {
		add("mask swap.target (%s -> /dev/null) so swap stays off on later boots", SwapMask)
		if apply {
			if err := maskUnit(env.Path(SwapMask)); err != nil {
				return changes, err
			}
		}
	}
	return changes, nil
}

// moduleLoaded reports whether m is loaded or built in.
func moduleLoaded(env *stage.Env, m string) (bool, error) {
	name := strings.ReplaceAll(m, "-", "_")
	if exists(env.SysPath(filepath.Join("module", name))) {
		return true, nil
	}
	if w := builtinWitness[name]; w != nil && w(env) {
		return true, nil
	}
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return false, err
	}
	builtin, err := os.ReadFile(env.Path(filepath.Join("/lib/modules", unix.ByteSliceToString(uts.Release[:]), "modules.builtin")))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	sc := bufio.NewScanner(bytes.NewReader(builtin))
	for sc.Scan() {
		if strings.ReplaceAll(strings.TrimSuffix(filepath.Base(sc.Text()), ".ko"), "-", "_") == name {
			return true, nil
		}
	}
	return false, nil
}

// loadModule runs modprobe rather than finit_module(2): modprobe resolves
// dependencies (br_netfilter needs bridge), decompresses .ko.xz/.ko.zst and
// honours modprobe.d options and blacklists, all of which a bare syscall
// would have to reimplement. kmod is part of the image.
func loadModule(env *stage.Env, m string) error {
	if !exists(env.ProcPath("modules")) {
		return fmt.Errorf("kernel module %s: not built in, and this kernel cannot load modules (no /proc/modules); use a kernel with %s", m, m)
	}
	// "--": a name is never an option, whatever passed validation.
	out, err := exec.Command("modprobe", "--", m).CombinedOutput()
	if err != nil {
		return fmt.Errorf("modprobe %s: %w: %s", m, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// activeSwaps lists the swap devices and files in /proc/swaps.
func activeSwaps(env *stage.Env) ([]string, error) {
	data, err := os.ReadFile(env.ProcPath("swaps"))
	if err != nil {
		return nil, fmt.Errorf("list swaps: %w", err)
	}
	var out []string
	for i, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if i == 0 || len(f) == 0 { // header
			continue
		}
		out = append(out, unescapeOctal(f[0]))
	}
	return out, nil
}

// unescapeOctal undoes the kernel's \040-style escaping of paths in /proc.
func unescapeOctal(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// swapoff is swapoff(2); x/sys/unix has no wrapper for it.
func swapoff(path string) error {
	p, err := unix.BytePtrFromString(path)
	if err != nil {
		return err
	}
	if _, _, errno := unix.Syscall(unix.SYS_SWAPOFF, uintptr(unsafe.Pointer(p)), 0, 0); errno != 0 {
		return errno
	}
	return nil
}

func maskUnit(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".kubeboot-tmp"
	os.Remove(tmp)
	if err := os.Symlink("/dev/null", tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("mask %s: %w", path, err)
	}
	return atomicfile.SyncDir(filepath.Dir(path))
}

// syncFile makes the file at p (under the root) hold content.
func syncFile(env *stage.Env, p, content string, apply bool) (stage.Change, error) {
	cur, err := os.ReadFile(env.Path(p))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	if string(cur) == content {
		return "", nil
	}
	if apply {
		if err := atomicfile.Write(env.Path(p), []byte(content), 0o644, 0o755); err != nil {
			return "", fmt.Errorf("write %s: %w", p, err)
		}
	}
	return stage.Change("write " + p), nil
}

// sysctlPath turns a sysctl name into its /proc/sys path. Like sysctl(8), a
// name with "/" is taken as a path, so interface names with dots work
// (net/ipv4/conf/enp1s0.100/rp_filter).
func sysctlPath(key string) string {
	if strings.Contains(key, "/") {
		return key
	}
	return strings.ReplaceAll(key, ".", "/")
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
