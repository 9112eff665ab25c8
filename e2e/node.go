package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"kubeboot.dev/kubeboot/bootstrapd/progress"
	"kubeboot.dev/kubeboot/bootstrapd/state"
	"kubeboot.dev/kubeboot/nodepath"
)

// Progress reads bootstrapd's record of this boot (nil before bootstrapd
// wrote it).
func (vm *VM) Progress(ctx context.Context) (*progress.Boot, error) {
	r, err := vm.Run(ctx, "cat "+progress.File, 30*time.Second)
	if err != nil {
		return nil, err
	}
	if r.Code != 0 {
		return nil, nil
	}
	var b progress.Boot
	if err := json.Unmarshal(r.Out, &b); err != nil {
		return nil, fmt.Errorf("%s: %s: %w", vm.Name, progress.File, err)
	}
	return &b, nil
}

// DoneMarker reads /var/lib/kubeboot/done (nil when there is none).
func (vm *VM) DoneMarker(ctx context.Context) (*state.Done, error) {
	r, err := vm.Run(ctx, "cat "+state.Dir+"/done", 30*time.Second)
	if err != nil || r.Code != 0 {
		return nil, err
	}
	var d state.Done
	if err := json.Unmarshal(r.Out, &d); err != nil {
		return nil, fmt.Errorf("%s: %s/done: %w", vm.Name, state.Dir, err)
	}
	return &d, nil
}

// Status is `bootstrapd status`.
func (vm *VM) Status(ctx context.Context) string {
	r, err := vm.Run(ctx, "bootstrapd status", time.Minute)
	if err != nil {
		return err.Error()
	}
	return r.String()
}

// finished says whether a step ended on this boot, and whether it failed.
func finished(s progress.Step) (ended, failed bool) {
	switch s.State {
	case progress.Applied, progress.UpToDate, progress.DoneOnce:
		return true, false
	case progress.Failed:
		return true, true
	}
	return false, false
}

// WaitBootstrapd polls this boot's progress until every step of phase ("" for
// every phase) that applies to the node has ended, and fails at once when
// one failed (with `bootstrapd status` in the error). It returns the last
// progress read.
func (vm *VM) WaitBootstrapd(ctx context.Context, phase string) (*progress.Boot, error) {
	for poll := 0; ; poll++ {
		if poll%6 == 5 {
			// Once a minute, what the guest spends its time on, for the
			// transcript: a slow boot under TCG is explained there.
			vm.Run(ctx, loadSample, 30*time.Second)
		}
		b, err := vm.Progress(ctx)
		if err != nil {
			return nil, err
		}
		if b != nil {
			all := true
			for _, s := range b.Steps {
				if !s.Applies || (phase != "" && s.Phase != phase) {
					continue
				}
				ended, failed := finished(s)
				if failed {
					status := vm.Status(ctx)
					return b, fmt.Errorf("%s: bootstrapd stage %s failed on this boot: %s\n%s", vm.Name, s.Stage, failedLine(status), status)
				}
				all = all && ended
			}
			if phase == "" && !b.Ended.IsZero() && !all {
				return b, fmt.Errorf("%s: bootstrapd ended with steps not done:\n%s", vm.Name, vm.Status(ctx))
			}
			if all {
				return b, nil
			}
		}
		select {
		case <-ctx.Done():
			return b, fmt.Errorf("%s: waiting for bootstrapd (%s): %w; last status:\n%s", vm.Name, phaseName(phase), ctx.Err(), vm.Status(context.Background()))
		case <-time.After(10 * time.Second):
		}
	}
}

// loadSample is the guest's load, the processes that used the most CPU
// since they started (clock ticks, from /proc: the image has no top), and
// its CPU, memory and I/O pressure.
const loadSample = "cat /proc/loadavg; awk '{print $14+$15, $1, $2}' /proc/[0-9]*/stat 2>/dev/null | sort -rn | head -n 12; cat /proc/pressure/cpu /proc/pressure/io /proc/pressure/memory"

// failedLine is the reason on status's "failed:" line.
func failedLine(status string) string {
	for _, l := range strings.Split(status, "\n") {
		if r, ok := strings.CutPrefix(l, "failed:"); ok {
			return strings.TrimSpace(r)
		}
	}
	return "(bootstrapd status names no reason)"
}

func phaseName(p string) string {
	if p == "" {
		return "all phases"
	}
	return "phase " + p
}

// stageTimings turns this boot's progress into the report's form.
func stageTimings(b *progress.Boot) (list []StageTiming, kubeadm float64) {
	for _, s := range b.Steps {
		if !s.Applies {
			continue
		}
		d, _ := time.ParseDuration(s.Duration)
		list = append(list, StageTiming{Stage: s.Stage, Phase: s.Phase, State: s.State, Seconds: d.Seconds(), Attempts: s.Attempts})
		if strings.HasPrefix(s.Stage, "kubeadm") && s.State == progress.Applied {
			kubeadm = d.Seconds()
		}
	}
	return list, kubeadm
}

// Timings fills what the guest knows about this boot into b: systemd's
// startup line, bootstrapd's steps and the done marker.
func (vm *VM) Timings(ctx context.Context, b *BootReport) error {
	var errs []error
	if out, err := vm.Check(ctx, "systemd-analyze --no-pager 2>&1 | head -n 1", time.Minute); err == nil {
		b.SystemdAnalyze = out
	} else {
		errs = append(errs, err)
	}
	// Where the boot's time went, for the shell transcript.
	_, _ = vm.Run(ctx, "systemd-analyze critical-chain --no-pager bootstrapd.service multi-user.target", time.Minute)
	if p, err := vm.Progress(ctx); err != nil {
		errs = append(errs, err)
	} else if p != nil {
		b.Stages, b.KubeadmSeconds = stageTimings(p)
	}
	if d, err := vm.DoneMarker(ctx); err != nil {
		errs = append(errs, err)
	} else if d != nil {
		b.DoneMarker = d.Stages
	}
	return errors.Join(errs...)
}

// SystemState waits (at most limit) for the boot to finish starting units
// and returns systemd's state (running, degraded, ...) and the failed units.
func (vm *VM) SystemState(ctx context.Context, limit time.Duration) (string, []string, error) {
	r, err := vm.Run(ctx, fmt.Sprintf("timeout %d systemctl is-system-running --wait", int(limit.Seconds())), limit+time.Minute)
	if err != nil {
		return "", nil, err
	}
	state := strings.TrimSpace(r.String())
	out, err := vm.Check(ctx, "systemctl list-units --failed --plain --no-legend --no-pager | cut -d' ' -f1", time.Minute)
	if err != nil {
		return state, nil, err
	}
	return state, strings.Fields(out), nil
}

// Evidence keeps what explains a failure, beside the serial consoles
// already in LogDir: the journal of this boot, `bootstrapd status`, the
// failed units, the containers with the tail of each one's log, and
// bootstrapd's state files. It returns the files written.
func (vm *VM) Evidence(ctx context.Context) []string {
	if !vm.Running() {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	vm.mu.Lock()
	n := vm.instance
	vm.mu.Unlock()
	var written []string
	save := func(name, script string, gz bool) {
		p := filepath.Join(vm.LogDir, fmt.Sprintf("%s-%d.txt", name, n))
		r, err := vm.Run(ctx, script, 5*time.Minute)
		out := r.Out
		if err == nil && gz {
			out, err = gunzip(r.Out)
		}
		if err != nil {
			out = append(out, []byte("\n(e2e: "+err.Error()+")\n")...)
		}
		if werr := os.WriteFile(p, out, 0o644); werr == nil {
			written = append(written, p)
		}
	}
	save("journal", "journalctl -b --no-pager -o short-monotonic | gzip -1", true)
	save("status", "bootstrapd status", false)
	save("units", "systemctl --failed --no-pager --no-legend; systemctl list-jobs --no-pager", false)
	// Why control-plane containers or coredns exited lives only in their
	// own logs, which the journal does not carry.
	save("containers", "{ crictl --runtime-endpoint unix://"+nodepath.ContainerdSocket+" ps -a 2>&1; for f in /var/log/pods/*/*/*.log; do echo \"== $f\"; tail -n 40 \"$f\"; done; } | gzip -1", true)
	save("state", "cd "+state.Dir+" && for f in source.json failed done stages/*/record.json; do [ -f \"$f\" ] && { echo \"== $f\"; cat \"$f\"; echo; }; done; echo \"== "+progress.File+"\"; cat "+progress.File, false)
	return written
}

func gunzip(b []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return b, err
	}
	return io.ReadAll(zr)
}

// WaitStep polls this boot's progress until the step named stage has
// ended, and fails when it failed (with `bootstrapd status` in the error).
func (vm *VM) WaitStep(ctx context.Context, stage string) error {
	for {
		b, err := vm.Progress(ctx)
		if err != nil {
			return err
		}
		var steps []progress.Step
		if b != nil {
			steps = b.Steps
		}
		for _, s := range steps {
			if s.Stage != stage {
				continue
			}
			if ended, failed := finished(s); failed {
				status := vm.Status(ctx)
				return fmt.Errorf("%s: bootstrapd stage %s failed on this boot: %s\n%s", vm.Name, stage, failedLine(status), status)
			} else if ended {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: waiting for bootstrapd's stage %s: %w; last status:\n%s", vm.Name, stage, ctx.Err(), vm.Status(context.Background()))
		case <-time.After(5 * time.Second):
		}
	}
}
