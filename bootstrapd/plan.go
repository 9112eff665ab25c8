// Package bootstrapd is the node's first boot, in the order the manual
// procedure did it. This file is the one place that lists the steps:
//
//	source    find the machine config (bootstrapd/source) and parse it strictly
//	validate  every stage checks the host can take the config; no change yet
//	hostname  kernel hostname, /etc/hostname, /etc/hosts
//	network   links, addresses, routes with metrics, resolv.conf
//	firewall  the role's Kubernetes ports: firewalld, or an own nftables table
//	sysprep   modules, sysctls, swap off: what kubeadm preflight checks
//	users     the config's accounts, homes 0700 on STATE (/home is /var/home),
//	          their ~/.ssh/authorized_keys
//	          -- READY=1: the host is ready; the Kubernetes phase:
//	ssh             sshd with host keys made on this node, when a user has a key
//	time            timesyncd on time.servers; the first boot waits for a sync
//	registries      the config's registry mirrors as containerd hosts.toml
//	images          the pinned images in containerd, pinned, never pulled
//	kubelet         kubelet.service enabled, and running once configured
//	kubeadm-init    kubeadm init, once (init node)
//	kubeadm-join    the node's earlier life cleared, kubeadm join, once
//	cluster-access  the bootstrap token, the rebuild RBAC (init node)
//	podnetwork      flannel's manifests (init node)
//	kubeconfig      admin.conf as ~/.kube/config for the users (control planes)
//	wait-ready      this node Ready and its kube-system pods running
//	done      the done marker under /var/lib/kubeboot
//
// The engine (bootstrapd/engine) runs the stages; their records under the
// state directory make a crash resume and a rerun change nothing.
package bootstrapd

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/vishvananda/netns"

	"kubeboot.dev/kubeboot/bootstrapd/clusteraccess"
	"kubeboot.dev/kubeboot/bootstrapd/engine"
	"kubeboot.dev/kubeboot/bootstrapd/firewall"
	"kubeboot.dev/kubeboot/bootstrapd/hostname"
	"kubeboot.dev/kubeboot/bootstrapd/images"
	"kubeboot.dev/kubeboot/bootstrapd/kubeadm"
	"kubeboot.dev/kubeboot/bootstrapd/kubeconfig"
	"kubeboot.dev/kubeboot/bootstrapd/kubelet"
	"kubeboot.dev/kubeboot/bootstrapd/network"
	"kubeboot.dev/kubeboot/bootstrapd/podnetwork"
	"kubeboot.dev/kubeboot/bootstrapd/registries"
	"kubeboot.dev/kubeboot/bootstrapd/source"
	"kubeboot.dev/kubeboot/bootstrapd/ssh"
	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/bootstrapd/state"
	"kubeboot.dev/kubeboot/bootstrapd/sysprep"
	"kubeboot.dev/kubeboot/bootstrapd/timesync"
	"kubeboot.dev/kubeboot/bootstrapd/users"
	"kubeboot.dev/kubeboot/bootstrapd/waitready"
	"kubeboot.dev/kubeboot/machineconfig"
)

// Phases of the plan. bootstrapd tells systemd it is ready when the host
// phase is through: the network is up, so what waits for network-online
// (the kubelet kubeadm starts) can start while the Kubernetes phase runs.
const (
	PhaseHost       = "host"
	PhaseKubernetes = "kubernetes"
)

// Limits of the kubeadm steps. kubeadm's own waits are 10 minutes each
// (kubeadmconfig); three attempts of the slowest join fit in the limit.
var kubeadmRetry = engine.Backoff{Initial: 15 * time.Second, Max: time.Minute, Attempts: 3}

const kubeadmTimeout = 45 * time.Minute

// apiServerRetry is for the init node's stages that talk to its API
// server. After a reboot or a power cut the API server comes back with
// the node: under TCG it first answered 172 s after bootstrapd began to
// ask (e2e power cut, 2026-11-29), past DefaultBackoff's 1.5 minutes.
// 1+2+4+8+16 s, then 30 s apart: about 10 minutes, kubeadm's own wait
// for a control plane.
var apiServerRetry = engine.Backoff{Initial: time.Second, Max: 30 * time.Second, Attempts: 24}

// Plan is the first-boot plan after the config is loaded, in order: the
// whole boot on one screen, with the rules for each step beside it.
func Plan() []engine.Step {
	return []engine.Step{
		{Stage: hostname.New(), Kind: engine.Converge, Phase: PhaseHost},
		{Stage: network.New(), Kind: engine.Converge, Phase: PhaseHost},
		{Stage: firewall.New(), Kind: engine.Converge, Phase: PhaseHost},
		{Stage: sysprep.New(), Kind: engine.Converge, Phase: PhaseHost},
		{Stage: users.New(), Kind: engine.Converge, Phase: PhaseHost},
		// After users: the keys are in place before sshd accepts anyone.
		// Not in the host phase: ssh.service is ordered after
		// network.target, which waits for bootstrapd's READY=1, so
		// starting it before then would wait forever. First after it, so
		// that a node whose later stages fail can be reached.
		{Stage: ssh.New(), Kind: engine.Converge, Phase: PhaseKubernetes},
		// The clock before anything that makes or checks a certificate
		// (kubeadm; the kubelet's TLS on later boots). Not in the host
		// phase: READY=1 should not wait for an NTP server, and nothing
		// there depends on the time.
		{Stage: timesync.New(), Kind: engine.Converge, Phase: PhaseKubernetes},
		// Mirrors before the images: containerd reads them at every pull,
		// and the kubelet's first pulls may come right after.
		{Stage: registries.New(), Kind: engine.Converge, Phase: PhaseKubernetes},
		// The images are in the store made at build
		// time; containerd starts alongside bootstrapd, so the first
		// attempts may find no socket yet.
		{Stage: images.New(), Kind: engine.Converge, Phase: PhaseKubernetes},
		// Enabled before kubeadm's preflight checks it; running on later boots.
		{Stage: kubelet.New(), Kind: engine.Converge, Phase: PhaseKubernetes},
		// Once in the node's life; under TCG kubeadm init takes 2-3 min and
		// a join waits for the init node. A failed attempt is reset and
		// retried twice.
		{Stage: kubeadm.Init(), Kind: engine.Once, Phase: PhaseKubernetes,
			When: engine.ForRoles(machineconfig.RoleInit), Retry: kubeadmRetry, Timeout: kubeadmTimeout},
		{Stage: kubeadm.Join(), Kind: engine.Once, Phase: PhaseKubernetes,
			When: engine.ForRoles(machineconfig.RoleControlPlane, machineconfig.RoleWorker), Retry: kubeadmRetry, Timeout: kubeadmTimeout},
		// The init node keeps what joining nodes need, and the pod network.
		{Stage: clusteraccess.New(), Kind: engine.Converge, Phase: PhaseKubernetes,
			When: engine.ForRoles(machineconfig.RoleInit), Retry: apiServerRetry},
		{Stage: podnetwork.New(), Kind: engine.Converge, Phase: PhaseKubernetes,
			When: engine.ForRoles(machineconfig.RoleInit), Retry: apiServerRetry},
		{Stage: kubeconfig.New(), Kind: engine.Converge, Phase: PhaseKubernetes,
			When: engine.ForRoles(machineconfig.RoleInit, machineconfig.RoleControlPlane)},
		// Last: minutes under TCG (the control plane's pods start, the pod
		// network comes up); done means the node works.
		{Stage: waitready.New(), Kind: engine.Converge, Phase: PhaseKubernetes, Timeout: WaitReadyTimeout},
	}
}

// WaitReadyTimeout bounds the wait for the node to be Ready and its
// kube-system pods running. Under QEMU TCG (2 vCPU) on this project's
// shared build machine the controller's node went Ready 4-7 minutes after
// kubeadm init and its coredns pods were still being created 10 minutes
// after (guest CPU pressure 96%, e2e lab 2026-11-29): 15 minutes was too
// short there. 30 minutes leaves room for that, a joining node waiting for
// the pod network, and a reboot's cold start.
const WaitReadyTimeout = 30 * time.Minute

// Options configure one run.
type Options struct {
	Root       string // "/" of the node; a directory in tests
	Proc, Sys  string // procfs and sysfs; "" means the running kernel's
	ConfigPath string // --config; "" tries the sources in order
	Only       []string
	Log        *slog.Logger
	// Backoff, when set, replaces every step's retries (tests).
	Backoff engine.Backoff
	// AfterStage, AfterPhase, Status, StepStarted and StepEnded are passed
	// to the engine.
	AfterStage  func(name string)
	AfterPhase  func(phase string)
	Status      func(string)
	StepStarted func(name string)
	StepEnded   func(o engine.Outcome, err error)
	// Loaded, when set, is called by FirstBoot once it holds the state
	// lock and the source step is over: with the prepared run, or with the
	// source's error (its failed marker written).
	Loaded func(*Prepared, error)
}

// Prepared is a loaded config bound to an engine, ready to plan or run.
type Prepared struct {
	Engine   *engine.Engine
	Source   *source.Result
	Plan     []engine.Step // the whole plan
	Selected []engine.Step // the steps this run touches
	Explicit bool          // Selected came from --only
}

// Prepare does the "source" step: it finds and parses the config, records
// where it came from, and selects the stages. A failure here is recorded in
// the failed marker as stage "source".
func Prepare(ctx context.Context, o Options, record bool) (*Prepared, error) {
	st := state.Open(o.Root)
	plan := Plan()
	selected, err := engine.Select(plan, o.Only)
	if err != nil {
		return nil, err
	}
	res, err := source.Load(ctx, source.Options{Root: o.Root, ConfigPath: o.ConfigPath, Log: o.Log})
	if err != nil {
		err = fmt.Errorf("stage source: %w", err)
		if record {
			if werr := st.PutFailure(state.Failure{Stage: "source", Reason: err.Error(), Attempts: 1, Time: time.Now()}); werr != nil {
				o.Log.Error("writing the failed marker", "err", werr)
			}
		}
		return nil, err
	}
	o.Log.Info("machine config loaded", "source", res.Source, "hash", res.Config.Hash())
	if record {
		if err := res.Install(o.Root); err != nil {
			return nil, err
		}
		if err := recordSource(st, res); err != nil {
			return nil, err
		}
	}
	env := &stage.Env{Root: o.Root, NetNS: netns.None(), Config: res.Config, Log: o.Log, Proc: o.Proc, Sys: o.Sys, Data: &stage.RunData{}}
	return &Prepared{
		Engine: &engine.Engine{
			Env: env, State: st, Source: res.Source, Backoff: o.Backoff,
			AfterStage: o.AfterStage, AfterPhase: o.AfterPhase, Status: o.Status,
			StepStarted: o.StepStarted, StepEnded: o.StepEnded,
		},
		Source: res, Plan: plan, Selected: selected, Explicit: len(o.Only) > 0,
	}, nil
}

// FirstBoot runs the whole procedure: source, validate, the stages, done.
func FirstBoot(ctx context.Context, o Options) ([]engine.Outcome, error) {
	release, err := state.Open(o.Root).Lock()
	if err != nil {
		return nil, err
	}
	defer release()
	p, err := Prepare(ctx, o, true)
	if o.Loaded != nil {
		o.Loaded(p, err)
	}
	if err != nil {
		return nil, err
	}
	return p.Engine.Run(ctx, p.Plan, p.Selected, p.Explicit)
}

// PlanChanges loads the config and lists what each selected stage would
// change, after validating them; it writes nothing.
func PlanChanges(ctx context.Context, o Options) (*Prepared, []engine.Planned, error) {
	p, err := Prepare(ctx, o, false)
	if err != nil {
		return nil, nil, err
	}
	if err := p.Engine.Validate(ctx, p.Selected); err != nil {
		return p, nil, fmt.Errorf("stage validate: %w", err)
	}
	planned, err := p.Engine.Plan(ctx, p.Selected, p.Explicit)
	return p, planned, err
}

// recordSource notes where the config came from, keeping the first time it
// was seen: a rerun with the same config writes nothing.
func recordSource(st *state.Store, res *source.Result) error {
	rec := state.Source{Source: res.Source, ConfigHash: res.Config.Hash(), InstanceID: res.InstanceID, Loaded: time.Now()}
	prev, err := st.Source()
	if err != nil {
		return err
	}
	if prev != nil && prev.Source == rec.Source && prev.ConfigHash == rec.ConfigHash && prev.InstanceID == rec.InstanceID {
		return nil
	}
	return st.PutSource(rec)
}
