package build

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestResolveNamesWhatIsMissing(t *testing.T) {
	spec, err := filepath.Abs("../../configs/image.yaml")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "bootstrapd")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	empty := t.TempDir()

	_, err = resolve(Options{SpecPath: spec, CacheDir: empty, Bootstrapd: bin})
	if err == nil || !strings.Contains(err.Error(), "kubeadm") || !strings.Contains(err.Error(), "make artifacts") {
		t.Errorf("empty cache: err = %v, want it to name kubeadm and make artifacts", err)
	}

	_, err = resolve(Options{SpecPath: spec, CacheDir: empty, Bootstrapd: filepath.Join(empty, "nope"), OSOnly: true})
	if err == nil || !strings.Contains(err.Error(), "make build") {
		t.Errorf("missing bootstrapd: err = %v", err)
	}

	in, err := resolve(Options{SpecPath: spec, CacheDir: empty, Bootstrapd: bin, OSOnly: true})
	if err != nil {
		t.Fatalf("OS-only resolve: %v", err)
	}
	if len(in.enable) != 1 || in.enable[0] != "bootstrapd.service" || len(in.files) != 1 {
		t.Errorf("OS-only inputs: enable %v, files %v", in.enable, in.files)
	}
	for _, p := range []string{"systemd-repart", "initramfs-tools", "systemd-boot-efi"} {
		found := false
		for _, q := range in.rootfs.PackageList() {
			found = found || q == p
		}
		if !found {
			t.Errorf("package list lacks %s", p)
		}
	}
	if in.diskSize != 8<<30 || !in.qcow2 {
		t.Errorf("diskSize %d qcow2 %v, want 8GiB and qcow2 from configs/image.yaml", in.diskSize, in.qcow2)
	}

	bad := filepath.Join(t.TempDir(), "machine.yaml")
	os.WriteFile(bad, []byte("kind: Nope\n"), 0o644)
	if _, err := resolve(Options{SpecPath: spec, CacheDir: empty, Bootstrapd: bin, OSOnly: true, MachineConfig: bad}); err == nil || !strings.Contains(err.Error(), "--machine-config") {
		t.Errorf("invalid machine config: err = %v", err)
	}
	good, _ := filepath.Abs("../../configs/worker.yaml")
	in, err = resolve(Options{SpecPath: spec, CacheDir: empty, Bootstrapd: bin, OSOnly: true, MachineConfig: good})
	if err != nil {
		t.Fatal(err)
	}
	var baked *fileInput
	for i := range in.files {
		if in.files[i].Path == "/usr/share/kubeboot/machine.yaml" {
			baked = &in.files[i]
		}
	}
	if baked == nil || baked.Mode != 0o600 {
		t.Errorf("machine config not baked 0600 at the path bootstrapd reads: %+v", baked)
	}
}
