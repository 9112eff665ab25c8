// Package kubeadmconfig renders the file a node hands to `kubeadm init` or
// `kubeadm join` (--config) from its machine config: kubeadm.k8s.io/v1beta4
// InitConfiguration + ClusterConfiguration + kubelet.config.k8s.io/v1beta1
// KubeletConfiguration on the init node, a JoinConfiguration on the others,
// then the config's kubeadmPatches. It uses its own small types rather than
// kubeadm's (k8s.io/kubernetes is not meant to be imported); golden tests
// and the real `kubeadm config validate` keep them honest.
//
// The rendered config holds the bootstrap token (and on some nodes the
// certificate key): Write stores it 0600 in a 0700 directory, and logs and
// `bootstrapd plan` show Redacted instead. docs/kubeadm.md says what is
// rendered and why.
package kubeadmconfig

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"kubeboot.dev/kubeboot/atomicfile"
	"kubeboot.dev/kubeboot/machineconfig"
	"kubeboot.dev/kubeboot/nodepath"
)

// Inputs are what the machine config alone does not say: the cluster
// credentials (from the config or its secrets bundle) and what the node
// found out at boot.
type Inputs struct {
	// Token is the bootstrap token: created by the init node, used by the
	// others to join. Required.
	Token machineconfig.Secret
	// TokenTTL is the token's lifetime when the init node creates it;
	// 0 means it never expires, so a node can be reflashed and rejoin at
	// any time.
	TokenTTL time.Duration
	// CACertHashes pin the cluster CA for joining nodes ("sha256:<hex>",
	// the SubjectPublicKeyInfo hash kubeadm prints). Required on joins.
	CACertHashes []string
	// CertificateKey encrypts the CA keys kubeadm uploads (Secret
	// kubeadm-certs) when the CAs are not pre-installed: the init node then
	// runs `kubeadm init --upload-certs` with it and control-plane nodes
	// download the keys with it. Unused (and not rendered) when
	// CAsPreinstalled; never given to a worker.
	CertificateKey machineconfig.Secret
	// CAsPreinstalled says the cluster CAs were written to
	// /etc/kubernetes/pki from the secrets bundle before kubeadm runs, so no
	// control-plane node needs the certificate key.
	CAsPreinstalled bool
	// NodeIPs are the node's addresses for the kubelet (node-ip); the
	// first is also the API server's advertise address on control planes.
	// One address, or one per family on a dual-stack node. Empty means
	// the config's kubernetes.advertiseAddress (a node whose address
	// comes from DHCP must pass it). When the config sets
	// advertiseAddress, the first must be it.
	NodeIPs []netip.Addr
	// Dir is the directory on the node that Write fills: kubeadm.yaml,
	// and patches/ for kubeadm's patch files. Absolute; required.
	Dir string
}

// Rendered is one node's kubeadm configuration. It prints redacted (%v,
// %s, %#v); Config holds the secrets.
type Rendered struct {
	config, redacted []byte
	// kubeletPatch is kubeadm's "kubeletconfiguration+merge.yaml" on
	// joining nodes, nil when the config has no KubeletConfiguration patch.
	kubeletPatch []byte
	// controlPlane says the node runs the static control-plane pods,
	// which Write patches (probePatches).
	controlPlane bool
	dir          string
}

// Fixed choices; docs/kubeadm.md explains them.
const (
	// ConfigFile and PatchesSubdir are the names Write uses under Dir.
	ConfigFile    = "kubeadm.yaml"
	PatchesSubdir = "patches"
	// kubeletPatchFile is a JSON merge patch (RFC 7386, kubeadm's "merge"
	// type) of the kubelet's config, one YAML document per machine-config
	// patch, applied in order.
	kubeletPatchFile = "kubeletconfiguration+merge.yaml"

	// CRISocket is containerd's, where the image runs it.
	CRISocket    = "unix://" + nodepath.ContainerdSocket
	cgroupDriver = "systemd"
	// resolvConf is what pods with dnsPolicy Default (CoreDNS) get: the
	// network stage writes the node's nameservers there. Left unset,
	// kubeadm picks systemd-resolved's file when resolved runs, which
	// names no upstream on our nodes, and CoreDNS exits ("plugin/forward:
	// no valid upstream addresses found", seen in the e2e lab).
	resolvConf = "/etc/resolv.conf"
	// The images are baked into the node; kubeadm must not try to pull.
	imagePullPolicy = "Never"
	apiServerPort   = 6443 // the port the firewall stage opens
	redactedValue   = "<redacted>"
)

// bootstrapd runs `kubeadm init phase preflight` / `kubeadm join phase
// preflight` itself before kubeadm proper, to drop the one Firewalld
// warning it has verified (see firewall.PortsOpen); kubeadm then skips it.
var skipPhases = []string{"preflight"}

// kubeadm's defaults for its node bootstrap tokens (bootstraptoken/v1).
var (
	tokenUsages = []string{"signing", "authentication"}
	tokenGroups = []string{"system:bootstrappers:kubeadm:default-node-token"}
)

// Timeouts for slow machines (kubeadm's defaults in brackets). Under QEMU
// TCG on 2 vCPUs (docs/kubeadm.md) the API server first answered 48-55 s
// after kubeadm started the kubelet and was healthy after 52-65 s, and
// `kubeadm init` with the defaults failed after 77 s creating the admin
// ClusterRoleBinding, a poll bounded by kubernetesAPICall. Waits bounded by
// the node's speed get 10 minutes, about 9x the slowest figure measured; a
// broken node fails that much later, which the kubeadm stage's own timeout
// must allow for.
const (
	// [4m] API server, etcd, controller-manager and scheduler healthy.
	controlPlaneHealthTimeout = 10 * time.Minute
	// [4m] The kubelet's /healthz after kubeadm starts it.
	kubeletHealthTimeout = 10 * time.Minute
	// [1m] Each API call kubeadm retries until it succeeds: the one that
	// timed out under TCG. With the host loaded (e2e, 2026-11-29) the
	// control plane's pod sandboxes took 80 s to start and the API server
	// did not answer within 5 minutes of the kubelet's start.
	kubernetesAPICallTimeout = 10 * time.Minute
	// [2m] A joining control plane adds its etcd member and waits for it.
	etcdAPICallTimeout = 5 * time.Minute
	// [5m] A joining kubelet's CSR approved and signed by the control plane.
	tlsBootstrapTimeout = 10 * time.Minute
	// [5m] A joining node waits for the cluster-info signed with its token,
	// which the init node creates 3-5 minutes after boot under TCG: nodes
	// flashed together would hit the default.
	discoveryTimeout = 10 * time.Minute
)

// Control-plane settings for slow machines, in every cluster's
// ClusterConfiguration (so joining control planes get them too). Under
// QEMU TCG (e2e, 2026-11-29) etcd answered "request timed out" and the
// controller-manager and scheduler lost their leases every 2 minutes: a
// lease renewal that misses the 10 s renew deadline makes them exit, and
// each restart (informers relisting everything) loaded the starved node
// further. OpenShift's single-node clusters relax leader election the
// same way.
var (
	// etcd's request timeout is 5 s + 2 x election-timeout: 15 s instead of
	// 7 s. etcd's tuning guide gives heartbeat ~ round trip and election
	// timeout 10x heartbeat; [100 ms, 1000 ms].
	etcdArgs = []arg{{"heartbeat-interval", "500"}, {"election-timeout", "5000"}}
	// [15 s lease, 10 s renew deadline, 2 s retry]: a new leader takes
	// over at most 60 s after the old one stops renewing.
	leaderElectionArgs = []arg{
		{"leader-elect-lease-duration", "60s"},
		{"leader-elect-renew-deadline", "40s"},
		{"leader-elect-retry-period", "5s"},
	}
)

// keyAlgorithm is the key type of the certificates kubeadm issues
// [RSA-2048]. Every TLS handshake costs the server a signature: ECDSA P-256
// signs about ten times faster than RSA-2048, which matters to a control
// plane answering probes and joining nodes on a small machine. The
// cluster's CAs (clustersecrets) stay RSA; kubeadm signs with them as is.
const keyAlgorithm = "ECDSA-P256"

// livenessFailureThreshold is how many liveness probes in a row (10 s
// apart, each allowed 15 s) a control-plane component may fail before the
// kubelet restarts it [8]: 4 minutes. Under QEMU TCG (e2e, 2026-11-29) the
// API server, alive but starved, was restarted 12 minutes after boot, and
// restarting it costs the starved node more than waiting: it relists
// everything, and meanwhile every client of the API fails.
const livenessFailureThreshold = 24

// readinessPeriodSeconds is how often the kubelet asks the API server,
// the scheduler and etcd whether they are ready [1]. Each probe is a new
// connection (a TLS handshake for the first two) and a full /readyz;
// nothing kubeboot or kubeadm waits for reads these pods' readiness, which
// only feeds their Ready condition.
const readinessPeriodSeconds = 10

// probePatches are kubeadm's static-pod patches (type "strategic": the
// containers merge by name), one per control-plane component, keyed by
// file name; init and control-plane nodes get them. The controller-manager
// has no readiness probe to relax.
var probePatches = func() map[string][]byte {
	m := map[string][]byte{}
	for _, c := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
		p := fmt.Appendf(nil, "spec:\n  containers:\n    - name: %s\n      livenessProbe:\n        failureThreshold: %d\n", c, livenessFailureThreshold)
		if c != "kube-controller-manager" {
			p = fmt.Appendf(p, "      readinessProbe:\n        periodSeconds: %d\n", readinessPeriodSeconds)
		}
		m[c+"+strategic.yaml"] = p
	}
	return m
}()

// Render renders the kubeadm configuration of cfg's role. cfg must come
// from machineconfig.Parse or Load (validated, defaults applied). Errors
// name what is missing from in; they never contain secret values.
func Render(cfg *machineconfig.MachineConfig, in Inputs) (*Rendered, error) {
	ips, err := nodeIPs(cfg, in)
	if err != nil {
		return nil, err
	}
	if err := checkInputs(cfg.Role, in); err != nil {
		return nil, err
	}
	var docs []document
	switch cfg.Role {
	case machineconfig.RoleInit:
		docs = initDocuments(cfg, in, ips)
	case machineconfig.RoleControlPlane, machineconfig.RoleWorker:
		docs = joinDocuments(cfg, in, ips)
	default:
		return nil, fmt.Errorf("kubeadm config: unknown role %q", cfg.Role)
	}
	r := &Rendered{dir: in.Dir, controlPlane: cfg.Role != machineconfig.RoleWorker}
	nodes := make([]*yaml.Node, len(docs))
	for i, d := range docs {
		if nodes[i], err = toNode(d.value); err != nil {
			return nil, fmt.Errorf("kubeadm config: %s: %w", d.kind, err)
		}
	}
	var kubeletPatches []*yaml.Node
	for i, p := range cfg.Kubernetes.KubeadmPatches {
		at := slices.IndexFunc(docs, func(d document) bool { return d.kind == p.Kind })
		switch {
		case at >= 0:
			if nodes[at], err = mergePatch(nodes[at], p.Patch); err != nil {
				return nil, fmt.Errorf("kubernetes.kubeadmPatches[%d]: %w", i, err)
			}
		case p.Kind == kindKubelet:
			// A joining node's kubelet config comes from the cluster
			// (ConfigMap kubelet-config); kubeadm ignores a
			// KubeletConfiguration in join's --config and applies
			// node-local changes from its patches directory instead.
			n, err := toNode(p.Patch)
			if err != nil {
				return nil, fmt.Errorf("kubernetes.kubeadmPatches[%d]: %w", i, err)
			}
			kubeletPatches = append(kubeletPatches, n)
		default:
			return nil, fmt.Errorf("kubernetes.kubeadmPatches[%d]: no %s is rendered for a %s node", i, p.Kind, cfg.Role)
		}
	}
	if len(kubeletPatches) > 0 {
		if r.kubeletPatch, err = encode(kubeletPatches); err != nil {
			return nil, err
		}
	}
	if r.config, err = encode(nodes); err != nil {
		return nil, err
	}
	for i, d := range docs {
		redact(nodes[i], d.kind)
	}
	if r.redacted, err = encode(nodes); err != nil {
		return nil, err
	}
	// Also wherever a patch may have copied a secret.
	for _, s := range []machineconfig.Secret{in.Token, in.CertificateKey} {
		if s != "" {
			r.redacted = bytes.ReplaceAll(r.redacted, []byte(s.Reveal()), []byte(redactedValue))
		}
	}
	return r, nil
}

// Config is the file for `kubeadm --config`: YAML documents separated by
// "---". It holds the bootstrap token; Write stores it safely.
func (r *Rendered) Config() []byte { return r.config }

// Redacted is Config with the token and certificate key replaced by
// "<redacted>", for `bootstrapd plan`, logs and status.
func (r *Rendered) Redacted() []byte { return r.redacted }

// KubeletPatch is the kubelet config patch a joining node hands kubeadm
// (nil when there is none); Write puts it in Dir/patches.
func (r *Rendered) KubeletPatch() []byte { return r.kubeletPatch }

// ConfigPath is where Write puts Config on the node: kubeadm's --config.
func (r *Rendered) ConfigPath() string { return path.Join(r.dir, ConfigFile) }

func (r *Rendered) String() string   { return string(r.redacted) }
func (r *Rendered) GoString() string { return r.String() }

// Write stores the files under root (the node's "/"): Config 0600 at
// ConfigPath, and in Dir/patches the kubelet patch and on control planes
// the probe patches, removing those the node does not get (any more). Dir
// is created 0700 and must not be more open, as it holds the token.
func (r *Rendered) Write(root string) error {
	dir := filepath.Join(root, r.dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	st, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if st.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("%s has mode %04o: the kubeadm config holds the bootstrap token and must sit in a 0700 directory", r.dir, st.Mode().Perm())
	}
	if err := atomicfile.Write(filepath.Join(dir, ConfigFile), r.config, 0o600, 0o700); err != nil {
		return err
	}
	patches := map[string][]byte{kubeletPatchFile: r.kubeletPatch}
	for name, p := range probePatches {
		if r.controlPlane {
			patches[name] = p
		} else {
			patches[name] = nil
		}
	}
	for name, p := range patches {
		path := filepath.Join(dir, PatchesSubdir, name)
		if p == nil {
			err = atomicfile.Remove(path)
		} else {
			err = atomicfile.Write(path, p, 0o600, 0o700)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// document is one rendered document before patches.
type document struct {
	kind  string
	value any
}

// checkInputs rejects credentials missing for the role, or given to a node
// that must not have them.
func checkInputs(role machineconfig.Role, in Inputs) error {
	var errs []error
	if in.Token == "" {
		errs = append(errs, errors.New("no bootstrap token"))
	}
	if in.TokenTTL < 0 {
		errs = append(errs, fmt.Errorf("token TTL %s is negative (0 means it never expires)", in.TokenTTL))
	}
	if !path.IsAbs(in.Dir) {
		errs = append(errs, fmt.Errorf("directory %q is not absolute", in.Dir))
	}
	if role != machineconfig.RoleInit && len(in.CACertHashes) == 0 {
		errs = append(errs, errors.New("a joining node needs the CA cert hashes"))
	}
	if role == machineconfig.RoleControlPlane && !in.CAsPreinstalled && in.CertificateKey == "" {
		errs = append(errs, errors.New("a control-plane node needs the certificate key when the CAs are not pre-installed"))
	}
	if role == machineconfig.RoleWorker && in.CertificateKey != "" {
		errs = append(errs, errors.New("a worker must not get the certificate key (it decrypts the cluster CA keys)"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("kubeadm config inputs: %w", err)
	}
	return nil
}

// nodeIPs checks in.NodeIPs against the config, or takes the config's
// advertise address.
func nodeIPs(cfg *machineconfig.MachineConfig, in Inputs) ([]netip.Addr, error) {
	configured := cfg.Kubernetes.AdvertiseAddress
	ips := in.NodeIPs
	if len(ips) == 0 {
		if configured == "" {
			return nil, errors.New("kubeadm config: the node IP is unknown: the config has no static address and none was found at boot")
		}
		a, err := netip.ParseAddr(configured)
		if err != nil {
			return nil, fmt.Errorf("kubeadm config: kubernetes.advertiseAddress: %w", err)
		}
		ips = []netip.Addr{a}
	}
	switch {
	case len(ips) > 2:
		return nil, fmt.Errorf("kubeadm config: %d node IPs; at most one per IP family", len(ips))
	case len(ips) == 2 && ips[0].Is4() == ips[1].Is4():
		return nil, fmt.Errorf("kubeadm config: node IPs %s and %s are of the same family; a dual-stack node has one of each", ips[0], ips[1])
	case configured != "" && ips[0].String() != configured:
		return nil, fmt.Errorf("kubeadm config: node IP %s is not the configured kubernetes.advertiseAddress %s", ips[0], configured)
	}
	for _, ip := range ips {
		if !ip.IsValid() || ip.Zone() != "" || ip.IsUnspecified() || ip.IsLoopback() {
			return nil, fmt.Errorf("kubeadm config: %v is not a usable node IP", ip)
		}
	}
	return ips, nil
}

func initDocuments(cfg *machineconfig.MachineConfig, in Inputs, ips []netip.Addr) []document {
	k := &cfg.Kubernetes
	ic := initConfiguration{
		typeMeta: typeMeta{kubeadmAPIVersion, kindInit},
		BootstrapTokens: []bootstrapToken{{
			Token:       in.Token.Reveal(),
			Description: "kubeboot: joins the nodes of this cluster",
			TTL:         duration(in.TokenTTL),
			Usages:      tokenUsages,
			Groups:      tokenGroups,
		}},
		NodeRegistration: registration(cfg, ips),
		LocalAPIEndpoint: apiEndpoint{AdvertiseAddress: ips[0].String(), BindPort: apiServerPort},
		SkipPhases:       skipPhases,
		Patches:          &patches{Directory: path.Join(in.Dir, PatchesSubdir)},
		Timeouts: timeouts{
			ControlPlaneComponentHealthCheck: duration(controlPlaneHealthTimeout),
			KubeletHealthCheck:               duration(kubeletHealthTimeout),
			KubernetesAPICall:                duration(kubernetesAPICallTimeout),
		},
	}
	if !in.CAsPreinstalled {
		ic.CertificateKey = in.CertificateKey.Reveal()
	}
	cc := clusterConfiguration{
		typeMeta: typeMeta{kubeadmAPIVersion, kindCluster},
		Networking: networking{
			ServiceSubnet: cidrList(k.ServiceSubnet),
			PodSubnet:     cidrList(k.PodSubnet),
			DNSDomain:     k.DNSDomain,
		},
		KubernetesVersion:    k.Version,
		ControlPlaneEndpoint: k.ControlPlaneEndpoint,
		APIServer:            apiServer{CertSANs: k.CertSANs},
		Etcd:                 etcd{Local: component{ExtraArgs: etcdArgs}},
		ControllerManager:    component{ExtraArgs: leaderElectionArgs},
		Scheduler:            component{ExtraArgs: leaderElectionArgs},
		EncryptionAlgorithm:  keyAlgorithm,
	}
	docs := []document{
		{kindInit, ic},
		{kindCluster, cc},
		{kindKubelet, kubeletConfiguration{typeMeta: typeMeta{kubeletAPIVersion, kindKubelet}, CgroupDriver: cgroupDriver, ResolvConf: resolvConf}},
	}
	// kubeadm's defaults suffice for kube-proxy (clusterCIDR from
	// podSubnet); the document exists only to carry a patch.
	for _, p := range k.KubeadmPatches {
		if p.Kind == kindKubeProxy {
			docs = append(docs, document{kindKubeProxy, typeMeta{kubeProxyAPIVersion, kindKubeProxy}})
			break
		}
	}
	return docs
}

func joinDocuments(cfg *machineconfig.MachineConfig, in Inputs, ips []netip.Addr) []document {
	k := &cfg.Kubernetes
	jc := joinConfiguration{
		typeMeta:         typeMeta{kubeadmAPIVersion, kindJoin},
		NodeRegistration: registration(cfg, ips),
		Discovery: discovery{BootstrapToken: bootstrapTokenDiscovery{
			Token:             in.Token.Reveal(),
			APIServerEndpoint: k.ControlPlaneEndpoint,
			CACertHashes:      in.CACertHashes,
		}},
		SkipPhases: skipPhases,
		Timeouts: timeouts{
			KubeletHealthCheck: duration(kubeletHealthTimeout),
			KubernetesAPICall:  duration(kubernetesAPICallTimeout),
			TLSBootstrap:       duration(tlsBootstrapTimeout),
			Discovery:          duration(discoveryTimeout),
		},
	}
	if cfg.Role == machineconfig.RoleControlPlane || slices.ContainsFunc(k.KubeadmPatches, func(p machineconfig.KubeadmPatch) bool { return p.Kind == kindKubelet }) {
		jc.Patches = &patches{Directory: path.Join(in.Dir, PatchesSubdir)}
	}
	if cfg.Role == machineconfig.RoleControlPlane {
		jc.ControlPlane = &joinControlPlane{LocalAPIEndpoint: apiEndpoint{AdvertiseAddress: ips[0].String(), BindPort: apiServerPort}}
		if !in.CAsPreinstalled {
			jc.ControlPlane.CertificateKey = in.CertificateKey.Reveal()
		}
		jc.Timeouts.ControlPlaneComponentHealthCheck = duration(controlPlaneHealthTimeout)
		jc.Timeouts.EtcdAPICall = duration(etcdAPICallTimeout)
	}
	return []document{{kindJoin, jc}}
}

// registration is the node's part of init and join: name, runtime,
// taints, kubelet flags, preflight errors to ignore.
func registration(cfg *machineconfig.MachineConfig, ips []netip.Addr) nodeRegistration {
	k := &cfg.Kubernetes
	r := nodeRegistration{
		Name:                  k.NodeName,
		CRISocket:             CRISocket,
		IgnorePreflightErrors: k.IgnorePreflightErrors,
		ImagePullPolicy:       imagePullPolicy,
	}
	var taints []taint
	controlPlaneTaint := taint{Key: machineconfig.ControlPlaneTaintKey, Effect: "NoSchedule"}
	hasIt := slices.ContainsFunc(k.NodeTaints, func(t machineconfig.Taint) bool {
		return t.Key == controlPlaneTaint.Key && t.Effect == controlPlaneTaint.Effect
	})
	if cfg.Role.IsControlPlane() && !k.AllowSchedulingOnControlPlane && !hasIt {
		taints = append(taints, controlPlaneTaint)
	}
	for _, t := range k.NodeTaints {
		taints = append(taints, taint(t))
	}
	// On a control plane an empty list must be written, or kubeadm adds
	// its taint; elsewhere it is left out.
	if len(taints) > 0 || cfg.Role.IsControlPlane() {
		r.Taints = &taints
	}
	addrs := make([]string, len(ips))
	for i, ip := range ips {
		addrs[i] = ip.String()
	}
	r.KubeletExtraArgs = []arg{{"node-ip", strings.Join(addrs, ",")}}
	if len(k.NodeLabels) > 0 {
		labels := make([]string, 0, len(k.NodeLabels))
		for _, key := range slices.Sorted(maps.Keys(k.NodeLabels)) {
			labels = append(labels, key+"="+k.NodeLabels[key])
		}
		r.KubeletExtraArgs = append(r.KubeletExtraArgs, arg{"node-labels", strings.Join(labels, ",")})
	}
	return r
}

// cidrList writes a possibly dual-stack subnet the way kubeadm splits it:
// comma-separated, no spaces.
func cidrList(s string) string {
	parts := strings.Split(s, ",")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return strings.Join(slices.DeleteFunc(parts, func(p string) bool { return p == "" }), ",")
}

// encode writes YAML documents, two-space indented, "---" between them.
func encode(nodes []*yaml.Node) ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	for _, n := range nodes {
		if err := enc.Encode(n); err != nil {
			return nil, fmt.Errorf("kubeadm config: %w", err)
		}
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
