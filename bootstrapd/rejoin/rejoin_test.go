package rejoin

import (
	"context"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/vishvananda/netns"

	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/internal/cachetest"
	"kubeboot.dev/kubeboot/internal/testcluster"
	"kubeboot.dev/kubeboot/machineconfig"
)

// rebuiltEnv is the env of a control plane named name, reflashed, whose
// secrets hold the test cluster's etcd CA, reaching etcd through members.
func rebuiltEnv(t *testing.T, c *testcluster.Cluster, name, peerURL string) *stage.Env {
	t.Helper()
	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	u, err := url.Parse(peerURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &machineconfig.MachineConfig{Role: machineconfig.RoleControlPlane, Hostname: name}
	cfg.Kubernetes.NodeName = name
	cfg.Kubernetes.AdvertiseAddress = u.Hostname()
	cfg.Kubernetes.Credentials.Secrets = &machineconfig.ClusterSecrets{
		EtcdCA: machineconfig.CertAndKey{Cert: read(c.EtcdCA.Cert), Key: machineconfig.Secret(read(c.EtcdCA.Key))},
	}
	return &stage.Env{Root: t.TempDir(), StateDir: t.TempDir(), NetNS: netns.None(), Config: cfg,
		Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})), Data: &stage.RunData{}}
}

func endpointsOf(members ...*testcluster.EtcdMember) func(context.Context, *machineconfig.MachineConfig) ([]string, error) {
	return func(context.Context, *machineconfig.MachineConfig) ([]string, error) {
		var out []string
		for _, m := range members {
			out = append(out, m.ClientURL)
		}
		return out, nil
	}
}

// TestStaleMemberRemovedThroughAQuorum: three members, one dies and its
// machine is reflashed; the other two remove it.
func TestStaleMemberRemovedThroughAQuorum(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	b := c.AddEtcdMember(t, "cp-b")
	gone := c.AddEtcdMember(t, "cp-c")
	c.StopEtcdMember(t, gone)

	env := rebuiltEnv(t, c, "cp-c", gone.PeerURL)
	change, err := removeStaleMember(context.Background(), env, Options{EtcdEndpoints: endpointsOf(c.Etcd[0], b)})
	if err != nil {
		t.Fatal(err)
	}
	c.MemberRemoved(gone)
	if !strings.Contains(string(change), "removed the stale member cp-c") || !strings.Contains(string(change), "through 2 healthy member(s)") {
		t.Errorf("change %q", change)
	}
	list := c.Etcdctl(t, []*testcluster.EtcdMember{c.Etcd[0], b}, "member", "list")
	if strings.Contains(list, "cp-c") || strings.Count(strings.TrimSpace(list), "\n") != 1 {
		t.Errorf("members after removal:\n%s", list)
	}
	// Nothing left to remove: a second run changes nothing.
	if change, err := removeStaleMember(context.Background(), env, Options{EtcdEndpoints: endpointsOf(c.Etcd[0], b)}); err != nil || change != "" {
		t.Errorf("second run: %q, %v", change, err)
	}
}

// TestStandInRestoresQuorumOfTwo: two members (two control planes), one
// dies; the survivor alone has no quorum, so nothing can be removed until
// the reflashed node stands in for the dead member with an empty data dir.
func TestStandInRestoresQuorumOfTwo(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	gone := c.AddEtcdMember(t, "cp-b")
	c.Etcdctl(t, nil, "put", "before", "the reflash")
	c.StopEtcdMember(t, gone)

	etcd := cachetest.File(t, "etcd")
	env := rebuiltEnv(t, c, "cp-b", gone.PeerURL)
	o := Options{
		EtcdEndpoints: endpointsOf(c.Etcd[0]),
		EtcdBinary:    func(context.Context) (string, func(), error) { return etcd, func() {}, nil },
	}
	change, err := removeStaleMember(context.Background(), env, o)
	if err != nil {
		t.Fatal(err)
	}
	c.MemberRemoved(gone)
	if !strings.Contains(string(change), "after standing in for it to restore etcd's quorum") {
		t.Errorf("change %q", change)
	}
	survivor := []*testcluster.EtcdMember{c.Etcd[0]}
	if list := c.Etcdctl(t, survivor, "member", "list"); strings.Contains(list, "cp-b") {
		t.Errorf("cp-b still a member:\n%s", list)
	}
	// The survivor has its quorum (one of one) and its data.
	if got := c.Etcdctl(t, survivor, "get", "before", "--print-value-only"); strings.TrimSpace(got) != "the reflash" {
		t.Errorf("data after the stand-in: %q", got)
	}
	c.Etcdctl(t, survivor, "put", "after", "writes work")
	// The stand-in is gone and left nothing behind.
	if entries, _ := os.ReadDir(env.StateDir); len(entries) != 0 {
		t.Errorf("left in the state dir: %v", entries)
	}
}

// TestNoQuorumEvenWithAStandIn: three members, two dead: standing in for
// one brings two of three, but the other dead one is not this node's to
// replace; the error says what to do.
func TestNoQuorumEvenWithAStandIn(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	b := c.AddEtcdMember(t, "cp-b")
	gone := c.AddEtcdMember(t, "cp-c")
	c.StopEtcdMember(t, gone)
	c.StopEtcdMember(t, b)
	env := rebuiltEnv(t, c, "cp-c", gone.PeerURL)
	_, err := removeStaleMember(context.Background(), env, Options{EtcdEndpoints: endpointsOf(c.Etcd[0])})
	if err == nil || !strings.Contains(err.Error(), "only 1 of the other 2 member(s) are healthy") || !stage.IsTemporary(err) {
		t.Errorf("err = %v; want a temporary error naming the missing quorum", err)
	}
}
