package machineconfig

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary documents to the decoder and validator (both
// entry points). Neither may panic; every error must have a position and be
// sorted; a config that parses must re-validate, hash stably and not reveal
// its secrets in any error of a broken variant.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("..", "configs", "*.yaml"))
	more, _ := filepath.Glob(filepath.Join("..", "configs", "netplan", "*.yaml"))
	tests, _ := filepath.Glob(filepath.Join("testdata", "*.yaml"))
	for _, file := range append(append(seeds, more...), tests...) {
		if data, err := os.ReadFile(file); err == nil {
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("f.yaml", data)
		checkErrors(t, err)
		if err == nil {
			if cfg == nil {
				t.Fatal("nil config without error")
			}
			if err := cfg.Validate(); err != nil {
				t.Fatalf("parsed config does not re-validate: %v", err)
			}
			if cfg.Hash() != cfg.Hash() || len(cfg.Hash()) != 64 {
				t.Fatal("unstable hash")
			}
		} else if cfg != nil {
			t.Fatal("config returned with errors")
		}
		_, err = ParseNetplan("n.yaml", data)
		checkErrors(t, err)
	})
}

func checkErrors(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	list, ok := err.(ErrorList)
	if !ok {
		t.Fatalf("error is %T, want ErrorList", err)
	}
	if len(list) == 0 {
		t.Fatal("empty ErrorList returned as an error")
	}
	for i, e := range list {
		if e.Line < 1 || e.Column < 1 || e.Message == "" {
			t.Fatalf("error without position or message: %#v", e)
		}
		if i > 0 && e.Line < list[i-1].Line {
			t.Fatalf("errors not sorted: %v", list)
		}
		if strings.Contains(e.Message, "\n") || strings.Contains(e.Path, "\n") || strings.Contains(e.File, "\n") {
			t.Fatalf("multi-line error breaks the one-error-per-line format: %q", e.Error())
		}
	}
}

// FuzzParseNetplan feeds arbitrary documents to the network-config parser,
// seeded with the netplan examples. It may not panic; every error has a
// position; a network it accepts is one the config validator accepts too
// (bootstrapd validates it again inside the merged NoCloud config).
func FuzzParseNetplan(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("..", "configs", "netplan", "*.yaml"))
	tests, _ := filepath.Glob(filepath.Join("testdata", "netplan-*.yaml"))
	for _, file := range append(seeds, tests...) {
		if data, err := os.ReadFile(file); err == nil {
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		net, err := ParseNetplan("n.yaml", data)
		checkErrors(t, err)
		if err != nil {
			return
		}
		if net == nil {
			t.Fatal("nil network without error")
		}
		verr := (&MachineConfig{Network: *net}).Validate()
		list, _ := verr.(ErrorList)
		for _, e := range list {
			if strings.HasPrefix(e.Path, "network") {
				t.Fatalf("ParseNetplan accepted a network the validator refuses: %v", e)
			}
		}
	})
}
