// Command bootstrapd is the node's first-boot daemon: it finds the machine
// config, validates it, and applies the first-boot plan (see
// bootstrapd/plan.go). It runs on every boot; a boot whose config is already
// applied changes nothing.
//
//	bootstrapd run    [--config F] [--root DIR] [--only STAGE,...]
//	bootstrapd plan   [--config F] [--root DIR] [--only STAGE,...]
//	bootstrapd status [--root DIR]
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"kubeboot.dev/kubeboot/bootstrapd"
	"kubeboot.dev/kubeboot/bootstrapd/banner"
	"kubeboot.dev/kubeboot/bootstrapd/engine"
	"kubeboot.dev/kubeboot/bootstrapd/progress"
	"kubeboot.dev/kubeboot/internal/printable"
	"kubeboot.dev/kubeboot/machineconfig"
)

const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
	// exitCrashHook is the status of a run stopped by KUBEBOOT_TEST_CRASH_AFTER.
	exitCrashHook = 3
)

// CrashAfterEnv names a stage after whose record the process exits with
// status 3, as if the machine lost power there. Tests use it to check that
// a rerun resumes correctly; it has no use on a real node.
const CrashAfterEnv = "KUBEBOOT_TEST_CRASH_AFTER"

func main() { os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr)) }

func dispatch(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stdout, stderr)
	case "plan":
		return cmdPlan(args[1:], stdout, stderr)
	case "status":
		return cmdStatus(args[1:], stdout, stderr)
	case "-h", "--help", "help":
		usage(stdout)
		return exitOK
	}
	fmt.Fprintf(stderr, "bootstrapd: unknown command %q\n", args[0])
	usage(stderr)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage:
  bootstrapd run    [--config F] [--root DIR] [--only STAGE,...]   apply the first-boot plan
  bootstrapd plan   [--config F] [--root DIR] [--only STAGE,...]   print what run would change
  bootstrapd status [--root DIR]                                  stages, timings, markers
`)
}

type commonFlags struct {
	fs        *flag.FlagSet
	config    string
	root      string
	only      string
	proc, sys string
}

func newFlags(name string, stderr io.Writer, withConfig bool) *commonFlags {
	f := &commonFlags{fs: flag.NewFlagSet("bootstrapd "+name, flag.ContinueOnError)}
	f.fs.SetOutput(stderr)
	f.fs.StringVar(&f.root, "root", "/", "directory standing for the node's /: files and the state directory are under it")
	if withConfig {
		f.fs.StringVar(&f.config, "config", "", "machine config file; default: the sources in order (kernel command line, NoCloud CIDATA, /usr/share/kubeboot/machine.yaml)")
		f.fs.StringVar(&f.only, "only", "", "comma-separated stages to run (after source and validate), e.g. hostname,network")
		f.fs.StringVar(&f.proc, "proc", "", "procfs to read and write sysctls under (tests); default /proc")
		f.fs.StringVar(&f.sys, "sys", "", "sysfs to read modules under (tests); default /sys")
	}
	return f
}

func (f *commonFlags) parse(args []string) bool {
	if err := f.fs.Parse(args); err != nil {
		return false
	}
	if f.fs.NArg() > 0 {
		fmt.Fprintf(f.fs.Output(), "%s: unexpected argument %q\n", f.fs.Name(), f.fs.Arg(0))
		return false
	}
	// An unknown --only name is a usage error, found before anything is touched.
	if _, err := engine.Select(bootstrapd.Plan(), f.onlyList()); err != nil {
		fmt.Fprintf(f.fs.Output(), "%s: --only: %v\n", f.fs.Name(), err)
		return false
	}
	return true
}

func (f *commonFlags) onlyList() []string {
	var only []string
	for _, s := range strings.Split(f.only, ",") {
		if s = strings.TrimSpace(s); s != "" {
			only = append(only, s)
		}
	}
	return only
}

func (f *commonFlags) options(log *slog.Logger) bootstrapd.Options {
	return bootstrapd.Options{Root: f.root, Proc: f.proc, Sys: f.sys, ConfigPath: f.config, Only: f.onlyList(), Log: log}
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
}

func cmdRun(args []string, stdout, stderr io.Writer) int {
	f := newFlags("run", stderr, true)
	if !f.parse(args) {
		return exitUsage
	}
	log := newLogger(stderr)
	o := f.options(log)
	watch := &watcher{root: f.root, log: log, plan: bootstrapd.Plan()}
	o.Loaded = watch.loaded
	o.Status = func(s string) {
		notify("STATUS=" + statusLine(s))
		watch.activity(s)
	}
	o.StepStarted = watch.stepStarted
	o.StepEnded = watch.stepEnded
	// Ready once the host is: the network is up, so what waits for
	// network-online.target (the kubelet that kubeadm starts) can start
	// while the Kubernetes stages go on. The unit still fails if they do.
	o.AfterPhase = func(phase string) {
		if phase == bootstrapd.PhaseHost {
			notify("READY=1")
		}
	}
	if stop := os.Getenv(CrashAfterEnv); stop != "" {
		o.AfterStage = func(name string) {
			if name == stop {
				log.Warn("stopping as asked by "+CrashAfterEnv, "stage", name)
				os.Exit(exitCrashHook)
			}
		}
	}
	ctx, cancel := signalContext()
	defer cancel()

	start := time.Now()
	outcomes, err := bootstrapd.FirstBoot(ctx, o)
	watch.end()
	if err != nil {
		notify("STATUS=failed: " + statusLine(err.Error()))
		fmt.Fprintf(stderr, "bootstrapd: %v\n", err)
		return exitFail
	}
	changed := 0
	for _, o := range outcomes {
		changed += len(o.Changes)
	}
	log.Info("first-boot plan applied", "stages", len(outcomes), "changes", changed, "duration", time.Since(start).Round(time.Millisecond).String())
	notify("READY=1\nSTATUS=applied; " + fmt.Sprint(changed) + " changes")
	return exitOK
}

// watcher keeps this boot's progress (/run/kubeboot/progress.json) and the
// console banner up to date through a run. It starts only once the run
// holds the state lock, so a second bootstrapd refused by the lock never
// overwrites the first one's view. Its failures are logged, never fatal:
// the banner is a view of the boot, not part of it.
type watcher struct {
	root string
	log  *slog.Logger
	plan []engine.Step
	cfg  *machineconfig.MachineConfig
	rec  *progress.Recorder
}

func (w *watcher) loaded(p *bootstrapd.Prepared, _ error) {
	if p != nil {
		w.cfg, w.plan = p.Engine.Env.Config, p.Plan
		rec, err := progress.Start(w.root, w.plan, w.cfg)
		w.warn(err)
		w.rec = rec
	}
	w.console()
}

// end marks the run over (the banner stops saying "running").
func (w *watcher) end() {
	if w.rec != nil {
		w.warn(w.rec.End())
		w.console()
	}
}

func (w *watcher) activity(s string) {
	if w.rec != nil {
		w.warn(w.rec.Activity(s))
		w.console()
	}
}

func (w *watcher) stepStarted(name string) {
	if w.rec != nil {
		w.warn(w.rec.StepStarted(name))
	}
	w.console()
}

func (w *watcher) stepEnded(o engine.Outcome, err error) {
	if w.rec != nil {
		w.warn(w.rec.StepEnded(o, err))
	}
	w.console()
}

// console rewrites the banner and, when it changed on the running system
// (--root /), asks agetty to redraw its login screens. Under another root
// the gettys are not that root's.
func (w *watcher) console() {
	v, err := banner.Collect(w.root, w.cfg, w.plan)
	if err != nil {
		w.warn(fmt.Errorf("console banner: %w", err))
		return
	}
	changed, err := banner.Write(w.root, v)
	if err != nil || !changed || filepath.Clean(w.root) != "/" {
		w.warn(err)
		return
	}
	if _, err := exec.LookPath("agetty"); err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "agetty", "--reload").CombinedOutput(); err != nil {
		w.warn(fmt.Errorf("agetty --reload: %v: %s", err, bytes.TrimSpace(out)))
	}
}

func (w *watcher) warn(err error) {
	if err != nil {
		w.log.Warn("this boot's progress view", "err", err)
	}
}

func cmdPlan(args []string, stdout, stderr io.Writer) int {
	f := newFlags("plan", stderr, true)
	if !f.parse(args) {
		return exitUsage
	}
	ctx, cancel := signalContext()
	defer cancel()
	p, planned, err := bootstrapd.PlanChanges(ctx, f.options(newLogger(stderr)))
	if err != nil {
		fmt.Fprintf(stderr, "bootstrapd: %v\n", err)
		return exitFail
	}
	fmt.Fprintf(stdout, "source: %s\nconfig: %s\n", printable.String(p.Source.Source), p.Source.Config.Hash())
	for _, pl := range planned {
		note := ""
		switch {
		case pl.Recorded && pl.Kind == engine.Once:
			fmt.Fprintf(stdout, "%s: done (runs once; reflash the node to run it again)\n", pl.Stage)
			continue
		case pl.Err != nil:
			fmt.Fprintf(stdout, "%s: cannot tell yet: %v\n", pl.Stage, pl.Err)
			continue
		case pl.Recorded:
			note = " (recorded as done with this config)"
		}
		if len(pl.Changes) == 0 {
			fmt.Fprintf(stdout, "%s: up to date%s\n", pl.Stage, note)
			continue
		}
		fmt.Fprintf(stdout, "%s: %d changes%s\n", pl.Stage, len(pl.Changes), note)
		for _, c := range pl.Changes {
			fmt.Fprintf(stdout, "  - %s\n", printable.String(string(c)))
		}
	}
	return exitOK
}

func cmdStatus(args []string, stdout, stderr io.Writer) int {
	f := newFlags("status", stderr, false)
	if !f.parse(args) {
		return exitUsage
	}
	if err := printStatus(f.root, stdout); err != nil {
		fmt.Fprintf(stderr, "bootstrapd: %v\n", err)
		return exitFail
	}
	return exitOK
}

// notify tells systemd (Type=notify) about progress; outside systemd
// NOTIFY_SOCKET is unset and it does nothing.
func notify(s string) {
	_, _ = daemon.SdNotify(false, s)
}
