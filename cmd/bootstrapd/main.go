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
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"kubeboot.dev/kubeboot/bootstrapd"
	"kubeboot.dev/kubeboot/bootstrapd/engine"
	"kubeboot.dev/kubeboot/bootstrapd/state"
	"kubeboot.dev/kubeboot/internal/printable"
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
	if _, err := engine.Select(bootstrapd.Stages(), f.onlyList()); err != nil {
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
	o.Status = func(s string) { notify("STATUS=" + statusLine(s)) }
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
		if pl.Recorded {
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
	if err := printStatus(state.Open(f.root), stdout); err != nil {
		fmt.Fprintf(stderr, "bootstrapd: %v\n", err)
		return exitFail
	}
	return exitOK
}

// printStatus shows the records; none of them holds a secret.
func printStatus(st *state.Store, w io.Writer) error {
	src, err := st.Source()
	if err != nil {
		return err
	}
	done, err := st.Done()
	if err != nil {
		return err
	}
	failed, err := st.Failure()
	if err != nil {
		return err
	}
	stages, err := st.Stages()
	if err != nil {
		return err
	}
	if src == nil && done == nil && failed == nil && len(stages) == 0 {
		return errors.New("no state under " + st.Dir + ": bootstrapd has not run on this root")
	}
	current := ""
	if src != nil {
		current = src.ConfigHash
		fmt.Fprintf(w, "source:  %s\nconfig:  %s (first loaded %s)\n", printable.String(src.Source), printable.String(src.ConfigHash), src.Loaded.Format(time.RFC3339))
		if src.InstanceID != "" {
			fmt.Fprintf(w, "instance-id: %s\n", printable.String(src.InstanceID))
		}
	}
	if done != nil {
		fmt.Fprintf(w, "done:    %s (config %s)\n", done.Time.Format(time.RFC3339), printable.String(done.ConfigHash))
	} else {
		fmt.Fprintln(w, "done:    no")
	}
	if failed != nil {
		fmt.Fprintf(w, "failed:  stage %s at %s after %d attempts: %s\n", printable.String(failed.Stage), failed.Time.Format(time.RFC3339), failed.Attempts, printableLines(failed.Reason, "         "))
	} else {
		fmt.Fprintln(w, "failed:  no")
	}
	if len(stages) == 0 {
		return nil
	}
	fmt.Fprintln(w, "stages:")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  STAGE\tFINISHED\tDURATION\tATTEMPTS\tCHANGES\tCONFIG")
	for _, r := range stages {
		cfg := r.ConfigHash
		if current != "" && cfg != current {
			cfg += " (not the current config)"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%d\t%s\n", printable.String(r.Stage), r.Finished.Format(time.RFC3339), printable.String(r.Duration), r.Attempts, len(r.Changes), printable.String(cfg))
	}
	return tw.Flush()
}

// notify tells systemd (Type=notify) about progress; outside systemd
// NOTIFY_SOCKET is unset and it does nothing.
func notify(s string) {
	_, _ = daemon.SdNotify(false, s)
}
