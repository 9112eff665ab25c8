package machineconfig

import (
	"net/netip"
	"path"
	"slices"
	"strings"
)

// Defaults applied by SetDefaults (Parse applies them before validating).
const (
	DefaultServiceSubnet = "10.96.0.0/12"
	DefaultPodSubnet     = "10.244.0.0/16"
	DefaultPodNetwork    = PodNetworkHostGW
	DefaultDNSDomain     = "cluster.local"
	DefaultSSHPort       = 22
)

// DefaultNameservers4 and DefaultNameservers6 are the upstream resolvers
// of a node that configures none and takes none from DHCP, as Talos
// defaults them and k3s falls back to one: CoreDNS forwards to the
// node's resolv.conf and exits without an upstream ("plugin/forward: no
// valid upstream addresses found"), so cluster DNS would not run at all.
// IPv6-only nodes get the IPv6 addresses of the same services.
var (
	DefaultNameservers4 = []string{"1.1.1.1", "8.8.8.8"}
	DefaultNameservers6 = []string{"2606:4700:4700::1111", "2001:4860:4860::8888"}
)

// SetDefaults fills every field left empty that has a default. It is the
// one place defaults live; docs/machine-config.md lists them:
//
//   - firewall.backend: auto; firewall.kubernetesPorts: true; firewall.sshPort: 22
//   - kubernetes.serviceSubnet: 10.96.0.0/12; kubernetes.dnsDomain: cluster.local
//   - kubernetes.podSubnet: 10.244.0.0/16; kubernetes.podNetwork.backend: host-gw
//   - kubernetes.nodeName: the hostname
//   - kubernetes.advertiseAddress: the first static IPv4 address of the link
//     holding the default route, else the first static address of any link
//   - users[].home: /home/NAME, /root for root
//   - containerd.mirrors[].endpoints[].capabilities: [pull, resolve]
//   - network.nameservers.addresses, when no link uses DHCP:
//     DefaultNameservers4, or DefaultNameservers6 on a node whose static
//     addresses are all IPv6
func (c *MachineConfig) SetDefaults() {
	fw := &c.Firewall
	if fw.Backend == "" {
		fw.Backend = BackendAuto
	}
	if fw.KubernetesPorts == nil {
		t := true
		fw.KubernetesPorts = &t
	}
	if fw.SSHPort == nil {
		p := DefaultSSHPort
		fw.SSHPort = &p
	}
	if ns := &c.Network.Nameservers; len(ns.Addresses) == 0 && !c.Network.usesDHCP() {
		ns.Addresses = slices.Clone(DefaultNameservers4)
		if c.Network.ipv6Only() {
			ns.Addresses = slices.Clone(DefaultNameservers6)
		}
	}
	k := &c.Kubernetes
	if k.ServiceSubnet == "" {
		k.ServiceSubnet = DefaultServiceSubnet
	}
	if k.PodSubnet == "" {
		k.PodSubnet = DefaultPodSubnet
	}
	if k.PodNetwork.Backend == "" {
		k.PodNetwork.Backend = DefaultPodNetwork
	}
	if k.DNSDomain == "" {
		k.DNSDomain = DefaultDNSDomain
	}
	if k.NodeName == "" {
		k.NodeName = c.Hostname
	}
	if k.AdvertiseAddress == "" {
		k.AdvertiseAddress = c.Network.defaultAdvertiseAddress()
	}
	for i := range c.Containerd.Mirrors {
		for j := range c.Containerd.Mirrors[i].Endpoints {
			if e := &c.Containerd.Mirrors[i].Endpoints[j]; e.Capabilities == nil {
				e.Capabilities = []string{CapabilityPull, CapabilityResolve}
			}
		}
	}
	for i := range c.Users {
		u := &c.Users[i]
		if u.Home == "" && u.Name != "" {
			if u.Name == "root" {
				u.Home = "/root"
			} else {
				u.Home = path.Join("/home", u.Name)
			}
		}
	}
}

// Links returns the layer-3 settings of every link in order: interfaces,
// then VLANs, then bonds, with their names.
func (n *Network) Links() []Link {
	var links []Link
	for i := range n.Interfaces {
		links = append(links, Link{Name: n.Interfaces[i].Name, IPConfig: &n.Interfaces[i].IPConfig})
	}
	for i := range n.VLANs {
		links = append(links, Link{Name: n.VLANs[i].Name, IPConfig: &n.VLANs[i].IPConfig})
	}
	for i := range n.Bonds {
		links = append(links, Link{Name: n.Bonds[i].Name, IPConfig: &n.Bonds[i].IPConfig})
	}
	return links
}

// Link is a named view of one link's layer-3 settings.
type Link struct {
	Name string
	*IPConfig
}

// IsDefaultRoute reports whether the route's destination is a default
// route: "default", 0.0.0.0/0 or ::/0.
func (r Route) IsDefaultRoute() bool {
	return r.To == "default" || r.To == "0.0.0.0/0" || r.To == "::/0"
}

func (n *Network) usesDHCP() bool {
	return slices.ContainsFunc(n.Links(), func(l Link) bool { return l.DHCP4 || l.DHCP6 })
}

// ipv6Only says the node has static addresses and all are IPv6.
func (n *Network) ipv6Only() bool {
	seen := false
	for _, l := range n.Links() {
		for _, a := range l.Addresses {
			p, err := netip.ParsePrefix(strings.TrimSpace(a))
			if err != nil {
				continue
			}
			if p.Addr().Is4() {
				return false
			}
			seen = true
		}
	}
	return seen
}

func (n *Network) defaultAdvertiseAddress() string {
	links := n.Links()
	for _, l := range links {
		hasDefault := false
		for _, r := range l.Routes {
			if r.IsDefaultRoute() {
				hasDefault = true
			}
		}
		if !hasDefault {
			continue
		}
		for _, a := range l.Addresses {
			if p, err := netip.ParsePrefix(a); err == nil && p.Addr().Is4() {
				return p.Addr().String()
			}
		}
		break
	}
	for _, l := range links {
		for _, a := range l.Addresses {
			if p, err := netip.ParsePrefix(strings.TrimSpace(a)); err == nil {
				return p.Addr().String()
			}
		}
	}
	return ""
}
