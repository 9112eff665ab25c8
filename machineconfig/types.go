// Package machineconfig defines the kubeboot MachineConfig (apiVersion
// kubeboot.dev/v1alpha1): the one document a node needs to become a
// Kubernetes node. Decode strictly with Parse or Load; both validate fully
// and report every problem at once with file, line, column and field path.
package machineconfig

const (
	APIVersion = "kubeboot.dev/v1alpha1"
	Kind       = "MachineConfig"
)

// Role says how the node enters the cluster.
type Role string

const (
	RoleInit         Role = "init"          // first control plane: kubeadm init
	RoleControlPlane Role = "control-plane" // kubeadm join --control-plane
	RoleWorker       Role = "worker"        // kubeadm join
)

// IsControlPlane reports whether the role runs the control-plane components.
func (r Role) IsControlPlane() bool { return r == RoleInit || r == RoleControlPlane }

// MachineConfig is the whole machine configuration.
type MachineConfig struct {
	APIVersion string      `yaml:"apiVersion"`
	Kind       string      `yaml:"kind"`
	Role       Role        `yaml:"role"`
	Hostname   string      `yaml:"hostname"`
	Hosts      []HostEntry `yaml:"hosts,omitempty"`
	Network    Network     `yaml:"network,omitempty"`
	Firewall   Firewall    `yaml:"firewall,omitempty"`
	System     System      `yaml:"system,omitempty"`
	Kubernetes Kubernetes  `yaml:"kubernetes"`
	Users      []User      `yaml:"users,omitempty"`
	Containerd Containerd  `yaml:"containerd,omitempty"`
	Time       Time        `yaml:"time,omitempty"`
}

// Time configures the node's clock: certificates kubeadm makes and checks
// need it right.
type Time struct {
	// Servers are NTP servers (host names or addresses) for
	// systemd-timesyncd; with any, the first boot waits for a sync before
	// kubeadm makes certificates. None: timesyncd's own defaults, no wait.
	Servers []string `yaml:"servers,omitempty"`
}

// HostEntry is one extra /etc/hosts line.
type HostEntry struct {
	IP    string   `yaml:"ip"`
	Names []string `yaml:"names"`
}

// Network is the internal network model. The native form is decoded into it
// directly; cloud-init network-config v2 (netplan) is converted into it.
type Network struct {
	Interfaces  []Interface `yaml:"interfaces,omitempty"`
	VLANs       []VLAN      `yaml:"vlans,omitempty"`
	Bonds       []Bond      `yaml:"bonds,omitempty"`
	Nameservers Nameservers `yaml:"nameservers,omitempty"`
}

// Match selects a physical link. When both fields are set both must match.
type Match struct {
	MACAddress string `yaml:"macAddress,omitempty"`
	Name       string `yaml:"name,omitempty"` // exact kernel name before any rename
}

// IPConfig is the layer-3 part shared by interfaces, VLANs and bonds.
type IPConfig struct {
	MTU       int      `yaml:"mtu,omitempty"`
	DHCP4     bool     `yaml:"dhcp4,omitempty"`
	DHCP6     bool     `yaml:"dhcp6,omitempty"`
	Addresses []string `yaml:"addresses,omitempty"` // CIDR, e.g. 172.16.0.11/24
	Routes    []Route  `yaml:"routes,omitempty"`
	// RouteMetric is the metric of the prefix routes of this link's addresses
	// and the default for its routes without a metric (NetworkManager's
	// ipv4.route-metric); the reference uses 100 on enp1s0 and 101 on enp2s0.
	RouteMetric *int `yaml:"routeMetric,omitempty"`
	// Optional links are not waited for (no carrier is not an error).
	Optional bool `yaml:"optional,omitempty"`
}

// Interface is a physical link. With Match set, the matched link is renamed
// to Name (netplan's set-name); without it, Name is the kernel name to use.
type Interface struct {
	Name     string `yaml:"name"`
	Match    *Match `yaml:"match,omitempty"`
	IPConfig `yaml:",inline"`
}

// VLAN is an 802.1Q sub-interface of Link.
type VLAN struct {
	Name     string `yaml:"name"`
	ID       int    `yaml:"id"`
	Link     string `yaml:"link"`
	IPConfig `yaml:",inline"`
}

// Bond aggregates Interfaces (names of entries in Network.Interfaces).
type Bond struct {
	Name       string         `yaml:"name"`
	Interfaces []string       `yaml:"interfaces"`
	Parameters BondParameters `yaml:"parameters,omitempty"`
	IPConfig   `yaml:",inline"`
}

// BondParameters follow the kernel bonding driver's names.
type BondParameters struct {
	Mode               string `yaml:"mode,omitempty"`               // balance-rr, active-backup, balance-xor, broadcast, 802.3ad, balance-tlb, balance-alb
	MIIMonitorInterval int    `yaml:"miiMonitorInterval,omitempty"` // ms
	LACPRate           string `yaml:"lacpRate,omitempty"`           // slow | fast
	TransmitHashPolicy string `yaml:"transmitHashPolicy,omitempty"` // layer2, layer3+4, layer2+3, encap2+3, encap3+4
	Primary            string `yaml:"primary,omitempty"`
}

// Route is a static route on the link it is declared on.
type Route struct {
	To     string `yaml:"to"`            // CIDR or "default"
	Via    string `yaml:"via,omitempty"` // gateway; empty for on-link routes
	Metric *int   `yaml:"metric,omitempty"`
}

// Nameservers end up in /etc/resolv.conf.
type Nameservers struct {
	Addresses []string `yaml:"addresses,omitempty"`
	Search    []string `yaml:"search,omitempty"`
}

// Backend selects how the firewall stage opens ports.
type Backend string

const (
	BackendAuto      Backend = "auto"      // firewalld when it is active, nftables otherwise
	BackendFirewalld Backend = "firewalld" // firewalld over D-Bus
	BackendNftables  Backend = "nftables"  // own nftables table, default-drop input
	BackendNone      Backend = "none"      // leave the firewall alone
)

// Firewall opens the role's Kubernetes ports (and extra ones).
type Firewall struct {
	Backend Backend `yaml:"backend,omitempty"`
	// KubernetesPorts opens the role's ports; default true.
	KubernetesPorts *bool `yaml:"kubernetesPorts,omitempty"`
	// Ports are extra ports, "N/proto" or "N-M/proto" with proto tcp|udp|sctp.
	Ports []string `yaml:"ports,omitempty"`
	// SSHPort is always allowed by the nftables backend; default 22, 0 closes it.
	SSHPort *int `yaml:"sshPort,omitempty"`
	// Interfaces and Sources restrict where the ports are opened; empty means everywhere.
	Interfaces []string `yaml:"interfaces,omitempty"`
	Sources    []string `yaml:"sources,omitempty"` // CIDRs
	// Zone is the firewalld zone; default: the zone bound to Interfaces, else the default zone.
	Zone string `yaml:"zone,omitempty"`
}

// System holds kernel settings applied before Kubernetes, on top of the ones
// kubeadm's preflight needs (which are always applied).
type System struct {
	Sysctls map[string]string `yaml:"sysctls,omitempty"`
	Modules []string          `yaml:"modules,omitempty"`
}

// Kubernetes describes the node's part in the cluster.
type Kubernetes struct {
	Version              string `yaml:"version"`              // vMAJOR.MINOR.PATCH, must match the baked kubeadm
	ControlPlaneEndpoint string `yaml:"controlPlaneEndpoint"` // host:port
	// AdvertiseAddress is the API server / node IP; default: the first static
	// address of the link holding the default route.
	AdvertiseAddress string            `yaml:"advertiseAddress,omitempty"`
	PodSubnet        string            `yaml:"podSubnet,omitempty"` // default 10.244.0.0/16
	PodNetwork       PodNetwork        `yaml:"podNetwork,omitempty"`
	ServiceSubnet    string            `yaml:"serviceSubnet,omitempty"` // default 10.96.0.0/12
	DNSDomain        string            `yaml:"dnsDomain,omitempty"`     // default cluster.local
	NodeName         string            `yaml:"nodeName,omitempty"`      // default: hostname
	NodeLabels       map[string]string `yaml:"nodeLabels,omitempty"`
	NodeTaints       []Taint           `yaml:"nodeTaints,omitempty"`
	CertSANs         []string          `yaml:"certSANs,omitempty"`
	Credentials      Credentials       `yaml:"credentials,omitempty"`
	// KubeadmPatches are merged (RFC 7386 JSON merge patch) into the generated
	// kubeadm v1beta4 / component documents, for anything the schema lacks.
	KubeadmPatches []KubeadmPatch `yaml:"kubeadmPatches,omitempty"`
	// IgnorePreflightErrors names kubeadm preflight checks whose errors
	// become warnings (kubeadm's nodeRegistration.ignorePreflightErrors);
	// bootstrapd lets through the warnings of exactly these checks.
	IgnorePreflightErrors []string `yaml:"ignorePreflightErrors,omitempty"`
	// AllowSchedulingOnControlPlane leaves out kubeadm's control-plane
	// taint (node-role.kubernetes.io/control-plane:NoSchedule) on init and
	// control-plane nodes, so ordinary pods run there too.
	AllowSchedulingOnControlPlane bool `yaml:"allowSchedulingOnControlPlane,omitempty"`
}

// PodNetwork configures the pod network the init node installs (flannel,
// docs/pod-network.md). Every node's config must name the same podSubnet
// and backend: each node's firewall trusts the pod subnet and opens the
// backend's port.
type PodNetwork struct {
	Backend PodNetworkBackend `yaml:"backend,omitempty"` // default host-gw
}

// PodNetworkBackend is how pod traffic crosses from node to node.
type PodNetworkBackend string

const (
	// PodNetworkHostGW routes each node's pod range via that node's address:
	// no encapsulation, full MTU, no port to open; all nodes must share one
	// layer-2 network (the reference's 172.16.0.0/24).
	PodNetworkHostGW PodNetworkBackend = "host-gw"
	// PodNetworkVXLAN encapsulates pod traffic in UDP (port 8472); works
	// across routed networks, at 50 bytes of MTU and some CPU.
	PodNetworkVXLAN PodNetworkBackend = "vxlan"
)

// Taint is a node taint as in the Kubernetes API.
type Taint struct {
	Key    string `yaml:"key"`
	Value  string `yaml:"value,omitempty"`
	Effect string `yaml:"effect"` // NoSchedule | PreferNoSchedule | NoExecute
}

// Credentials let nodes join. The cluster secrets (Secrets inline, or the
// bundle SecretsBundle names) carry the CAs every control plane installs
// and the token; Token, when set, takes precedence over theirs (JoinToken).
// On an init node the token is the one created, so the other nodes'
// configs can be written in advance; on joining nodes it is the one used.
type Credentials struct {
	Token        Secret   `yaml:"token,omitempty"`        // [a-z0-9]{6}.[a-z0-9]{16}
	CACertHashes []string `yaml:"caCertHashes,omitempty"` // sha256:<64 hex>
	// CertificateKey is kubeadm's --certificate-key (64 hex, a 32-byte AES
	// key). kubeboot installs the CAs from the secrets instead of
	// uploading them, so it only checks the format.
	CertificateKey Secret `yaml:"certificateKey,omitempty"`
	// TokenTTL is the lifetime of the token the init node creates, a Go
	// duration such as 24h; empty means the token never expires.
	TokenTTL string `yaml:"tokenTTL,omitempty"`
	// SecretsBundle is the path of a cluster secrets bundle (kubeboot
	// secrets gen), relative to the config file or absolute. Parse leaves
	// it a path; ParseWithFiles reads it into Bundle.
	SecretsBundle string `yaml:"secretsBundle,omitempty"`
	// Secrets is the same content as a bundle, written inline (kubeboot
	// config gen does so for control planes).
	Secrets *ClusterSecrets `yaml:"secrets,omitempty"`
	// Bundle is what ParseWithFiles read from SecretsBundle, reduced to
	// what the role needs (a worker keeps the CA certificate and the
	// token). It is part of Hash, so new secrets make a new config.
	Bundle *ClusterSecrets `yaml:"-"`
}

// KubeadmPatch is merged into the generated document of the given kind.
type KubeadmPatch struct {
	Kind  string         `yaml:"kind"` // InitConfiguration, ClusterConfiguration, JoinConfiguration, KubeletConfiguration, KubeProxyConfiguration
	Patch map[string]any `yaml:"patch"`
}

// Containerd configures the node's container runtime.
type Containerd struct {
	// Mirrors become containerd hosts.toml files under
	// /etc/containerd/certs.d (bootstrapd/registries).
	Mirrors []RegistryMirror `yaml:"mirrors,omitempty"`
}

// RegistryMirror sends the pulls of one registry's images to mirrors,
// tried in order before the registry itself.
type RegistryMirror struct {
	// Registry is the host of image references, with its port if any:
	// docker.io, quay.io, registry.home.local:5000.
	Registry  string           `yaml:"registry"`
	Endpoints []MirrorEndpoint `yaml:"endpoints"`
}

// MirrorEndpoint is one mirror of a registry.
type MirrorEndpoint struct {
	// URL is https://host[:port] or, for a mirror without TLS,
	// http://host[:port]: the scheme is the explicit choice, as in
	// containerd's hosts.toml.
	URL string `yaml:"url"`
	// CACert is PEM: the certificates that sign the mirror's TLS
	// certificate, trusted for this mirror only (https only).
	CACert string `yaml:"caCert,omitempty"`
	// Capabilities are containerd's: pull (fetch blobs and manifests by
	// digest) and resolve (turn a tag into a digest). Default both.
	Capabilities []string `yaml:"capabilities,omitempty"`
}

// User is a local account that receives the admin kubeconfig at
// ~/.kube/config (0600, owned by the user), as the reference did by hand.
type User struct {
	Name string `yaml:"name"`
	UID  *int   `yaml:"uid,omitempty"`  // created with this UID when missing
	Home string `yaml:"home,omitempty"` // default /home/NAME (/root for root)
	// SSHAuthorizedKeys are public keys in authorized_keys format (options
	// allowed) written to ~/.ssh/authorized_keys; any key on any user turns
	// sshd on and opens firewall.sshPort.
	SSHAuthorizedKeys []string `yaml:"sshAuthorizedKeys,omitempty"`
}

// Secret is a string that never prints itself: fmt, logs and status output
// see "<redacted>". Use Reveal where the value is really needed.
type Secret string

func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "<redacted>"
}

// GoString keeps %#v from leaking the value.
func (s Secret) GoString() string { return `"` + s.String() + `"` }

// Reveal returns the secret value.
func (s Secret) Reveal() string { return string(s) }
