package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestImageUsageErrors(t *testing.T) {
	for _, args := range [][]string{nil, {"make"}, {"build", "extra-arg"}, {"build", "--no-such-flag"}} {
		if code := runImage(args); code != exitUsage {
			t.Errorf("kubeboot image %v: exit %d, want %d", args, code, exitUsage)
		}
	}
	t.Setenv("SOURCE_DATE_EPOCH", "12")
	if code := runImage([]string{"build"}); code != exitUsage {
		t.Errorf("SOURCE_DATE_EPOCH before 1980: exit %d, want %d", code, exitUsage)
	}
}

func TestImageBuildFailsBeforeWritingOnMissingInputs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("kubeboot image build refuses to run without root (CI runs as root)")
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "node.raw")
	code := runImage([]string{"build", "--spec", examplePath("image.yaml"), "-o", out, "--cache", dir, "--bootstrapd", filepath.Join(dir, "missing")})
	if code != exitFail {
		t.Errorf("exit %d, want %d", code, exitFail)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("a failed build left %s", out)
	}
}

func TestCIDATA(t *testing.T) {
	dir := t.TempDir()
	if code := runCIDATA([]string{"--config", exampleConfig("worker.yaml")}); code != exitUsage {
		t.Errorf("no -o: exit %d, want %d", code, exitUsage)
	}
	if code := runCIDATA([]string{"-o", filepath.Join(dir, "seed.qcow2"), "--config", exampleConfig("worker.yaml")}); code != exitUsage {
		t.Errorf("bad extension: exit %d, want %d", code, exitUsage)
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("kind: Nope\n"), 0o644)
	if code := runCIDATA([]string{"-o", filepath.Join(dir, "bad.iso"), "--config", bad}); code != exitFail {
		t.Errorf("invalid config: exit %d, want %d", code, exitFail)
	}
	if _, err := os.Stat(filepath.Join(dir, "bad.iso")); !os.IsNotExist(err) {
		t.Error("an invalid config still produced a volume")
	}
	if _, err := exec.LookPath("xorriso"); err != nil {
		t.Skip("xorriso not installed (scripts/setup-host.sh)")
	}
	seed := filepath.Join(dir, "seed.iso")
	if code := runCIDATA([]string{"-o", seed, "--config", exampleConfig("worker.yaml"), "--network-config", examplePath("netplan/reference.yaml")}); code != exitOK {
		t.Fatalf("exit %d", code)
	}
	out, err := exec.Command("xorriso", "-indev", seed, "-pvd_info").CombinedOutput()
	if err != nil {
		t.Fatalf("xorriso -pvd_info: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "Volume Id    : cidata") {
		t.Errorf("volume id is not cidata:\n%s", out)
	}
	ls, err := exec.Command("xorriso", "-indev", seed, "-ls", "/").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"'user-data'", "'meta-data'", "'network-config'"} {
		if !strings.Contains(string(ls), f) {
			t.Errorf("volume lacks %s:\n%s", f, ls)
		}
	}
}
