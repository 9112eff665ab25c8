package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var examples = []string{"controller.yaml", "control-plane.yaml", "worker.yaml"}

func examplePath(name string) string { return filepath.Join("..", "..", "configs", name) }

func runValidateCapture(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = validateFiles(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestValidateExamplesExitZero(t *testing.T) {
	var args []string
	for _, e := range examples {
		args = append(args, exampleConfig(e))
	}
	code, stdout, stderr := runValidateCapture(args...)
	if code != exitOK || stderr != "" {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
	for _, a := range args {
		if !strings.Contains(stdout, a+": ok\n") {
			t.Errorf("stdout lacks %q: %s", a+": ok", stdout)
		}
	}
}

func TestValidateUsage(t *testing.T) {
	if code, _, stderr := runValidateCapture(); code != exitUsage || !strings.Contains(stderr, "usage: kubeboot validate FILE...") {
		t.Errorf("no files: exit %d, stderr %q; want %d and usage", code, stderr, exitUsage)
	}
	if code, _, _ := runValidateCapture("--bogus", exampleConfig("worker.yaml")); code != exitUsage {
		t.Errorf("unknown flag: exit %d, want %d", code, exitUsage)
	}
	if code := dispatch([]string{"validate"}); code != exitUsage {
		t.Errorf("dispatch validate without files: exit %d, want %d", code, exitUsage)
	}
	if code, _, _ := runValidateCapture("-h"); code != exitOK {
		t.Errorf("-h: exit %d, want 0", code)
	}
}

func TestValidateMissingFileFails(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	code, _, stderr := runValidateCapture(missing, exampleConfig("worker.yaml"))
	if code != exitFail || !strings.Contains(stderr, missing) {
		t.Errorf("exit %d, stderr %q; want 1 naming the file", code, stderr)
	}
}

// Breaking one value in each example gives exit 1 and an error with the
// file, the line and column of that value and its field path. Every
// problem of every file is printed, and valid files still say ok.
func TestValidateBrokenExamples(t *testing.T) {
	breaks := []struct {
		name      string
		find      string // text on the line to break, first occurrence
		replace   string
		col       int // 1-based column of the reported value, relative to the start of find
		path, msg string
	}{
		{"bad IP", "addresses: [172.16.0.", "addresses: [172.16.0.300", len("addresses: [") + 1, "network.interfaces[0].addresses[0]", `invalid IP address "172.16.0.300`},
		{"prefix 33", "/24]\n      routeMetric: 101", "/33]\n      routeMetric: 101", 0, "network.interfaces[1].addresses[0]", "prefix length /33 is out of range for IPv4 (0-32)"},
		{"unknown key", "routeMetric: 101", "routeMetrik: 101", 1, "network.interfaces[1].routeMetrik", `unknown key "routeMetrik"; did you mean "routeMetric"?`},
		{"wrong indentation", "      routeMetric: 101", "     routeMetric: 101", 6, "", "YAML syntax error"},
		{"role master", "role: ", "role: master\n#", len("role: ") + 1, "role", `did you mean "control-plane"?`},
	}
	for _, example := range examples {
		orig, err := os.ReadFile(exampleConfig(example))
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range breaks {
			t.Run(example+"/"+b.name, func(t *testing.T) {
				text := string(orig)
				at := strings.Index(text, b.find)
				if at < 0 {
					t.Fatalf("%q not in %s", b.find, example)
				}
				broken := text[:at] + b.replace + text[at+len(b.find):]
				line := strings.Count(text[:at], "\n") + 1
				col := at - strings.LastIndex(text[:at], "\n")
				if b.col > 0 {
					col += b.col - 1
				} else {
					// the value is the flow list item on that line
					line = strings.Count(text[:at], "\n") + 1
					start := strings.LastIndex(text[:at], "[") + 1
					col = start - strings.LastIndex(text[:at], "\n")
				}
				// Beside the bundle the examples name.
				file := filepath.Join(filepath.Dir(exampleConfig(example)), "broken-"+example)
				if err := os.WriteFile(file, []byte(broken), 0o644); err != nil {
					t.Fatal(err)
				}
				good := exampleConfig("worker.yaml")
				code, stdout, stderr := runValidateCapture(file, good)
				if code != exitFail {
					t.Fatalf("exit %d, want 1; stderr:\n%s", code, stderr)
				}
				if !strings.Contains(stdout, good+": ok") {
					t.Errorf("the valid file is not reported ok: %q", stdout)
				}
				prefix := fmt.Sprintf("%s:%d:%d: ", file, line, col)
				if b.path != "" {
					prefix += b.path + ": "
				}
				for _, l := range strings.Split(stderr, "\n") {
					if strings.HasPrefix(l, prefix) && strings.Contains(l, b.msg) {
						return
					}
				}
				t.Errorf("no line starting %q containing %q in:\n%s", prefix, b.msg, stderr)
			})
		}
	}
}
