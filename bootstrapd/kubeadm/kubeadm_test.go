package kubeadm

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netns"

	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/clustersecrets"
	"kubeboot.dev/kubeboot/internal/cachetest"
	"kubeboot.dev/kubeboot/machineconfig"
	"kubeboot.dev/kubeboot/nodepath"
)

// initConfig is configs/controller.yaml with fresh cluster secrets inline.
func initConfig(t *testing.T) *machineconfig.MachineConfig {
	t.Helper()
	secrets, err := clustersecrets.Generate()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile("../../configs/controller.yaml")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(data), "    secretsBundle: secrets.yaml\n", "", 1)
	cfg, err := machineconfig.Parse("controller.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Kubernetes.Credentials.Secrets = secrets
	return cfg
}

// TestInitStopsAtPreflightOnThisHost runs the kubeadm-init stage with the
// pinned kubeadm on the test machine, which is no node (no containerd, no
// kubelet): kubeadm's real preflight fails, and the stage must report its
// findings and go no further. What it did before is checked: the CAs
// installed 0600, the rendered config 0600 in the 0700 state directory,
// kubeadm's output kept with the token masked.
func TestInitStopsAtPreflightOnThisHost(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("kubeadm's preflight needs root")
	}
	bin := cachetest.File(t, "kubeadm")
	root := t.TempDir()
	stateDir := filepath.Join(root, "var/lib/kubeboot/stages/kubeadm-init")
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := initConfig(t)
	env := &stage.Env{Root: root, NetNS: netns.None(), Config: cfg, StateDir: stateDir,
		Log: slog.New(slog.DiscardHandler), Data: &stage.RunData{}}
	s := &Stage{name: "kubeadm-init", bin: bin}
	if err := s.Validate(context.Background(), env); err != nil {
		t.Fatalf("Validate: %v (the pinned kubeadm must be the config's version)", err)
	}
	_, err := s.Apply(context.Background(), env)
	if err == nil || !strings.Contains(err.Error(), "kubeadm preflight found") || !strings.Contains(err.Error(), "[ERROR ") {
		log, _ := os.ReadFile(filepath.Join(stateDir, LogFile))
		t.Fatalf("Apply = %v; want kubeadm's preflight findings; kubeadm.log:\n%s", err, log)
	}
	if stage.IsTemporary(err) {
		t.Error("a preflight finding is not worth retrying")
	}
	log, _ := os.ReadFile(filepath.Join(stateDir, LogFile))
	if !strings.Contains(string(log), "phase preflight --config") || strings.Contains(string(log), "=== "+"kubeadm init --config") {
		t.Errorf("kubeadm.log: want the preflight run and no kubeadm init:\n%s", log)
	}
	token := cfg.Kubernetes.Credentials.JoinToken().Reveal()
	for _, text := range []string{string(log), err.Error()} {
		if strings.Contains(text, token) {
			t.Errorf("the token leaked:\n%s", text)
		}
	}
	for path, mode := range map[string]os.FileMode{
		filepath.Join(stateDir, "kubeadm.yaml"): 0o600,
		stateDir:                                0o700 | os.ModeDir,
		filepath.Join(root, nodepath.PKIDir, "ca.key"):             0o600,
		filepath.Join(root, nodepath.PKIDir, "etcd", "ca.key"):     0o600,
		filepath.Join(root, nodepath.PKIDir, "front-proxy-ca.key"): 0o600,
		filepath.Join(root, nodepath.PKIDir, "sa.key"):             0o600,
	} {
		if info, err := os.Stat(path); err != nil || info.Mode() != mode {
			t.Errorf("%s: %v %v, want mode %v", path, info, err, mode)
		}
	}
	var verdict Verdict
	if data, err := os.ReadFile(filepath.Join(stateDir, PreflightFile)); err != nil || json.Unmarshal(data, &verdict) != nil || len(verdict.Fatal) == 0 {
		t.Errorf("%s: %s %v; want the fatal findings recorded", PreflightFile, data, err)
	}
	if _, err := os.Stat(filepath.Join(stateDir, succeededFile)); err == nil {
		t.Error("marked as succeeded")
	}
}

func TestValidateRefusesAnotherVersion(t *testing.T) {
	bin := cachetest.File(t, "kubeadm")
	cfg := initConfig(t)
	cfg.Kubernetes.Version = "v1.36.3"
	env := &stage.Env{Root: t.TempDir(), Config: cfg, Log: slog.New(slog.DiscardHandler)}
	err := (&Stage{name: "kubeadm-init", bin: bin}).Validate(context.Background(), env)
	if err == nil || !strings.Contains(err.Error(), "kubernetes.version is v1.36.3 but the image's kubeadm is v1.37.2") {
		t.Errorf("Validate = %v", err)
	}
}
