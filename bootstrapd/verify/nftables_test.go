package verify

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"

	"kubeboot.dev/kubeboot/bootstrapd/firewall"
	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/bootstrapd/state"
	"kubeboot.dev/kubeboot/internal/netnstest"
	"kubeboot.dev/kubeboot/internal/testcluster"
)

// applyFirewall runs the firewall stage for the config in the node's
// namespace, as the first boot does.
func applyFirewall(t *testing.T, ref *referenceNode, root string, o Options) {
	t.Helper()
	env := &stage.Env{Root: root, NetNS: ref.ns, Config: o.Config, Log: slog.New(slog.DiscardHandler),
		StateDir: state.Open(root).StageDir("firewall"), Data: &stage.RunData{}}
	if err := os.MkdirAll(env.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := firewall.New().Apply(context.Background(), env); err != nil {
		t.Fatal(err)
	}
}

// nftablesBackend makes a config's firewall use our own table: the test
// host has no firewalld.
func nftablesBackend(s string) string {
	return strings.Replace(s, "backend: auto", "backend: nftables", 1)
}

// TestNftablesAsTheReference runs, in a namespace shaped like the seed's
// controller, the firewall stage's nftables backend and the pinned
// kube-proxy (against a real API server, in iptables mode as kubeadm's
// default and in nftables mode), and checks the nftables section finds
// kube-proxy's chains, the Services it synced and our table; then breaks
// our table and checks the failure says what the stage would change.
func TestNftablesAsTheReference(t *testing.T) {
	needRoot(t, "nft")
	c := testcluster.Start(t, testcluster.Options{})
	res, _ := exampleConfig(t, "controller.yaml", nftablesBackend)
	node := res.Config.Kubernetes.NodeName
	controllerCluster(t, c, res)

	for _, mode := range []string{"iptables", "nftables"} {
		t.Run(mode, func(t *testing.T) {
			ref := newReferenceNode(t)
			root := t.TempDir()
			o := Options{Root: root, NetNS: ref.ns, Config: res.Config, Source: res.Source}
			applyFirewall(t, ref, root, o)
			n := prepare(o)
			ctx := context.Background()

			// Before kube-proxy runs, its chains are missing.
			s := n.nftables(ctx)
			if c := checkNamed(t, s, "kube-proxy's chains (ip)"); c.OK {
				t.Errorf("without kube-proxy: %+v", c)
			}
			startKubeProxy(t, c, ref, node, mode, res.Config.Kubernetes.PodSubnet)
			s = waitFor(t, func() Section { return n.nftables(ctx) }, "kube-proxy")
			logReport(t, s)
			allHold(t, s)
			wantMode := map[string]string{"iptables": "iptables mode (iptables-nft)", "nftables": "nftables mode: table ip kube-proxy"}[mode]
			if c := checkNamed(t, s, "kube-proxy's chains (ip)"); !strings.HasPrefix(c.Found, wantMode) {
				t.Errorf("kube-proxy's chains: found %q, want it to start with %q", c.Found, wantMode)
			}
			if c := checkNamed(t, s, "the firewall stage's rules hold"); !strings.HasPrefix(c.Found, "backend nftables, open: 2379-2380/tcp 6443/tcp 10250/tcp") {
				t.Errorf("firewall: %+v", c)
			}
			checkNamed(t, s, "table inet kubeboot")

			// Someone removes the API server's port from our table.
			netnstest.Run(t, "ip", "netns", "exec", ref.name, "nft", "delete", "element", "inet", "kubeboot", "tcp_ports", "{ 6443 }")
			s = n.nftables(ctx)
			if c := checkNamed(t, s, "the firewall stage's rules hold"); c.OK || !strings.Contains(c.Found, "open 6443/tcp") {
				t.Errorf("with 6443 closed: %+v", c)
			}
		})
	}
}
