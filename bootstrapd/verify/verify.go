// Package verify checks, on a node, that the node is what its machine
// config and the reference procedure say: the environment check at the end
// of the manual procedure (ip netns, ip -d link, ip addr, ip route, nft list
// ruleset, kubectl get all -A, kubectl get nodes, crictl ps -a, ip netns
// identify per container, crictl images), done by `bootstrapd verify`.
//
// Each section lists what it found, as those commands printed it, and its
// checks: a name, whether it holds, what was expected and what was found.
// It only reads: netlink and nftables in the node's network namespace, the
// runtime through the CRI, the API with the node's own credentials, and
// bootstrapd's state. Every call is bounded in time and every listing in
// size. Nothing it prints comes from the config's secrets.
package verify

import (
	"context"
	"log/slog"
	"time"

	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"

	"kubeboot.dev/kubeboot/bootstrapd/kubeapi"
	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/bootstrapd/state"
	"kubeboot.dev/kubeboot/machineconfig"
	"kubeboot.dev/kubeboot/nodepath"
)

// Options say which node to verify and how.
type Options struct {
	// Root stands for the node's "/": bootstrapd's state, the baked image
	// index, the credentials, the runtime's socket and the netns paths the
	// runtime reports are read under it.
	Root string
	// Proc is procfs ("" means /proc): the namespaces of the runtime's
	// processes are read there.
	Proc string
	// NetNS is the node's network namespace; netns.None() means the
	// caller's.
	NetNS netns.NsHandle
	// Config is the node's validated machine config; Source says where it
	// came from.
	Config *machineconfig.MachineConfig
	Source string
	// CRISocket is the runtime's CRI socket under Root; "" means nodepath.ContainerdSocket.
	CRISocket string
	// RuntimeRoot is the runtime's view of "/", where the paths it reports
	// (the sandboxes' network namespaces) are read; "" means Root. It
	// differs only for a runtime in a mount namespace of its own (a test's
	// private containerd: /proc/PID/root).
	RuntimeRoot string
	// Timeout bounds one request (CRI, API, netlink dumps are quick);
	// 0 means kubeapi.RequestTimeout.
	Timeout time.Duration
	Log     *slog.Logger
}

// sectionTimeout bounds one section's own calls (the firewall stage's plan
// over D-Bus); the runtime and the API are read before, per request.
const sectionTimeout = 30 * time.Second

// node is what the sections share: the environment the reused stage code
// reads through, and the facts read once from the runtime and the API.
type node struct {
	o   Options
	env *stage.Env
	st  *state.Store

	cri    *criFacts
	criErr error

	api    *apiFacts
	apiErr error
}

// Run verifies the node and returns the report. Everything it cannot
// read is a failed check in the report.
func Run(ctx context.Context, o Options) *Report {
	n := prepare(o)
	n.cri, n.criErr = readCRI(ctx, n.env.Path(n.o.CRISocket), n.o.Timeout)
	n.api, n.apiErr = readAPI(ctx, n.env, n.o.Timeout)
	return n.report(ctx)
}

// prepare fills in the defaults; the facts are read by Run.
func prepare(o Options) *node {
	if o.Timeout == 0 {
		o.Timeout = kubeapi.RequestTimeout
	}
	if o.CRISocket == "" {
		o.CRISocket = nodepath.ContainerdSocket
	}
	if o.RuntimeRoot == "" {
		o.RuntimeRoot = o.Root
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &node{
		o:   o,
		env: &stage.Env{Root: o.Root, NetNS: o.NetNS, Config: o.Config, Log: o.Log, Proc: o.Proc, Data: &stage.RunData{}},
		st:  state.Open(o.Root),
	}
}

// report runs the sections in the reference's order.
func (n *node) report(ctx context.Context) *Report {
	cfg := n.o.Config
	r := &Report{Node: cfg.Kubernetes.NodeName, Role: string(cfg.Role), Config: cfg.Hash(), Source: n.o.Source}
	for _, section := range []func(context.Context) Section{
		n.namespaces,
		n.links,
		n.addresses,
		n.nftables,
		n.cluster,
		n.containers,
		n.kubeadm,
	} {
		sctx, cancel := context.WithTimeout(ctx, sectionTimeout)
		r.Sections = append(r.Sections, section(sctx))
		cancel()
	}
	r.finish()
	return r
}

// podCIDRs of this node, from its Node object; nil when unknown.
func (n *node) podCIDRs() []string {
	if n.api == nil || n.api.self == nil {
		return nil
	}
	return podCIDRs(n.api.self)
}

func podCIDRs(nd *corev1.Node) []string {
	if len(nd.Spec.PodCIDRs) > 0 {
		return nd.Spec.PodCIDRs
	}
	if nd.Spec.PodCIDR != "" {
		return []string{nd.Spec.PodCIDR}
	}
	return nil
}
