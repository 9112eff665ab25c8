package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"kubeboot.dev/kubeboot/bootstrapd/source"
	"kubeboot.dev/kubeboot/image/flash"
	"kubeboot.dev/kubeboot/internal/flashtest"
	"kubeboot.dev/kubeboot/internal/netnstest"
)

func TestFlashUsage(t *testing.T) {
	for _, args := range [][]string{{}, {"--image", "x.raw"}, {"--device", "/dev/null"}, {"--image", "x", "--device", "y", "extra"}} {
		if code := runFlash(args); code != exitUsage {
			t.Errorf("kubeboot flash %v: exit %d, want %d", args, code, exitUsage)
		}
	}
}

// kubeboot flash --config on a loop device: a worker's config with the
// cluster's bundle ends up in the CIDATA partition, where bootstrapd's
// NoCloud reader finds it with the worker's share of the secrets only.
// Without --yes and without a terminal nothing is written.
func TestFlashWithConfig(t *testing.T) {
	flashtest.NeedRoot(t, "mkfs.vfat", "mcopy")
	dir := t.TempDir()
	raw := flashtest.Image(t, dir)
	dev, backing := flashtest.Loop(t, dir, flashtest.ImageSize+64*flashtest.MiB)
	cfgDir := t.TempDir()
	if code := runSecrets([]string{"gen", "-o", filepath.Join(cfgDir, "secrets.yaml")}); code != exitOK {
		t.Fatalf("kubeboot secrets gen: exit %d", code)
	}
	worker, err := os.ReadFile("../../configs/worker.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(cfgDir, "worker.yaml")
	if err := os.WriteFile(cfg, worker, 0o600); err != nil {
		t.Fatal(err)
	}

	// go test's stdin is not a terminal. A flash writes the image's first
	// chunk (the GPT) first: the disk's first MiB of old data is the witness.
	before := head(t, backing)
	if code := runFlash([]string{"--image", raw, "--device", dev, "--config", cfg}); code != exitUsage {
		t.Errorf("without --yes and a terminal: exit %d, want %d", code, exitUsage)
	}
	if head(t, backing) != before {
		t.Error("the device changed although nothing was confirmed")
	}

	if code := runFlash([]string{"--image", raw, "--device", dev, "--config", cfg, "--yes"}); code != exitOK {
		t.Fatalf("kubeboot flash --config --yes: exit %d", code)
	}
	var pt struct {
		PartitionTable struct {
			Partitions []struct {
				Start, Size int64
				Name        string
			}
		}
	}
	out, err := exec.Command("sfdisk", "--json", dev).Output()
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(out, &pt); err != nil {
		t.Fatal(err)
	}
	parts := pt.PartitionTable.Partitions
	if len(parts) != 3 || parts[2].Name != flash.CIDATAPartitionName {
		t.Fatalf("partitions %+v: want the image's two and CIDATA", parts)
	}
	part := filepath.Join(dir, "cidata.part")
	netnstest.Run(t, "dd", "if="+backing, "of="+part, "bs=512", "skip="+strconv.FormatInt(parts[2].Start, 10),
		"count="+strconv.FormatInt(parts[2].Size, 10), "status=none")
	res, err := source.ReadNoCloud(part)
	if err != nil {
		t.Fatal(err)
	}
	if res.Config.Hostname != "worker.home.local" || res.Secrets == nil || res.Secrets.Token == "" {
		t.Fatalf("read back: hostname %q, secrets carried: %v", res.Config.Hostname, res.Secrets != nil)
	}
	if res.Secrets.CA.Key != "" || res.Secrets.ServiceAccount.Key != "" {
		t.Error("a worker's CIDATA partition holds a private key")
	}
	if strings.Contains(string(out), "STATE") == false {
		t.Errorf("the image's STATE is gone from the table:\n%s", out)
	}
}

func head(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, flashtest.MiB)
	if _, err := f.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The answer must be y or yes; anything else, an empty line and no line
// at all included, is no.
func TestConfirm(t *testing.T) {
	for in, want := range map[string]bool{"y\n": true, "YES\n": true, " yes \n": true, "\n": false, "": false, "n\n": false, "yess\n": false, "y": true} {
		var out strings.Builder
		got, err := confirm(strings.NewReader(in), &out, "Write it?")
		if err != nil || got != want {
			t.Errorf("answer %q: %v, %v; want %v", in, got, err, want)
		}
		if out.String() != "Write it? [y/N] " {
			t.Errorf("prompt %q", out.String())
		}
	}
}
