package machineconfig

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

const boundsHead = "apiVersion: kubeboot.dev/v1alpha1\nkind: MachineConfig\nrole: init\nhostname: a.example.com\n" +
	"kubernetes:\n  version: v1.37.2\n  controlPlaneEndpoint: a.example.com:6443\n"

// Issue 10 item 9: system.modules: ["--version"] passed validation and
// reached modprobe as an option.
func TestModuleNamesThatAreOptions(t *testing.T) {
	for _, m := range []string{"--version", "-r", "-", "a b", "x/y", "../evil", strings.Repeat("m", 56)} {
		_, err := Parse("m.yaml", []byte(boundsHead+"system:\n  modules: [br_netfilter, "+fmt.Sprintf("%q", m)+"]\n"))
		if err == nil || !strings.Contains(err.Error(), "m.yaml:9:27: system.modules[1]: invalid kernel module name") {
			t.Errorf("module %q: err = %v, want it rejected at m.yaml:9:27", m, err)
		}
	}
	for _, m := range []string{"br_netfilter", "nf-conntrack", "_x", strings.Repeat("m", 55)} {
		if _, err := Parse("m.yaml", []byte(boundsHead+"system:\n  modules: ["+m+"]\n")); err != nil {
			t.Errorf("module %q: %v", m, err)
		}
	}
}

// Issue 10 item 2: a 4 MB config took 600 MB and 49 s and every one of its
// errors was reported; /dev/zero ran out of memory.
func TestSizeAndErrorBounds(t *testing.T) {
	if _, err := Load("/dev/zero"); err == nil || err.Error() != "/dev/zero:1:1: larger than 128 KiB, the limit for a machine config (real ones are a few KiB)" {
		t.Errorf("Load(/dev/zero) = %v", err)
	}
	huge := bytes.Repeat([]byte("# comment\n"), MaxSize/10+1)
	for name, parse := range map[string]func() error{
		"Parse":        func() error { _, err := Parse("h.yaml", huge); return err },
		"ParseNetplan": func() error { _, err := ParseNetplan("h.yaml", huge); return err },
	} {
		if err := parse(); err == nil || !strings.Contains(err.Error(), "h.yaml:1:1: larger than 128 KiB") {
			t.Errorf("%s of %d bytes: err = %v", name, len(huge), err)
		}
	}

	var b strings.Builder
	b.WriteString(boundsHead)
	for i := 0; b.Len() < MaxSize-100; i++ {
		fmt.Fprintf(&b, "key%06d: x\n", i)
	}
	_, err := Parse("u.yaml", []byte(b.String()))
	list, _ := err.(ErrorList)
	lines := strings.Split(err.Error(), "\n")
	if len(list) < 5000 || len(lines) != MaxReported+1 || lines[MaxReported] != fmt.Sprintf("... and %d more problems (fix these first)", len(list)-MaxReported) {
		t.Errorf("%d problems printed as %d lines, last %q", len(list), len(lines), lines[len(lines)-1])
	}

	long := strings.Repeat("a", 100000)
	_, err = Parse("l.yaml", []byte(strings.Replace(boundsHead, "a.example.com\n", long+".example.com\n", 1)))
	if err == nil || len(err.Error()) > 2*maxMessage || !strings.Contains(err.Error(), "l.yaml:4:11: hostname: ") || !strings.Contains(err.Error(), "bytes cut") ||
		!strings.HasSuffix(err.Error(), "is longer than 253 characters") {
		t.Errorf("a value as long as the file: err (%d bytes) = %.300s", len(err.Error()), err)
	}
}

func TestClipKeepsRunes(t *testing.T) {
	s := clip(strings.Repeat("é", 1000))
	if !strings.Contains(s, "bytes cut") || len(s) > maxMessage+40 || !strings.HasPrefix(s, "é") || strings.ContainsRune(s, '\uFFFD') {
		t.Errorf("clip = %q", s)
	}
}
