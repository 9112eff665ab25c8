package verify

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"kubeboot.dev/kubeboot/internal/printable"
)

// Check is one fact verify holds the node to.
type Check struct {
	Name     string `json:"name"`
	OK       bool   `json:"ok"`
	Expected string `json:"expected"`
	Found    string `json:"found"`
}

// Section is one part of the reference's environment check: what was found
// there, as the reference's commands printed it, and the checks.
type Section struct {
	Name   string   `json:"name"`  // short, for machines: "namespaces"
	Title  string   `json:"title"` // for people: "Network namespaces"
	Found  []string `json:"found"`
	Checks []Check  `json:"checks"`
}

// Report is the whole verification of one node.
type Report struct {
	Node   string `json:"node"`
	Role   string `json:"role"`
	Config string `json:"config"` // the config's hash
	Source string `json:"source"` // where the config came from
	// OK is true when every check of every section holds.
	OK       bool      `json:"ok"`
	Checks   int       `json:"checks"`
	Failed   int       `json:"failed"`
	Sections []Section `json:"sections"`
}

// Bounds of the output: a node's listing is tens of lines per section;
// a runaway one (thousands of pods) is cut, saying how much was left out.
const (
	maxFoundLines = 300
	maxField      = 400
)

func (s *Section) found(format string, a ...any) {
	s.Found = append(s.Found, fmt.Sprintf(format, a...))
}

func (s *Section) check(name string, ok bool, expected, found string) {
	s.Checks = append(s.Checks, Check{Name: name, OK: ok, Expected: expected, Found: found})
}

// pass and fail are check with the verdict in the name, for readability
// where a check is decided by its branch.
func (s *Section) pass(name, expected, found string) { s.check(name, true, expected, found) }
func (s *Section) fail(name, expected, found string) { s.check(name, false, expected, found) }

// finish bounds every field and counts the checks.
func (r *Report) finish() {
	r.Checks, r.Failed = 0, 0
	for i := range r.Sections {
		s := &r.Sections[i]
		if n := len(s.Found); n > maxFoundLines {
			s.Found = append(s.Found[:maxFoundLines-1], fmt.Sprintf("... %d more lines not shown", n-maxFoundLines+1))
		}
		for j := range s.Found {
			s.Found[j] = clip(s.Found[j])
		}
		for j := range s.Checks {
			c := &s.Checks[j]
			c.Name, c.Expected, c.Found = clip(c.Name), clip(c.Expected), clip(c.Found)
			r.Checks++
			if !c.OK {
				r.Failed++
			}
		}
		if s.Found == nil {
			s.Found = []string{}
		}
		if s.Checks == nil {
			s.Checks = []Check{}
		}
	}
	r.OK = r.Failed == 0
	r.Node, r.Role, r.Config, r.Source = clip(r.Node), clip(r.Role), clip(r.Config), clip(r.Source)
}

// clip makes a field printable (no control characters reach a terminal)
// and bounded.
func clip(s string) string {
	s = printable.String(s)
	if r := []rune(s); len(r) > maxField {
		return string(r[:maxField]) + "..."
	}
	return s
}

// WriteJSON writes the report as one JSON document.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the report for a person: section by section, what was
// found, then every check (failures with what was expected and found), and
// a summary line.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "node:   %s (role %s)\nconfig: %s from %s\n", r.Node, r.Role, r.Config, r.Source)
	var failed []string
	for i, s := range r.Sections {
		fmt.Fprintf(&b, "\n%d. %s\n", i+1, s.Title)
		for _, l := range s.Found {
			fmt.Fprintf(&b, "     %s\n", l)
		}
		if len(s.Found) > 0 && len(s.Checks) > 0 {
			b.WriteString("\n")
		}
		n := 0
		for _, c := range s.Checks {
			if c.OK {
				// What was found, unless the name or expectation says it.
				if c.Found == "" || c.Found == c.Expected || strings.Contains(c.Name, c.Found) {
					fmt.Fprintf(&b, "   ok    %s\n", c.Name)
				} else {
					fmt.Fprintf(&b, "   ok    %s: %s\n", c.Name, c.Found)
				}
				continue
			}
			n++
			fmt.Fprintf(&b, "   FAIL  %s\n           expected: %s\n           found:    %s\n", c.Name, c.Expected, c.Found)
		}
		if n > 0 {
			failed = append(failed, fmt.Sprintf("%s %d", s.Name, n))
		}
	}
	b.WriteString("\n")
	if r.OK {
		fmt.Fprintf(&b, "verify: ok, all %d checks hold\n", r.Checks)
	} else {
		fmt.Fprintf(&b, "verify: FAILED, %d of %d checks do not hold (%s)\n", r.Failed, r.Checks, strings.Join(failed, ", "))
	}
	_, err := io.WriteString(w, b.String())
	return err
}
