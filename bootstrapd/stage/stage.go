// Package stage is the contract between bootstrapd's engine and the
// packages that change the host (hostname, network, firewall, sysprep, ...).
// Stages act only through Env: files under Env.Root, kernel objects through
// handles bound to Env.NetNS, so tests run the real code against a temporary
// root and a network namespace they made.
package stage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime"

	"github.com/vishvananda/netns"

	"kubeboot.dev/kubeboot/machineconfig"
)

// Env is everything a stage may act through.
type Env struct {
	// Root is the directory that stands for "/" when writing files.
	Root string
	// NetNS is the network namespace for netlink/nftables handles;
	// netns.None() means the namespace of the calling process.
	NetNS netns.NsHandle
	// Config is the validated machine config being applied.
	Config *machineconfig.MachineConfig
	// Log never receives secret values (machineconfig.Secret redacts itself).
	Log *slog.Logger
	// Proc and Sys are where procfs and sysfs are read and written; ""
	// means /proc and /sys. Unlike Root they default to the running kernel
	// even when Root is a temporary directory, so a test can choose between
	// checking file effects (a directory) and the real kernel (inside a
	// namespace it made).
	Proc, Sys string
	// StateDir is the stage's own directory for what it must remember
	// across boots (which routes are its own, a kubeadm log), under the
	// node's state directory; the engine sets it per stage and creates it
	// 0700 before the stage runs. It is kept until the node is reflashed.
	StateDir string
	// Data carries what one stage found or made to the stages after it,
	// in one run (see RunData).
	Data *RunData
	// Progress, set by the engine, reports in one line what a long stage
	// is waiting for (the unit's STATUS=, the console banner); use Report.
	Progress func(string)
}

// Report says what the stage is waiting for now; a no-op without Progress.
func (e *Env) Report(s string) {
	if e.Progress != nil {
		e.Progress(s)
	}
}

// RunData is what stages hand to later stages within one run, typed so that
// a stage reads another's result without calling into its package (the
// shape of kubeadm's InitData). A stage sets its fields whenever it has
// verified them: when its Plan finds nothing to do and when its Apply
// succeeds, so later stages see them on every boot, changed or not.
type RunData struct {
	// Firewall is what the firewall stage verified about inbound ports.
	Firewall FirewallResult
}

// FirewallResult is the firewall stage's verified state.
type FirewallResult struct {
	// Backend is the backend the stage used: "firewalld", "nftables", or
	// "none" (bootstrapd left the firewall alone and vouches for nothing).
	Backend string
	// Open lists the ports verified open, in firewalld's notation
	// ("6443/tcp", "2379-2380/tcp"); empty for backend none.
	Open []string
}

// Path joins p (an absolute path on the node) under Env.Root.
func (e *Env) Path(p string) string { return filepath.Join(e.Root, p) }

// ProcPath joins p (relative to procfs, e.g. "sys/net/ipv4/ip_forward")
// under Env.Proc.
func (e *Env) ProcPath(p string) string { return filepath.Join(orDefault(e.Proc, "/proc"), p) }

// SysPath joins p (relative to sysfs, e.g. "module/overlay") under Env.Sys.
func (e *Env) SysPath(p string) string { return filepath.Join(orDefault(e.Sys, "/sys"), p) }

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// InNetNS runs f on an OS thread switched into e.NetNS, for what netlink
// and nftables handles cannot do: sockets (DHCP) and /proc/sys/net are
// bound to the namespace of the thread that opens them. netns.None() runs
// f where we are. f runs on its own goroutine so that, should switching back
// fail, the goroutine ends with its thread locked and the runtime retires
// the thread instead of reusing it in the wrong namespace.
func (e *Env) InNetNS(f func() error) error {
	ns := e.NetNS
	if !ns.IsOpen() {
		return f()
	}
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("read current network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("enter network namespace: %w", err)
			return
		}
		ferr := f()
		if err := netns.Set(orig); err != nil {
			done <- fmt.Errorf("return to the original network namespace: %w", err)
			return
		}
		runtime.UnlockOSThread()
		done <- ferr
	}()
	return <-done
}

// Change is one thing a stage did or would do, in words, e.g.
// "enp1s0: add address 172.16.0.11/24". It never holds a secret.
type Change string

// Stage makes one part of the host match the config.
type Stage interface {
	// Name is the short name used by --only, markers and status.
	Name() string
	// Inputs returns the part of the config the stage reads. The engine
	// keeps a fingerprint of it in the stage's record, so a change
	// elsewhere in the config (a rotated token, another stage's sysctl)
	// leaves the stage's record current. nil: the stage reads no config.
	Inputs(cfg *machineconfig.MachineConfig) any
	// Plan lists what Apply would change now, without changing anything.
	Plan(ctx context.Context, env *Env) ([]Change, error)
	// Apply makes the host match the config and returns what it changed.
	// It must be idempotent: on a host that already matches it returns no
	// changes. Errors that may clear by themselves (a link without carrier
	// yet, a service still starting) are wrapped with Temporary.
	Apply(ctx context.Context, env *Env) ([]Change, error)
}

// Validator is implemented by stages that can check, before the engine
// changes anything, that the host can take the config (a matched NIC
// exists, a needed tool is installed). The engine validates every selected
// stage before the first Apply, so a config that cannot work fails with no
// half-configured machine.
type Validator interface {
	Validate(ctx context.Context, env *Env) error
}

type temporaryError struct{ err error }

func (t temporaryError) Error() string { return t.err.Error() }
func (t temporaryError) Unwrap() error { return t.err }

// Temporary marks err as worth retrying with backoff.
func Temporary(err error) error {
	if err == nil {
		return nil
	}
	return temporaryError{err}
}

// IsTemporary reports whether err (or one it wraps) was marked Temporary.
func IsTemporary(err error) bool {
	var t temporaryError
	return errors.As(err, &t)
}
