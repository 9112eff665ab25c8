package clusteraccess

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/clustersecrets"
	"kubeboot.dev/kubeboot/internal/testcluster"
	"kubeboot.dev/kubeboot/machineconfig"
	"kubeboot.dev/kubeboot/nodepath"
)

func TestTokenAndRBACAgainstAPIServer(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	root := t.TempDir()
	cfg := &machineconfig.MachineConfig{Role: machineconfig.RoleInit}
	cfg.Kubernetes.Credentials.Token = "abcdef.0123456789abcdef"
	env := &stage.Env{Root: root, StateDir: t.TempDir(), Config: cfg, Log: slog.New(slog.DiscardHandler), Data: &stage.RunData{}}
	s := New()

	// Before kubeadm init: Plan says what will happen, Apply waits.
	if p, err := s.Plan(ctx, env); err != nil || len(p) != 1 {
		t.Fatalf("Plan before admin.conf = %q, %v", p, err)
	}
	if _, err := s.Apply(ctx, env); !stage.IsTemporary(err) {
		t.Fatalf("Apply before admin.conf: %v, want a temporary error", err)
	}
	admin, _ := os.ReadFile(c.Kubeconfig)
	os.MkdirAll(filepath.Dir(env.Path(nodepath.AdminConf)), 0o700)
	if err := os.WriteFile(env.Path(nodepath.AdminConf), admin, 0o600); err != nil {
		t.Fatal(err)
	}
	want := []stage.Change{"create bootstrap token abcdef (never expires)", "create ClusterRole " + clustersecrets.NodeRebuildUser, "create ClusterRoleBinding " + clustersecrets.NodeRebuildUser}
	if p, err := s.Plan(ctx, env); err != nil || !slices.Equal(p, want) {
		t.Fatalf("Plan = %q, %v; want %q", p, err, want)
	}
	if got, err := s.Apply(ctx, env); err != nil || !slices.Equal(got, want) {
		t.Fatalf("Apply = %q, %v; want %q", got, err, want)
	}
	for _, f := range []func(context.Context, *stage.Env) ([]stage.Change, error){s.Plan, s.Apply} {
		if again, err := f(ctx, env); err != nil || len(again) != 0 {
			t.Errorf("again: %q, %v; want nothing", again, err)
		}
	}
	cs := kubernetes.NewForConfigOrDie(c.REST)
	sec, err := cs.CoreV1().Secrets("kube-system").Get(ctx, "bootstrap-token-abcdef", metav1.GetOptions{})
	if err != nil || string(sec.Data["token-secret"]) != "0123456789abcdef" || sec.Type != tokenType || sec.Data["expiration"] != nil {
		t.Fatalf("token Secret: %v %v", sec, err)
	}

	// Deleted by someone: put back. Rotated in the config: updated.
	if err := cs.CoreV1().Secrets("kube-system").Delete(ctx, "bootstrap-token-abcdef", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Apply(ctx, env); err != nil || !slices.Equal(got, want[:1]) {
		t.Errorf("after delete: %q, %v", got, err)
	}
	cfg.Kubernetes.Credentials.Token = "abcdef.ffffffffffffffff"
	if got, err := s.Apply(ctx, env); err != nil || len(got) != 1 || got[0] != "update bootstrap token abcdef (1 field(s) differ)" {
		t.Errorf("after rotation: %q, %v", got, err)
	}

	// A token with a lifetime is created once and left to expire.
	cfg.Kubernetes.Credentials.Token = "ghijkl.0123456789abcdef"
	cfg.Kubernetes.Credentials.TokenTTL = "1h"
	if got, err := s.Apply(ctx, env); err != nil || len(got) != 1 || got[0] != "create bootstrap token ghijkl (expires in 1h0m0s)" {
		t.Errorf("ttl token: %q, %v", got, err)
	}
	sec, _ = cs.CoreV1().Secrets("kube-system").Get(ctx, "bootstrap-token-ghijkl", metav1.GetOptions{})
	if exp, err := time.Parse(time.RFC3339, string(sec.Data["expiration"])); err != nil || time.Until(exp) < 55*time.Minute {
		t.Errorf("expiration %q: %v", sec.Data["expiration"], err)
	}
	cs.CoreV1().Secrets("kube-system").Delete(ctx, "bootstrap-token-ghijkl", metav1.DeleteOptions{}) // as the token cleaner does when it expires
	if got, err := s.Apply(ctx, env); err != nil || len(got) != 0 {
		t.Errorf("an expired token was made again: %q, %v", got, err)
	}
}
