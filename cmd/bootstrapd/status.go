package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"kubeboot.dev/kubeboot/bootstrapd"
	"kubeboot.dev/kubeboot/bootstrapd/progress"
	"kubeboot.dev/kubeboot/bootstrapd/state"
	"kubeboot.dev/kubeboot/internal/printable"
)

const (
	// logTailLines is how much of a failed stage's tool output status shows.
	logTailLines = 20
	// logTailBytes bounds what is read of that output (its end).
	logTailBytes = 64 << 10
	// maxField bounds one printed field (a status line listing many pods).
	maxField = 400
)

// printStatus shows the node's state: where the config came from, this
// boot's run, the done and failed markers, then every stage of both phases
// with its kind, state and timing, and on failure what to do. Every field
// goes through show (printable.String); none of them holds a secret.
func printStatus(root string, w io.Writer) error {
	st := state.Open(root)
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
	records, err := st.Stages()
	if err != nil {
		return err
	}
	boot, err := progress.Read(root)
	if err != nil {
		return err
	}
	if src == nil && done == nil && failed == nil && len(records) == 0 && boot == nil {
		return errors.New("no state under " + st.Dir + ": bootstrapd has not run on this root")
	}

	current := ""
	if src != nil {
		current = src.ConfigHash
		fmt.Fprintf(w, "source:  %s\nconfig:  %s (first loaded %s)\n", show(src.Source), show(src.ConfigHash), src.Loaded.Format(time.RFC3339))
		if src.InstanceID != "" {
			fmt.Fprintf(w, "instance-id: %s\n", show(src.InstanceID))
		}
	}
	switch {
	case boot == nil:
		fmt.Fprintln(w, "boot:    bootstrapd has not run on this boot")
	case boot.Alive():
		fmt.Fprintf(w, "role:    %s\nboot:    bootstrapd running since %s (pid %d)\n", show(boot.Role), boot.Started.Format(time.RFC3339), boot.PID)
	default:
		fmt.Fprintf(w, "role:    %s\nboot:    bootstrapd ran at %s, last update %s\n", show(boot.Role), boot.Started.Format(time.RFC3339), boot.Updated.Format(time.RFC3339))
	}
	if done != nil {
		fmt.Fprintf(w, "done:    %s (config %s); the stages took %s\n", done.Time.Format(time.RFC3339), show(done.ConfigHash), progress.Total(done))
		var timings []string
		for _, t := range done.Stages {
			timings = append(timings, show(t.Stage)+" "+show(t.Duration))
		}
		fmt.Fprintf(w, "         %s\n", strings.Join(timings, ", "))
	} else {
		fmt.Fprintln(w, "done:    no")
	}
	if failed != nil {
		fmt.Fprintf(w, "failed:  stage %s at %s after %d attempts: %s\n", show(failed.Stage), failed.Time.Format(time.RFC3339), failed.Attempts, printableLines(failed.Reason, "         "))
		if err := printLogTails(w, root, st, failed.Stage); err != nil {
			return err
		}
		fmt.Fprintln(w, "         to retry: fix the cause; bootstrapd tries again at the next boot, or now: systemctl restart bootstrapd")
		fmt.Fprintln(w, "         the whole log: journalctl -u bootstrapd")
	} else {
		fmt.Fprintln(w, "failed:  no")
	}

	plan := bootstrapd.Plan()
	lines, err := progress.Lines(st, boot, plan, failed)
	if err != nil {
		return err
	}
	byStage := map[string]state.StageRecord{}
	for _, r := range records {
		byStage[r.Stage] = r
	}
	rows := [][]string{{"STAGE", "KIND", "STATE", "DURATION", "ATTEMPTS", "LAST APPLIED", "CONFIG"}}
	var phases []string
	for _, l := range lines {
		if !slices.Contains(phases, l.Phase) {
			phases = append(phases, l.Phase)
		}
	}
	type row struct {
		phase  string
		cells  []string
		detail string
	}
	var all []row
	for _, l := range lines {
		r := byStage[l.Stage]
		delete(byStage, l.Stage)
		applied, cfg := "-", "-"
		if !l.Finished.IsZero() {
			applied = l.Finished.Format(time.RFC3339)
			cfg = r.ConfigHash
			if current != "" && cfg != current {
				cfg += " (not the current config)"
			}
		}
		attempts := "-"
		if l.Attempts > 0 {
			attempts = fmt.Sprint(l.Attempts)
		}
		all = append(all, row{l.Phase, []string{l.Stage, l.Kind, l.State, orDash(l.Duration), attempts, applied, cfg}, l.Detail})
	}
	for _, r := range all {
		rows = append(rows, r.cells)
	}
	widths := columnWidths(rows)
	for _, phase := range phases {
		fmt.Fprintf(w, "phase %s:\n", show(phase))
		fmt.Fprintln(w, formatRow(rows[0], widths))
		for _, r := range all {
			if r.phase != phase {
				continue
			}
			fmt.Fprintln(w, formatRow(r.cells, widths))
			if r.detail != "" {
				fmt.Fprintf(w, "      %s\n", show(r.detail))
			}
		}
	}
	// Records of stages that are no longer in the plan (a renamed stage).
	var others []string
	for name := range byStage {
		others = append(others, name)
	}
	slices.Sort(others)
	for _, name := range others {
		r := byStage[name]
		fmt.Fprintf(w, "recorded, not in the plan: %s (%s, applied %s)\n", show(name), show(r.Kind), r.Finished.Format(time.RFC3339))
	}
	return nil
}

// printLogTails shows the end of every *.log a failed stage keeps in its
// state directory (the kubeadm stages keep kubeadm's output there, secrets
// masked).
func printLogTails(w io.Writer, root string, st *state.Store, stageName string) error {
	logs, err := filepath.Glob(filepath.Join(st.StageDir(stageName), "*.log"))
	if err != nil {
		return err
	}
	for _, p := range logs {
		lines, err := tailLines(p, logTailLines)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "         last %d lines of /%s:\n", len(lines), show(rel))
		for _, l := range lines {
			fmt.Fprintf(w, "           | %s\n", show(l))
		}
	}
	return nil
}

// tailLines returns the last n lines of the file, reading at most its last
// logTailBytes.
func tailLines(path string, n int) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	off := max(info.Size()-logTailBytes, 0)
	buf := make([]byte, info.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if off > 0 { // drop the partial first line
		if i := bytes.IndexByte(buf, '\n'); i >= 0 {
			buf = buf[i+1:]
		}
	}
	lines := strings.Split(strings.TrimRight(string(buf), "\n"), "\n")
	if len(lines) == 1 && lines[0] == "" {
		return nil, nil
	}
	return lines[max(len(lines)-n, 0):], nil
}

// show is the one function every printed field goes through: printable
// (no control characters reach the terminal) and bounded.
func show(s string) string {
	s = printable.String(s)
	if r := []rune(s); len(r) > maxField {
		return string(r[:maxField]) + "..."
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func columnWidths(rows [][]string) []int {
	widths := make([]int, len(rows[0]))
	for _, r := range rows {
		for i, c := range r {
			widths[i] = max(widths[i], len([]rune(show(c))))
		}
	}
	return widths
}

func formatRow(cells []string, widths []int) string {
	var b strings.Builder
	b.WriteString("  ")
	for i, c := range cells {
		c = show(c)
		b.WriteString(c)
		if i < len(cells)-1 {
			b.WriteString(strings.Repeat(" ", widths[i]-len([]rune(c))+2))
		}
	}
	return strings.TrimRight(b.String(), " ")
}
