package kubeadm

import (
	"context"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/internal/cachetest"
	"kubeboot.dev/kubeboot/internal/testcluster"
	"kubeboot.dev/kubeboot/machineconfig"
)

// joinToken is the test cluster's bootstrap token (not a secret).
const joinToken = "kbex01.exampletoken0001"

// Issue 12, unreachable dependencies: a worker's kubeadm-join stage starts
// while its control-plane endpoint is down. It must wait with backoff and
// go on in the same Apply, with no reboot, once the endpoint answers; here
// it then reaches kubeadm join's real preflight, which fails on this
// machine (no node: TestInitStopsAtPreflightOnThisHost). The control plane
// is real (etcd and kube-apiserver, package testcluster), and what a join
// reads from it (the bootstrap token, cluster-info, the RBAC rules for
// bootstrap tokens) is made by the pinned kubeadm's own `init phase
// bootstrap-token`. The endpoint is a TCP forwarder, the load balancer in
// front of a real cluster, that comes up after downFor.
func TestJoinWaitsForItsEndpoint(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("kubeadm's preflight needs root")
	}
	bin := cachetest.File(t, "kubeadm")
	c := testcluster.Start(t, testcluster.Options{})
	tokenPhase(t, bin, c)

	// The endpoint's port, free now and refusing until the forwarder
	// takes it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	endpoint := l.Addr().String()
	l.Close()
	cfg := joinConfig(t, endpoint, c.CACertHash(t))

	root := t.TempDir()
	stateDir := filepath.Join(root, "var/lib/kubeboot/stages/kubeadm-join")
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var reports []string
	env := &stage.Env{Root: root, NetNS: netns.None(), Config: cfg, StateDir: stateDir,
		Log: slog.New(slog.DiscardHandler), Data: &stage.RunData{},
		Progress: func(s string) { mu.Lock(); reports = append(reports, s); mu.Unlock() }}
	s := &Stage{name: "kubeadm-join", join: true, bin: bin}
	if err := s.Validate(context.Background(), env); err != nil {
		t.Fatal(err)
	}

	// Up after the first try and one pause (prepareWaitMin): the stage
	// has seen the endpoint refuse at least twice by then.
	const downFor = 8 * time.Second
	api, err := url.Parse(c.APIServer)
	if err != nil {
		t.Fatal(err)
	}
	up := time.AfterFunc(downFor, func() {
		l, err := net.Listen("tcp", endpoint)
		if err != nil {
			t.Errorf("the endpoint %s: %v", endpoint, err)
			return
		}
		testcluster.Forward(t, l, api.Host)
	})
	defer up.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	_, err = s.Apply(ctx, env)
	took := time.Since(start)

	mu.Lock()
	defer mu.Unlock()
	refused := 0
	for _, r := range reports {
		if strings.HasPrefix(r, "waiting before kubeadm join: ") && strings.Contains(r, "connection refused") {
			refused++
		}
	}
	if refused < 2 {
		t.Errorf("the stage reported the endpoint refusing %d times, want at least 2; reports: %q", refused, reports)
	}
	if err == nil || !strings.Contains(err.Error(), "kubeadm preflight found") || took < downFor {
		log, _ := os.ReadFile(filepath.Join(stateDir, LogFile))
		t.Fatalf("Apply = %v after %s; want kubeadm join's preflight findings once the endpoint was back (after %s); kubeadm.log:\n%s", err, took.Round(time.Second), downFor, log)
	}
	log, _ := os.ReadFile(filepath.Join(stateDir, LogFile))
	if !strings.Contains(string(log), "join phase preflight --config") {
		t.Errorf("kubeadm.log: want kubeadm join's preflight run:\n%s", log)
	}
	if strings.Contains(string(log), joinToken) || strings.Contains(err.Error(), joinToken) || strings.Contains(strings.Join(reports, "\n"), joinToken) {
		t.Error("the token leaked into kubeadm.log, the error or the reports")
	}
	t.Logf("endpoint down for %s; the stage went on to kubeadm's preflight %s after it started, after %d refused tries", downFor, took.Round(time.Second), refused)
}

// tokenPhase runs the pinned kubeadm's bootstrap-token phase against the
// test cluster: the token, cluster-info in kube-public, and the RBAC rules
// letting bootstrap tokens read Nodes and post CSRs.
func tokenPhase(t *testing.T, bin string, c *testcluster.Cluster) {
	t.Helper()
	config := filepath.Join(t.TempDir(), "init.yaml")
	text := `apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
bootstrapTokens:
  - token: ` + joinToken + `
    ttl: 1h
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: v1.37.2
`
	if err := os.WriteFile(config, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "init", "phase", "bootstrap-token", "--config", config, "--kubeconfig", c.Kubeconfig, "--skip-token-print").CombinedOutput()
	if err != nil {
		t.Fatalf("kubeadm init phase bootstrap-token: %v\n%s", err, out)
	}
}

// joinConfig is a worker joining endpoint with the test token, trusting
// the CA whose key hashes to hash (kubeadm's discovery).
func joinConfig(t *testing.T, endpoint, hash string) *machineconfig.MachineConfig {
	t.Helper()
	text := `apiVersion: kubeboot.dev/v1alpha1
kind: MachineConfig
role: worker
hostname: w1.home.local
network:
  interfaces:
    - name: enp1s0
      addresses: [172.16.0.21/24]
kubernetes:
  version: v1.37.2
  controlPlaneEndpoint: ` + endpoint + `
  credentials:
    token: ` + joinToken + `
    caCertHashes: ["` + hash + `"]
`
	cfg, err := machineconfig.Parse("worker.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}
