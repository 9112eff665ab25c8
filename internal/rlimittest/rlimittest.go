// Package rlimittest runs a program that is fed hostile input under hard
// limits (prlimit: address space and CPU seconds), so that a regression
// that loops or over-allocates fails its test instead of taking the
// machine, and measures its peak RSS and CPU time.
//
// The peak RSS comes from GNU time, which forks the program from its own
// small process: Go's os/exec starts children with vfork semantics, and
// the kernel then counts the test binary's own peak as the child's.
package rlimittest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Limits bound one run.
type Limits struct {
	// AddressSpace is prlimit --as in bytes. A Go program reserves about
	// 700 MiB of address space before it allocates anything, so 1 GiB
	// leaves it a few hundred MiB of heap.
	AddressSpace int64
	// CPUSeconds is prlimit --cpu: the kernel stops the program after it.
	CPUSeconds int
}

// Default are the bounds bootstrapd's hostile-input tests use.
var Default = Limits{AddressSpace: 1 << 30, CPUSeconds: 2}

// Result is what one bounded run did.
type Result struct {
	Stdout, Stderr string
	ExitCode       int   // -1 when a signal (a limit) ended it
	PeakRSS        int64 // bytes
	CPU            time.Duration
}

// Run runs cmd (its Path, Args, Env and Dir) under l and waits for it.
func Run(tb testing.TB, cmd *exec.Cmd, l Limits) Result {
	tb.Helper()
	for _, tool := range []string{"prlimit", "/usr/bin/time"} {
		if _, err := exec.LookPath(tool); err != nil {
			tb.Skipf("%s not installed (scripts/setup-host.sh installs util-linux and time)", tool)
		}
	}
	usage := filepath.Join(tb.TempDir(), "usage")
	args := []string{"-f", "%x %M %U %S", "-o", usage, "prlimit",
		"--as=" + strconv.FormatInt(l.AddressSpace, 10), "--cpu=" + strconv.Itoa(l.CPUSeconds), "--", cmd.Path}
	wrapped := exec.Command("/usr/bin/time", append(args, cmd.Args[1:]...)...)
	wrapped.Env, wrapped.Dir, wrapped.Stdin = cmd.Env, cmd.Dir, cmd.Stdin
	var stdout, stderr bytes.Buffer
	wrapped.Stdout, wrapped.Stderr = &stdout, &stderr
	_ = wrapped.Run() // the exit status is read from GNU time's report
	report, err := os.ReadFile(usage)
	if err != nil {
		tb.Fatalf("%s: no usage report: %v\n%s", cmd.Path, err, stderr.String())
	}
	r := Result{Stdout: stdout.String(), Stderr: stderr.String()}
	lines := strings.Split(strings.TrimSpace(string(report)), "\n")
	// A program killed by a signal makes time print "Command terminated
	// by signal N" first; its exit code field then reads 0.
	last := lines[len(lines)-1]
	var rssKiB int64
	var user, sys float64
	if _, err := fmt.Sscanf(last, "%d %d %f %f", &r.ExitCode, &rssKiB, &user, &sys); err != nil {
		tb.Fatalf("%s: usage report %q: %v", cmd.Path, report, err)
	}
	if len(lines) > 1 && strings.Contains(lines[0], "signal") {
		r.ExitCode = -1
		r.Stderr += "\n" + lines[0]
	}
	r.PeakRSS = rssKiB << 10
	r.CPU = time.Duration((user + sys) * float64(time.Second))
	return r
}

// Check fails the test when r broke the bounds: killed by a limit, or a
// peak RSS above maxRSS. It logs the figures either way.
func Check(tb testing.TB, what string, r Result, maxRSS int64) {
	tb.Helper()
	tb.Logf("%s: peak RSS %.1f MiB, CPU %v, exit %d", what, float64(r.PeakRSS)/(1<<20), r.CPU.Round(time.Millisecond), r.ExitCode)
	if r.ExitCode < 0 {
		tb.Errorf("%s: killed by its limits (CPU or address space):\n%s", what, r.Stderr)
	}
	if r.PeakRSS > maxRSS {
		tb.Errorf("%s: peak RSS %.1f MiB, over the %d MiB bound", what, float64(r.PeakRSS)/(1<<20), maxRSS>>20)
	}
}
