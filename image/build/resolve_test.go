package build

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kubeboot.dev/kubeboot/clustersecrets"
	"kubeboot.dev/kubeboot/internal/cachetest"
	"kubeboot.dev/kubeboot/machineconfig"
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
	// The example worker names secrets.yaml next to it: the image gets the
	// worker's share of the bundle beside the baked config, both 0600.
	secrets, err := clustersecrets.Generate()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	example, _ := os.ReadFile("../../configs/worker.yaml")
	good := filepath.Join(dir, "worker.yaml")
	os.WriteFile(good, example, 0o600)
	os.WriteFile(filepath.Join(dir, "secrets.yaml"), clustersecrets.Marshal(secrets), 0o600)
	in, err = resolve(Options{SpecPath: spec, CacheDir: empty, Bootstrapd: bin, OSOnly: true, MachineConfig: good})
	if err != nil {
		t.Fatal(err)
	}
	baked := map[string]*fileInput{}
	for i := range in.files {
		baked[in.files[i].Path] = &in.files[i]
	}
	if f := baked["/usr/share/kubeboot/machine.yaml"]; f == nil || f.Mode != 0o600 || string(f.Data) != string(example) {
		t.Errorf("machine config not baked 0600 at the path bootstrapd reads: %+v", f)
	}
	f := baked["/usr/share/kubeboot/secrets.yaml"]
	if f == nil || f.Mode != 0o600 {
		t.Fatalf("bundle not baked 0600 next to the config: %+v", f)
	}
	b, err := machineconfig.ParseBundle("baked", f.Data)
	if err != nil || b.HasPrivateKeys() || b.CA.Cert != secrets.CA.Cert || b.Token != secrets.Token {
		t.Errorf("the worker's image must hold the CA certificate and token only (%v)", err)
	}
	if !in.secret {
		t.Error("an image with a baked config is not marked private")
	}

	// A bundle the build cannot carry is refused at the field naming it.
	abs := filepath.Join(dir, "abs.yaml")
	os.WriteFile(abs, []byte(strings.Replace(string(example), "secretsBundle: secrets.yaml", "secretsBundle: /etc/kubeboot/secrets.yaml", 1)), 0o600)
	line := 1 + strings.Count(string(example)[:strings.Index(string(example), "secretsBundle:")], "\n")
	_, err = resolve(Options{SpecPath: spec, CacheDir: empty, Bootstrapd: bin, OSOnly: true, MachineConfig: abs})
	if want := fmt.Sprintf("%s:%d:20: kubernetes.credentials.secretsBundle: secretsBundle \"/etc/kubeboot/secrets.yaml\": kubeboot image build carries", abs, line); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("absolute bundle path: err = %v, want %q", err, want)
	}
	os.Remove(filepath.Join(dir, "secrets.yaml"))
	if _, err = resolve(Options{SpecPath: spec, CacheDir: empty, Bootstrapd: bin, OSOnly: true, MachineConfig: good}); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing bundle: err = %v", err)
	}
}

// A baked config with a mirror for a registry of the image's pinned images
// (ghcr.io serves flannel in configs/image.yaml) is refused at build time,
// as the node's registries stage would refuse it.
func TestResolveRefusesMirrorsOfPinnedRegistries(t *testing.T) {
	spec, err := filepath.Abs("../../configs/image.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cachetest.Image(t, "ghcr.io/flannel-io/flannel:v0.28.10") // skips without make artifacts
	bin := filepath.Join(t.TempDir(), "bootstrapd")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "machine.yaml")
	os.WriteFile(cfg, []byte("apiVersion: kubeboot.dev/v1alpha1\nkind: MachineConfig\nrole: init\nhostname: a.example.com\n"+
		"kubernetes:\n  version: v1.37.2\n  controlPlaneEndpoint: a.example.com:6443\n"+
		"containerd:\n  mirrors:\n    - registry: ghcr.io\n      endpoints:\n        - url: https://m.example\n"), 0o600)
	cache := filepath.Join(os.Getenv("HOME"), ".cache/kubeboot")
	if x := os.Getenv("XDG_CACHE_HOME"); x != "" {
		cache = filepath.Join(x, "kubeboot")
	}
	_, err = resolve(Options{SpecPath: spec, CacheDir: cache, Bootstrapd: bin, MachineConfig: cfg})
	if err == nil || !strings.Contains(err.Error(), "containerd.mirrors[0].registry: ghcr.io serves images this node image pins") {
		t.Errorf("resolve: %v, want the mirror for ghcr.io refused", err)
	}
}
