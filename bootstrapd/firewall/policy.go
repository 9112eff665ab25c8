package firewall

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"kubeboot.dev/kubeboot/machineconfig"
)

// Port is a port or an inclusive port range of one protocol.
type Port struct {
	Proto       string // tcp, udp or sctp
	First, Last uint16
}

// String is firewalld's and the config's notation: "6443/tcp", "2379-2380/tcp".
func (p Port) String() string {
	if p.First == p.Last {
		return fmt.Sprintf("%d/%s", p.First, p.Proto)
	}
	return fmt.Sprintf("%d-%d/%s", p.First, p.Last, p.Proto)
}

// Range is the port part alone, as firewalld's D-Bus API takes it.
func (p Port) Range() string {
	s := p.String()
	return s[:strings.IndexByte(s, '/')]
}

var protocols = []string{"tcp", "udp", "sctp"}

// parsePort reads "N/proto" or "N-M/proto" (validated already by
// machineconfig; the error still says what is wrong).
func parsePort(s string) (Port, error) {
	from, to, proto, err := machineconfig.ParsePort(s)
	if err != nil {
		return Port{}, err
	}
	return Port{Proto: proto, First: uint16(from), Last: uint16(to)}, nil
}

// RolePorts are the inbound ports Kubernetes needs on a node of the role
// (kubernetes.io/docs/reference/networking/ports-and-protocols).
func RolePorts(role machineconfig.Role) []Port {
	tcp := func(first, last uint16) Port { return Port{"tcp", first, last} }
	if role.IsControlPlane() {
		return []Port{
			tcp(6443, 6443),   // kube-apiserver
			tcp(2379, 2380),   // etcd client and peer
			tcp(10250, 10250), // kubelet API
			tcp(10257, 10257), // kube-controller-manager
			tcp(10259, 10259), // kube-scheduler
		}
	}
	return []Port{
		tcp(10250, 10250),                         // kubelet API
		tcp(10256, 10256),                         // kube-proxy health
		tcp(30000, 32767),                         // NodePort services
		{Proto: "udp", First: 30000, Last: 32767}, // NodePort services
	}
}

// PodNetworkPorts are the inbound ports the pod network needs on every
// node: flannel's VXLAN port for backend vxlan; host-gw only routes, and
// flanneld's health endpoint listens on loopback.
func PodNetworkPorts(backend machineconfig.PodNetworkBackend) []Port {
	if backend == machineconfig.PodNetworkVXLAN {
		return []Port{{Proto: "udp", First: 8472, Last: 8472}} // flannel vxlan
	}
	return nil
}

// SSHPorts is the SSH port the node opens: firewall.sshPort (default 22)
// when some user has an SSH key, since only then does the node run sshd
// (bootstrapd/ssh); none otherwise.
func SSHPorts(cfg *machineconfig.MachineConfig) []Port {
	port := machineconfig.DefaultSSHPort
	if cfg.Firewall.SSHPort != nil {
		port = *cfg.Firewall.SSHPort
	}
	if !cfg.SSHEnabled() || port < 1 || port > 65535 {
		return nil
	}
	return []Port{{Proto: "tcp", First: uint16(port), Last: uint16(port)}}
}

// PodBridge is the bridge the flannel CNI plugin puts the node's pods on
// (its default, which manifests/flannel keeps): packets from local pods to
// the node come in through it.
const PodBridge = "cni0"

// policy is what the config asks of the firewall, independent of backend.
type policy struct {
	ports      []Port // merged and sorted per protocol
	ssh        []Port // SSHPorts: not restricted by interfaces or sources
	interfaces []string
	sources    []netip.Prefix
	// pods are kubernetes.podSubnet: traffic from pods is trusted (local
	// pods to the node, forwarded pod traffic between nodes).
	pods []netip.Prefix
}

// policyOf derives the policy from the firewall section; errors name the
// field path.
func policyOf(cfg *machineconfig.MachineConfig) (policy, error) {
	fw := cfg.Firewall
	var p policy
	if fw.KubernetesPorts == nil || *fw.KubernetesPorts {
		p.ports = append(p.ports, RolePorts(cfg.Role)...)
		p.ports = append(p.ports, PodNetworkPorts(cfg.Kubernetes.PodNetwork.Backend)...)
	}
	for i, s := range fw.Ports {
		port, err := parsePort(s)
		if err != nil {
			return policy{}, fmt.Errorf("firewall.ports[%d]: %w", i, err)
		}
		p.ports = append(p.ports, port)
	}
	p.ports = mergePorts(p.ports)

	if fw.SSHPort != nil && (*fw.SSHPort < 0 || *fw.SSHPort > 65535) {
		return policy{}, fmt.Errorf("firewall.sshPort: %d is not a port (0 closes SSH)", *fw.SSHPort)
	}
	p.ssh = SSHPorts(cfg)

	for i, name := range fw.Interfaces {
		if name == "" || len(name) > 15 {
			return policy{}, fmt.Errorf("firewall.interfaces[%d]: %q is not an interface name (1-15 bytes)", i, name)
		}
		if !slices.Contains(p.interfaces, name) {
			p.interfaces = append(p.interfaces, name)
		}
	}
	slices.Sort(p.interfaces)

	for i, s := range fw.Sources {
		prefix, err := netip.ParsePrefix(s)
		if err != nil {
			addr, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return policy{}, fmt.Errorf("firewall.sources[%d]: %q is not a CIDR or address", i, s)
			}
			prefix = netip.PrefixFrom(addr, addr.BitLen())
		}
		prefix = prefix.Masked()
		if !slices.Contains(p.sources, prefix) {
			p.sources = append(p.sources, prefix)
		}
	}
	if subnet := cfg.Kubernetes.PodSubnet; subnet != "" {
		for _, s := range strings.Split(subnet, ",") {
			prefix, err := netip.ParsePrefix(strings.TrimSpace(s))
			if err != nil {
				return policy{}, fmt.Errorf("kubernetes.podSubnet: %q is not a CIDR", s)
			}
			p.pods = append(p.pods, prefix.Masked())
		}
		slices.SortFunc(p.pods, comparePrefix)
	}
	slices.SortFunc(p.sources, comparePrefix)
	// A prefix inside a listed wider one adds nothing, and nftables interval
	// sets reject overlapping elements.
	p.sources = slices.DeleteFunc(p.sources, func(inner netip.Prefix) bool {
		return slices.ContainsFunc(p.sources, func(outer netip.Prefix) bool {
			return outer != inner && outer.Bits() <= inner.Bits() && outer.Contains(inner.Addr())
		})
	})
	return p, nil
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// mergePorts sorts ports by protocol and start and joins overlapping or
// adjacent ranges: nftables interval sets reject overlapping elements, and
// one range per span keeps firewalld's port list minimal.
func mergePorts(ports []Port) []Port {
	sorted := slices.Clone(ports)
	slices.SortFunc(sorted, func(a, b Port) int {
		if c := strings.Compare(a.Proto, b.Proto); c != 0 {
			return c
		}
		return int(a.First) - int(b.First)
	})
	var out []Port
	for _, p := range sorted {
		if n := len(out); n > 0 && out[n-1].Proto == p.Proto && int(p.First) <= int(out[n-1].Last)+1 {
			out[n-1].Last = max(out[n-1].Last, p.Last)
			continue
		}
		out = append(out, p)
	}
	return out
}

// portsOf returns the ports of one protocol.
func (p policy) portsOf(proto string) []Port {
	var out []Port
	for _, port := range p.ports {
		if port.Proto == proto {
			out = append(out, port)
		}
	}
	return out
}
