package kubeadm

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"kubeboot.dev/kubeboot/atomicfile"
	"kubeboot.dev/kubeboot/bootstrapd/stage"
)

// Finding is one line kubeadm's preflight printed about a check.
type Finding struct {
	Level   string `json:"level"` // WARNING or ERROR
	Check   string `json:"check"` // e.g. Firewalld, FileExisting-socat, Service-Kubelet
	Message string `json:"message"`
}

func (f Finding) String() string { return fmt.Sprintf("[%s %s]: %s", f.Level, f.Check, f.Message) }

// findingRE matches kubeadm's "\t[WARNING Name]: message" and
// "\t[ERROR Name]: message" lines (cmd/kubeadm/app/preflight/checks.go
// RunChecks and the error it returns).
var findingRE = regexp.MustCompile(`^\s*\[(WARNING|ERROR) ([^\]]+)\]: (.*)$`)

// ParsePreflight returns the findings in kubeadm preflight output.
func ParsePreflight(output string) []Finding {
	var out []Finding
	for _, line := range strings.Split(output, "\n") {
		if m := findingRE.FindStringSubmatch(line); m != nil {
			out = append(out, Finding{Level: m[1], Check: m[2], Message: strings.TrimSpace(m[3])})
		}
	}
	return out
}

// firewalldPortsRE reads the ports kubeadm's Firewalld check names:
// "firewalld is active, please ensure ports [6443 10250] are open ...".
var firewalldPortsRE = regexp.MustCompile(`ports \[([0-9 ]*)\]`)

// PreflightFile, in the stage's state directory, keeps the verdict of the
// last preflight run, for `bootstrapd verify`.
const PreflightFile = "preflight.json"

// Verdict is what bootstrapd makes of kubeadm's preflight findings.
type Verdict struct {
	// Dropped are warnings bootstrapd has verified are not a problem
	// (firewalld's, when the firewall stage vouched for the ports).
	Dropped []Finding `json:"dropped"`
	// Accepted are warnings of checks the config lists in
	// ignorePreflightErrors: passed on to the log, not fatal.
	Accepted []Finding `json:"accepted"`
	// Fatal are the rest: every error, and every warning nobody vouched for.
	Fatal []Finding `json:"fatal"`
}

func (v Verdict) save(path string) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(path, append(data, '\n'), 0o600, 0o700)
}

// Judge sorts findings. kubeadm's Firewalld check warns whenever
// firewalld.service is active, whatever is open (see the firewall stage's
// publish); it is dropped only when the firewall stage used firewalld and
// verified every port the warning names open. Any other finding fails the
// stage unless its check is in ignore (kubernetes.ignorePreflightErrors;
// kubeadm compares the names in lower case).
func Judge(findings []Finding, fw stage.FirewallResult, ignore []string) Verdict {
	var v Verdict
	ignored := func(check string) bool {
		return slices.ContainsFunc(ignore, func(i string) bool { return strings.EqualFold(i, check) })
	}
	for _, f := range findings {
		switch {
		case f.Level == "WARNING" && f.Check == "Firewalld" && firewalldVouched(f.Message, fw):
			v.Dropped = append(v.Dropped, f)
		case ignored(f.Check):
			v.Accepted = append(v.Accepted, f)
		default:
			v.Fatal = append(v.Fatal, f)
		}
	}
	return v
}

// firewalldVouched reports whether the firewall stage opened, through
// firewalld, every TCP port the warning names.
func firewalldVouched(msg string, fw stage.FirewallResult) bool {
	if fw.Backend != "firewalld" {
		return false
	}
	m := firewalldPortsRE.FindStringSubmatch(msg)
	if m == nil || strings.TrimSpace(m[1]) == "" {
		return false
	}
	for _, p := range strings.Fields(m[1]) {
		n, err := strconv.Atoi(p)
		if err != nil || !portOpen(fw.Open, n) {
			return false
		}
	}
	return true
}

// portOpen reports whether n/tcp is in open ("6443/tcp", "2379-2380/tcp").
func portOpen(open []string, n int) bool {
	for _, o := range open {
		rng, proto, ok := strings.Cut(o, "/")
		if !ok || proto != "tcp" {
			continue
		}
		first, last, isRange := strings.Cut(rng, "-")
		if !isRange {
			last = first
		}
		a, err1 := strconv.Atoi(first)
		b, err2 := strconv.Atoi(last)
		if err1 == nil && err2 == nil && a <= n && n <= b {
			return true
		}
	}
	return false
}
