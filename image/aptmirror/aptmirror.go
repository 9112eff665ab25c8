// Package aptmirror finds the Debian mirror the build machine's own apt uses.
// An ImageSpec without base.mirror builds from it, the way an image builder
// on a Debian host is expected to behave ("same mirror as my build host"),
// and the project does not have to name any package-registry host.
package aptmirror

import (
	"bufio"
	"bytes"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Resolve returns explicit when it is set, else the build machine's mirror
// (Find("/")). fromHost says which of the two it is.
func Resolve(explicit string) (mirror string, fromHost bool, err error) {
	if explicit != "" {
		return explicit, false, nil
	}
	m, err := Find("/")
	if err != nil {
		return "", false, err
	}
	return m, true, nil
}

// Find reads root's apt sources in apt's own order (etc/apt/sources.list,
// then etc/apt/sources.list.d/*.list and *.sources sorted by name) and
// returns the first http(s) URI of a "deb" entry with component main and
// a non-security suite whose path ends in /debian (the main archive, not
// debian-security or a third-party repository).
func Find(root string) (string, error) {
	files := []string{filepath.Join(root, "etc/apt/sources.list")}
	parts, _ := filepath.Glob(filepath.Join(root, "etc/apt/sources.list.d/*"))
	sort.Strings(parts)
	for _, p := range parts {
		if strings.HasSuffix(p, ".list") || strings.HasSuffix(p, ".sources") {
			files = append(files, p)
		}
	}
	var read []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			read = append(read, f+" (unreadable: "+shortErr(err)+")")
			continue
		}
		read = append(read, f)
		var entries []entry
		if strings.HasSuffix(f, ".sources") {
			entries = parseDeb822(data)
		} else {
			entries = parseOneLine(data)
		}
		for _, e := range entries {
			if u := e.debianMirror(); u != "" {
				return u, nil
			}
		}
	}
	return "", fmt.Errorf("no Debian mirror in the build machine's apt sources (read %s): "+
		"need a \"deb\" entry with an http(s) URI ending in /debian, a Debian suite and component main, "+
		"or set base.mirror in the image spec", strings.Join(read, ", "))
}

func shortErr(err error) string {
	if os.IsNotExist(err) {
		return "missing"
	}
	return err.Error()
}

// entry is one source: its types, URIs, suites and components.
type entry struct {
	types, uris, suites, components []string
	disabled                        bool
}

func (e entry) debianMirror() string {
	if e.disabled || !has(e.types, "deb") || !has(e.components, "main") {
		return ""
	}
	debianSuite := false
	for _, s := range e.suites {
		if s != "" && !strings.HasSuffix(s, "-security") && !strings.HasSuffix(s, "/updates") {
			debianSuite = true
		}
	}
	if !debianSuite {
		return ""
	}
	for _, raw := range e.uris {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			continue
		}
		if strings.HasSuffix(strings.TrimRight(u.Path, "/"), "/debian") {
			return strings.TrimRight(raw, "/")
		}
	}
	return ""
}

func has(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// parseDeb822 reads sources.list(5)'s deb822 format: stanzas separated by
// blank lines, "Field: value" with continuation lines, # comments.
func parseDeb822(data []byte) []entry {
	var out []entry
	fields := map[string]string{}
	last := ""
	flush := func() {
		if len(fields) > 0 {
			out = append(out, entry{
				types:      strings.Fields(fields["types"]),
				uris:       strings.Fields(fields["uris"]),
				suites:     strings.Fields(fields["suites"]),
				components: strings.Fields(fields["components"]),
				disabled:   strings.EqualFold(strings.TrimSpace(fields["enabled"]), "no"),
			})
		}
		fields, last = map[string]string{}, ""
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.TrimSpace(line) == "":
			flush()
		case strings.HasPrefix(line, "#"):
		case line[0] == ' ' || line[0] == '\t':
			if last != "" {
				fields[last] += " " + strings.TrimSpace(line)
			}
		default:
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			last = strings.ToLower(strings.TrimSpace(k))
			fields[last] = strings.TrimSpace(v)
		}
	}
	flush()
	return out
}

// parseOneLine reads the one-line format:
// "deb [option=value ...] URI suite [component ...]".
func parseOneLine(data []byte) []entry {
	var out []entry
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		typ, rest := f[0], f[1:]
		if strings.HasPrefix(rest[0], "[") {
			// Options end at the first field ending in "]".
			i := 0
			for i < len(rest) && !strings.HasSuffix(rest[i], "]") {
				i++
			}
			rest = rest[min(i+1, len(rest)):]
		}
		if len(rest) < 2 {
			continue
		}
		out = append(out, entry{types: []string{typ}, uris: rest[:1], suites: rest[1:2], components: rest[2:]})
	}
	return out
}
