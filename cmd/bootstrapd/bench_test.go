package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kubeboot.dev/kubeboot/internal/rlimittest"
)

// hostStages is the host phase of the plan: what a node runs on every
// boot without a cluster (the Kubernetes phase needs one: the QEMU lab).
const hostStages = "hostname,network,firewall,sysprep,users"

// shipped builds bootstrapd as `make build` does (no cgo, -trimpath, no
// symbols), whose size is the one an image carries.
func shipped(b *testing.B) string {
	b.Helper()
	p := filepath.Join(b.TempDir(), "bootstrapd")
	if err := goBuild(p, ".", "-trimpath", "-ldflags", "-s -w"); err != nil {
		b.Fatal(err)
	}
	return p
}

// doneNode is a node namespace (the reference's enp1s0/enp2s0) whose host
// phase has applied configs/controller.yaml: every host stage recorded,
// the kernel matching, as on every boot after the first.
func doneNode(b *testing.B, bin string) (*node, []string) {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("needs root for network and UTS namespaces")
	}
	for _, tool := range []string{"ip", "nft", "nsenter", "useradd", "/usr/bin/time", "prlimit"} {
		if _, err := exec.LookPath(tool); err != nil {
			b.Skipf("%s not installed (scripts/setup-host.sh installs it)", tool)
		}
	}
	if swaps, _ := os.ReadFile("/proc/swaps"); strings.Count(strings.TrimSpace(string(swaps)), "\n") > 0 {
		b.Skip("the host has active swap; sysprep would turn it off for the whole machine")
	}
	n := newNode(b)
	args := []string{"--net=/run/netns/" + n.ns, "--uts=" + n.uts, bin, "run", "--config", controllerConfig, "--root", n.root, "--only", hostStages}
	if out, err := exec.Command("nsenter", args...).CombinedOutput(); err != nil {
		b.Fatalf("first run: %v\n%s", err, out)
	}
	return n, args
}

// BenchmarkRunOnDoneHost is bootstrapd's cost on a boot that has nothing
// to do: `bootstrapd run` of the host phase on a node where it is applied
// (nsenter's exec included, ~1 ms). Reported besides ns/op: the peak RSS
// and CPU time (user + system) of one run (GNU time; the CPU time does not
// grow with the machine's load as the wall time does) and the size of the
// binary as shipped, and the run's own duration as it logs it (from the
// config loaded to the plan applied: no exec, no package init).
// Goals (issue 12): < 100 ms, < 30 MiB.
func BenchmarkRunOnDoneHost(b *testing.B) {
	bin := shipped(b)
	_, args := doneNode(b, bin)
	r := rlimittest.Run(b, exec.Command("nsenter", args...), rlimittest.Limits{AddressSpace: 4 << 30, CPUSeconds: 60})
	if r.ExitCode != 0 || !strings.Contains(r.Stderr, "changes=0") {
		b.Fatalf("the rerun changed something or failed (exit %d):\n%s", r.ExitCode, r.Stderr)
	}
	info, err := os.Stat(bin)
	if err != nil {
		b.Fatal(err)
	}
	var self time.Duration // the run as bootstrapd logs it: no exec, no package init
	for b.Loop() {
		out, err := exec.Command("nsenter", args...).CombinedOutput()
		if err != nil {
			b.Fatalf("%v\n%s", err, out)
		}
		_, d, _ := strings.Cut(string(out), "msg=\"first-boot plan applied\"")
		_, d, _ = strings.Cut(d, "duration=")
		took, err := time.ParseDuration(strings.TrimSpace(d))
		if err != nil {
			b.Fatalf("no duration in the log: %v\n%s", err, out)
		}
		self += took
	}
	b.ReportMetric(float64(self.Milliseconds())/float64(b.N), "logged-ms/op")
	b.ReportMetric(float64(r.PeakRSS)/(1<<20), "peak-RSS-MiB")
	b.ReportMetric(float64(r.CPU.Milliseconds()), "CPU-ms")
	b.ReportMetric(float64(info.Size())/(1<<20), "binary-MiB")
}

// BenchmarkStatusOnDoneHost is `bootstrapd status` on the same node.
func BenchmarkStatusOnDoneHost(b *testing.B) {
	bin := shipped(b)
	n, _ := doneNode(b, bin)
	r := rlimittest.Run(b, exec.Command(bin, "status", "--root", n.root), rlimittest.Limits{AddressSpace: 4 << 30, CPUSeconds: 60})
	if r.ExitCode != 0 {
		b.Fatalf("status: exit %d\n%s", r.ExitCode, r.Stderr)
	}
	for b.Loop() {
		if out, err := exec.Command(bin, "status", "--root", n.root).CombinedOutput(); err != nil {
			b.Fatalf("%v\n%s", err, out)
		}
	}
	b.ReportMetric(float64(r.PeakRSS)/(1<<20), "peak-RSS-MiB")
	b.ReportMetric(float64(r.CPU.Milliseconds()), "CPU-ms")
}
