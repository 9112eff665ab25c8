package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"kubeboot.dev/kubeboot/bootstrapd/state"
)

// Report is out/e2e/report.json: one object per scenario, in order.
type Report struct {
	Started time.Time `json:"started"`
	Seconds float64   `json:"seconds"`
	Passed  bool      `json:"passed"`
	// Complete is false until every scenario has ended: the report is
	// written after each one, so a stopped run keeps those that ended.
	Complete  bool              `json:"complete"`
	Image     string            `json:"image"`
	Host      HostInfo          `json:"host"`
	Scenarios []*ScenarioReport `json:"scenarios"`
	// Teardown is what Close could not undo, if anything.
	Teardown string `json:"teardown,omitempty"`
	// Secrets is the scan of everything the run kept (out/e2e) for the
	// cluster bundle's secrets: empty when the bundle was never read.
	Secrets string `json:"secrets,omitempty"`
}

// HostInfo is the machine the lab ran on.
type HostInfo struct {
	CPUs        int `json:"cpus"`
	MemTotalMiB int `json:"memTotalMiB"`
}

// ScenarioReport is one scenario's outcome.
type ScenarioReport struct {
	Name         string  `json:"name"`
	Title        string  `json:"title"`
	Passed       bool    `json:"passed"`
	NotRun       string  `json:"notRun,omitempty"` // why it did not run
	Seconds      float64 `json:"seconds"`
	LimitSeconds float64 `json:"limitSeconds"`
	Error        string  `json:"error,omitempty"`
	// Checks are what held, in the order checked.
	Checks []string      `json:"checks"`
	Boots  []*BootReport `json:"boots"`
	Memory MemoryWindow  `json:"memory"`
	// Evidence lists the files kept for a failure (consoles, journals,
	// bootstrapd status).
	Evidence []string `json:"evidence,omitempty"`
	// OverheadSeconds (floor, make bench-boot): the controller's node
	// Ready time less the floor's, bootstrapd's cost.
	OverheadSeconds float64 `json:"overheadSeconds,omitempty"`
}

// BootReport is the timing of one boot of one node. Times ending in At
// count from the QEMU process's start (host clock); durations are the
// guest's own measure.
type BootReport struct {
	Node string `json:"node"`
	Boot string `json:"boot"` // first boot, reflash, reboot, ...
	// QEMUStartedAt is when QEMU started, in seconds since the scenario
	// began (0 for a reboot inside the same QEMU: then the At times count
	// from the reboot command).
	QEMUStartedAt float64 `json:"qemuStartedAt"`
	// FirmwareAt: the first console byte (OVMF); KernelAt: "Linux
	// version"; ShellAt: the debug shell answered; LoginAt: the getty's
	// login prompt on the console.
	FirmwareAt float64 `json:"firmwareAt,omitempty"`
	KernelAt   float64 `json:"kernelAt,omitempty"`
	ShellAt    float64 `json:"shellAt,omitempty"`
	LoginAt    float64 `json:"loginAt,omitempty"`
	// SystemdAnalyze is `systemd-analyze`'s first line (firmware, loader,
	// kernel, initrd, userspace as the guest measured them).
	SystemdAnalyze string `json:"systemdAnalyze,omitempty"`
	// HostPhaseAt and DoneAt: bootstrapd's host phase through and its run
	// ended, as the lab saw them.
	HostPhaseAt float64 `json:"hostPhaseAt,omitempty"`
	DoneAt      float64 `json:"doneAt,omitempty"`
	// Stages: bootstrapd's steps on this boot (/run/kubeboot/progress.json).
	Stages []StageTiming `json:"stages,omitempty"`
	// DoneMarker: the per-stage timings of /var/lib/kubeboot/done.
	DoneMarker []state.StageTiming `json:"doneMarker,omitempty"`
	// KubeadmSeconds: the kubeadm stage's duration on this boot.
	KubeadmSeconds float64 `json:"kubeadmSeconds,omitempty"`
	// ReadyAt: the Node Ready as kubectl in the namespace saw it.
	ReadyAt float64 `json:"readyAt,omitempty"`
	// CoreDNSReadyAt: the last CoreDNS pod Ready (its condition's time).
	CoreDNSReadyAt float64 `json:"corednsReadyAt,omitempty"`
}

// StageTiming is one bootstrapd step as this boot saw it.
type StageTiming struct {
	Stage    string  `json:"stage"`
	Phase    string  `json:"phase"`
	State    string  `json:"state"`
	Seconds  float64 `json:"seconds"`
	Attempts int     `json:"attempts,omitempty"`
}

func newReport(image string) *Report {
	total, _, _ := meminfo()
	return &Report{Started: time.Now(), Image: image, Host: HostInfo{CPUs: runtime.NumCPU(), MemTotalMiB: total}}
}

// Write saves the report as JSON.
func (r *Report) Write(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// Summary prints the human summary: a line per scenario, then per boot
// the main timings, then memory.
func (r *Report) Summary(w io.Writer, path string) {
	fmt.Fprintf(w, "\ne2e summary (%d CPUs, %d MiB; %.0f s in all)\n", r.Host.CPUs, r.Host.MemTotalMiB, r.Seconds)
	for _, s := range r.Scenarios {
		switch {
		case s.NotRun != "":
			fmt.Fprintf(w, "  NOT RUN %-14s %s\n", s.Name, s.NotRun)
		case s.Passed:
			fmt.Fprintf(w, "  PASS    %-14s %6.0f s  %s\n", s.Name, s.Seconds, s.Title)
		default:
			fmt.Fprintf(w, "  FAIL    %-14s %6.0f s  %s\n          %s\n", s.Name, s.Seconds, s.Title, firstLine(s.Error))
		}
		for _, b := range s.Boots {
			fmt.Fprintf(w, "          %-4s %-10s %s\n", b.Node, b.Boot, b.brief())
		}
		if len(s.Memory.QEMUPeakRSSMiB) > 0 {
			fmt.Fprintf(w, "          memory: QEMU RSS peak %s (sum %d MiB); host used %d -> peak %d MiB\n",
				rssList(s.Memory.QEMUPeakRSSMiB), s.Memory.QEMUSumPeakMiB, s.Memory.HostUsedAtStartMiB, s.Memory.HostPeakUsedMiB)
		}
	}
	if r.Secrets != "" {
		fmt.Fprintf(w, "  secrets: %s\n", r.Secrets)
	}
	verdict := "FAIL"
	if r.Passed {
		verdict = "PASS"
	}
	fmt.Fprintf(w, "e2e: %s (report: %s)\n", verdict, path)
}

func (b *BootReport) brief() string {
	var parts []string
	add := func(name string, v float64) {
		if v > 0 {
			parts = append(parts, fmt.Sprintf("%s %.0fs", name, v))
		}
	}
	add("kernel", b.KernelAt)
	add("shell", b.ShellAt)
	add("host phase", b.HostPhaseAt)
	add("kubeadm", b.KubeadmSeconds)
	add("Ready", b.ReadyAt)
	add("bootstrapd done", b.DoneAt)
	return strings.Join(parts, ", ")
}

func rssList(m map[string]int) string {
	var parts []string
	for _, name := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", name, m[name]))
	}
	return strings.Join(parts, ", ") + " MiB"
}
