// Package banner is the node's console banner: what someone at the
// node's screen or serial console sees above the login prompt: the node's
// name and role, its addresses (from the kernel), the control-plane
// endpoint, where the kubeconfig is, and the state of each stage of this
// boot, with the failure when there is one.
//
// bootstrapd writes it to /run/kubeboot/issue whenever its state changes
// (a step starts or ends, a status line, a failure) and asks agetty to
// redraw (agetty --reload); the image links /etc/issue.d/50-kubeboot.issue
// to that file, and agetty (util-linux) shows /etc/issue.d/*.issue after
// /etc/issue. The file is on /run, so a new boot never shows the last
// one's state.
//
// Nothing secret is ever rendered: the banner is built only from the
// fields of View, none of which comes from the config's credentials.
package banner

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"kubeboot.dev/kubeboot/bootstrapd/progress"
	"kubeboot.dev/kubeboot/bootstrapd/state"
	"kubeboot.dev/kubeboot/internal/printable"
)

// IssueFile is the banner on the node, relative to the root.
const IssueFile = progress.Dir + "/issue"

// Width bounds every line: a serial console is 80 columns.
const Width = 79

// View is what the banner shows.
type View struct {
	Hostname  string
	Role      string // empty when no config was loaded
	Endpoint  string
	Addresses []string // "enp1s0 172.16.0.11/24"
	// Kubeconfig lists where the admin kubeconfig is; empty on a worker.
	Kubeconfig []string
	Lines      []progress.Line
	Failed     *state.Failure
	Done       *state.Done
	// Running says a bootstrapd is at work now.
	Running bool
}

// Render returns the banner as plain text, every line at most Width
// columns, every field made printable.
func Render(v View) string {
	var b strings.Builder
	line := func(s string) { b.WriteString(fit(s) + "\n") }
	field := func(name, value string) { line(fmt.Sprintf("  %-11s %s", name, value)) }

	role := v.Role
	if role == "" {
		role = "unknown (no machine config loaded)"
	}
	line(fmt.Sprintf("kubeboot node %s, role %s", printable.String(v.Hostname), printable.String(role)))
	if v.Endpoint != "" {
		field("endpoint", printable.String(v.Endpoint))
	}
	addrs := "none"
	if len(v.Addresses) > 0 {
		addrs = strings.Join(v.Addresses, ", ")
	}
	field("addresses", printable.String(addrs))
	switch {
	case v.Role == "":
	case len(v.Kubeconfig) == 0:
		field("kubeconfig", "none on a worker: use a control plane's")
	default:
		field("kubeconfig", printable.String(strings.Join(v.Kubeconfig, ", ")))
	}
	field("bootstrapd", printable.String(summary(v)))
	if len(v.Lines) > 0 {
		line("  stages")
		width := 0
		for _, l := range v.Lines {
			width = max(width, len(l.Stage))
		}
		for _, l := range v.Lines {
			if l.State == "not for this role" {
				continue
			}
			state := strings.TrimSuffix(l.State, " on this boot")
			timing := ""
			if l.Duration != "" && l.State != "running" && !strings.HasPrefix(l.State, "waits") {
				timing = l.Duration
			}
			line(strings.TrimRight(fmt.Sprintf("    %-*s %-10s %s", width, l.Stage, printable.String(state), timing), " "))
			if l.Detail != "" {
				detail := strings.TrimPrefix(l.Detail, "stage "+l.Stage+": ")
				for _, w := range wrap(printable.String(detail), "      ", detailLines) {
					line(w)
				}
			}
		}
	}
	if v.Failed != nil {
		line("  details: bootstrapd status; journalctl -u bootstrapd")
	}
	return b.String()
}

// detailLines bounds the lines of one stage's detail.
const detailLines = 4

// wrap breaks s into at most n lines of Width columns, each starting with
// indent, cutting words only when one is longer than a line.
func wrap(s, indent string, n int) []string {
	room := Width - len(indent)
	words := strings.Fields(s)
	var out []string
	cur := ""
	for len(words) > 0 && len(out) < n {
		w := words[0]
		switch {
		case cur == "" && len([]rune(w)) > room:
			r := []rune(w)
			out = append(out, indent+string(r[:room]))
			words[0] = string(r[room:])
		case cur == "":
			cur = w
			words = words[1:]
		case len([]rune(cur))+1+len([]rune(w)) <= room:
			cur += " " + w
			words = words[1:]
		default:
			out = append(out, indent+cur)
			cur = ""
		}
	}
	if cur != "" && len(out) < n {
		out = append(out, indent+cur)
		cur = ""
	}
	if len(words) > 0 || cur != "" {
		last := []rune(out[len(out)-1])
		out[len(out)-1] = string(last[:min(len(last), Width-3)]) + "..."
	}
	return out
}

// summary is bootstrapd's state in one line.
func summary(v View) string {
	if v.Failed != nil {
		attempts := "1 attempt"
		if v.Failed.Attempts != 1 {
			attempts = fmt.Sprintf("%d attempts", v.Failed.Attempts)
		}
		return fmt.Sprintf("FAILED at %s (%s, after %s)", v.Failed.Stage, v.Failed.Time.Format(time.TimeOnly), attempts)
	}
	for _, l := range v.Lines {
		if l.State == "running" && v.Running {
			return "running " + l.Stage
		}
	}
	if v.Running {
		return "running"
	}
	if v.Done != nil {
		return fmt.Sprintf("done at %s (the stages took %s)", v.Done.Time.Format(time.DateTime), progress.Total(v.Done).Round(time.Second))
	}
	return "not done"
}

// fit cuts s to Width columns (runes; the banner is ASCII but for what a
// field brings in).
func fit(s string) string {
	r := []rune(s)
	if len(r) <= Width {
		return s
	}
	return string(r[:Width-3]) + "..."
}

// Issue is the banner as an agetty issue file: agetty reads backslash
// sequences (\n is the hostname, \4 an address), so every backslash is
// doubled to print as itself.
func Issue(v View) string {
	return "\n" + strings.ReplaceAll(Render(v), `\`, `\\`) + "\n"
}

// Addresses lists the global addresses of every link but loopback, as
// "NAME ADDR/PREFIX", in link order: what the kernel has now, not what the
// config asked for.
func Addresses() ([]string, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	slices.SortFunc(links, func(a, b netlink.Link) int { return a.Attrs().Index - b.Attrs().Index })
	var out []string
	for _, l := range links {
		if l.Attrs().Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return nil, fmt.Errorf("addresses of %s: %w", l.Attrs().Name, err)
		}
		for _, a := range addrs {
			if a.Scope != unix.RT_SCOPE_UNIVERSE || a.IP.IsLinkLocalUnicast() {
				continue
			}
			out = append(out, l.Attrs().Name+" "+a.IPNet.String())
		}
	}
	return out, nil
}
