package machineconfig

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"kubeboot.dev/kubeboot/internal/printable"
)

// Validate checks a config built or changed in code (Parse already
// validates). Call SetDefaults first if the defaults should count. The
// errors carry field paths but no file positions.
func (c *MachineConfig) Validate() error {
	var l ErrorList
	for _, p := range validateConfig(c) {
		l = append(l, Error{Path: clip(printable.String(p.path)), Message: clip(printable.String(p.msg))})
	}
	return l.errOrNil()
}

// problem is one semantic error at an internal field path. atKey points
// the error at the key rather than its value (e.g. a bad map key).
type problem struct {
	path  string
	atKey bool
	msg   string
}

type checker struct{ probs []problem }

func (c *checker) add(path, format string, args ...any) {
	c.probs = append(c.probs, problem{path: path, msg: fmt.Sprintf(format, args...)})
}

func (c *checker) addKey(path, format string, args ...any) {
	c.probs = append(c.probs, problem{path: path, atKey: true, msg: fmt.Sprintf(format, args...)})
}

func validateConfig(cfg *MachineConfig) []problem {
	var c checker
	c.header(cfg.APIVersion, cfg.Kind, Kind)
	c.role(cfg.Role)
	if cfg.Hostname == "" {
		c.add("hostname", "hostname is required")
	} else if msg := checkHostname(cfg.Hostname); msg != "" {
		c.add("hostname", "%s", msg)
	}
	for i, h := range cfg.Hosts {
		p := index("hosts", i)
		if _, err := netip.ParseAddr(h.IP); err != nil {
			c.add(p+".ip", "invalid IP address %q", h.IP)
		}
		if len(h.Names) == 0 {
			c.add(p+".names", "at least one name is required")
		}
		for j, n := range h.Names {
			if msg := checkDNSName(n); msg != "" {
				c.add(index(p+".names", j), "%s", msg)
			}
		}
	}
	c.network(&cfg.Network, "network")
	c.firewall(cfg)
	c.system(cfg)
	c.kubernetes(cfg)
	c.users(cfg.Users)
	c.containerd(cfg.Containerd)
	c.time(cfg.Time)
	return c.probs
}

var roles = []string{string(RoleInit), string(RoleControlPlane), string(RoleWorker)}

func (c *checker) role(r Role) {
	switch r {
	case RoleInit, RoleControlPlane, RoleWorker:
		return
	case "":
		c.add("role", "role is required: one of init, control-plane, worker")
		return
	}
	hint := didYouMean(string(r), roles)
	if r == "master" || r == "controlplane" || r == "control_plane" {
		hint = `; did you mean "control-plane"?`
	}
	c.add("role", "unknown role %q; must be one of init, control-plane, worker%s", r, hint)
}

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// checkHostname checks an RFC 1123 host name in lower case (it becomes the
// Kubernetes node name, which must be lower case).
func checkHostname(h string) string {
	if h != strings.ToLower(h) {
		return fmt.Sprintf("hostname %q must be lower case (it is the Kubernetes node name)", h)
	}
	return checkDNSName(h)
}

// CheckDNSName checks an RFC 1123 DNS name (upper case allowed) with the
// rule the config's names follow, for names from elsewhere that end up in
// the same files: a DHCP server's domain name goes into resolv.conf.
func CheckDNSName(n string) error {
	if msg := checkDNSName(n); msg != "" {
		return errors.New(msg)
	}
	return nil
}

// checkDNSName checks an RFC 1123 DNS name; upper case is allowed.
func checkDNSName(n string) string {
	if len(n) > 253 {
		return fmt.Sprintf("%q is longer than 253 characters", n)
	}
	for _, label := range strings.Split(strings.ToLower(n), ".") {
		if !dnsLabel.MatchString(label) {
			return fmt.Sprintf("%q is not a valid RFC 1123 host name: labels are 1-63 letters, digits or '-', not starting or ending with '-'", n)
		}
	}
	return ""
}

// ifname rules of the kernel (dev_valid_name): 1-15 bytes, no '/', ':' or
// white space, not "." or "..".
func checkIfname(n string) string {
	switch {
	case n == "":
		return "name is required"
	case len(n) > 15:
		return fmt.Sprintf("link name %q is longer than 15 characters", n)
	case n == "." || n == "..":
		return fmt.Sprintf("invalid link name %q", n)
	case strings.ContainsAny(n, "*?["):
		return fmt.Sprintf("link name %q has glob characters; kubeboot matches exact names (use macAddress to match)", n)
	case strings.ContainsAny(n, "/: \t\n\"'"):
		return fmt.Sprintf("link name %q contains '/', ':', quotes or white space", n)
	case !ifnameRE.MatchString(n):
		return fmt.Sprintf("link name %q may hold only letters, digits, '-', '_' and '.'", n)
	}
	return ""
}

// ifnameRE is stricter than the kernel, which takes any byte but '/', ':'
// and white space: names reach firewall rules, status output and the
// shell of whoever debugs the node, where ';', '$' or '|' do harm.
var ifnameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

var macRE = regexp.MustCompile(`^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$`)

// parseAddress parses a CIDR interface address and explains what is wrong.
func parseAddress(s string) (netip.Prefix, string) {
	addr, bits, ok := strings.Cut(s, "/")
	if !ok {
		if _, err := netip.ParseAddr(s); err == nil {
			return netip.Prefix{}, fmt.Sprintf("address %q needs a prefix length, e.g. %s/24", s, s)
		}
		return netip.Prefix{}, fmt.Sprintf("invalid address %q: expected an IP address with a prefix length, e.g. 172.16.0.11/24", s)
	}
	ip, err := netip.ParseAddr(addr)
	if err != nil || ip.Zone() != "" {
		return netip.Prefix{}, fmt.Sprintf("invalid IP address %q in %q", addr, s)
	}
	n, err := strconv.Atoi(bits)
	if err != nil || strings.Trim(bits, "0123456789") != "" {
		return netip.Prefix{}, fmt.Sprintf("invalid prefix length %q in %q", bits, s)
	}
	if n > ip.BitLen() {
		family := "IPv4"
		if ip.Is6() {
			family = "IPv6"
		}
		return netip.Prefix{}, fmt.Sprintf("prefix length /%d is out of range for %s (0-%d)", n, family, ip.BitLen())
	}
	return netip.PrefixFrom(ip, n), ""
}

// parseCIDR parses a network prefix (host bits must be zero).
func parseCIDR(s string) (netip.Prefix, string) {
	p, msg := parseAddress(s)
	if msg != "" {
		return p, strings.Replace(msg, "address", "CIDR", 1)
	}
	if p.Masked() != p {
		return p, fmt.Sprintf("%q has host bits set; did you mean %s?", s, p.Masked())
	}
	return p, ""
}

// broadcast returns the last address of an IPv4 prefix.
func broadcast(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	for i := p.Bits(); i < 32; i++ {
		b[i/8] |= 1 << (7 - i%8)
	}
	return netip.AddrFrom4(b)
}

// linkAddr is a parsed static address with the link that holds it.
type linkAddr struct {
	link string
	p    netip.Prefix
}

func (c *checker) network(n *Network, base string) {
	names := map[string]string{} // link name -> path of its first use
	kinds := map[string]string{} // link name -> interface|vlan|bond
	macs := map[string]string{}
	var addrs []linkAddr
	dhcp4, dhcp6 := false, false
	checkName := func(p, name, kind string) {
		if msg := checkIfname(name); msg != "" {
			c.add(p+".name", "%s", msg)
			return
		}
		if first, dup := names[name]; dup {
			c.add(p+".name", "duplicate link name %q (also %s)", name, first)
			return
		}
		names[name], kinds[name] = p, kind
	}
	for i, in := range n.Interfaces {
		p := index(base+".interfaces", i)
		checkName(p, in.Name, "interface")
		if m := in.Match; m != nil {
			if m.MACAddress == "" && m.Name == "" {
				c.add(p+".match", "match needs macAddress or name")
			}
			if m.MACAddress != "" {
				if !macRE.MatchString(m.MACAddress) {
					c.add(p+".match.macAddress", "invalid MAC address %q: expected six hex pairs like 52:54:00:80:ad:b6", m.MACAddress)
				} else if first, dup := macs[strings.ToLower(m.MACAddress)]; dup {
					c.add(p+".match.macAddress", "duplicate MAC address %s (also %s)", m.MACAddress, first)
				} else {
					macs[strings.ToLower(m.MACAddress)] = p + ".match.macAddress"
				}
			}
			if m.Name != "" {
				if msg := checkIfname(m.Name); msg != "" {
					c.add(p+".match.name", "%s", msg)
				}
			}
		}
	}
	for i, v := range n.VLANs {
		checkName(index(base+".vlans", i), v.Name, "vlan")
	}
	for i, b := range n.Bonds {
		checkName(index(base+".bonds", i), b.Name, "bond")
	}

	type linkCfg struct {
		path string
		name string
		cfg  *IPConfig
	}
	var links []linkCfg
	for i := range n.Interfaces {
		links = append(links, linkCfg{index(base+".interfaces", i), n.Interfaces[i].Name, &n.Interfaces[i].IPConfig})
	}
	for i := range n.VLANs {
		links = append(links, linkCfg{index(base+".vlans", i), n.VLANs[i].Name, &n.VLANs[i].IPConfig})
	}
	for i := range n.Bonds {
		links = append(links, linkCfg{index(base+".bonds", i), n.Bonds[i].Name, &n.Bonds[i].IPConfig})
	}
	seenAddr := map[netip.Addr]string{}
	brokenAddr := false // a gateway may be reachable through an address we could not parse
	for _, l := range links {
		ipc := l.cfg
		dhcp4 = dhcp4 || ipc.DHCP4
		dhcp6 = dhcp6 || ipc.DHCP6
		if ipc.MTU != 0 && (ipc.MTU < 68 || ipc.MTU > 65535) {
			c.add(l.path+".mtu", "MTU %d is out of range (68-65535)", ipc.MTU)
		}
		if ipc.RouteMetric != nil && (*ipc.RouteMetric < 0 || *ipc.RouteMetric > 1<<32-1) {
			c.add(l.path+".routeMetric", "metric %d is out of range (0-4294967295)", *ipc.RouteMetric)
		}
		for j, a := range ipc.Addresses {
			ap := index(l.path+".addresses", j)
			pfx, msg := parseAddress(a)
			if msg != "" {
				c.add(ap, "%s", msg)
				brokenAddr = true
				continue
			}
			ip := pfx.Addr()
			switch {
			case ip.IsUnspecified() || ip.IsMulticast() || ip.IsLoopback():
				c.add(ap, "%s is not a unicast host address", ip)
				continue
			case ip.Is4() && pfx.Bits() < 31 && ip == pfx.Masked().Addr():
				c.add(ap, "%s is the network address of %s; use a host address such as %s", a, pfx.Masked(), pfx.Masked().Addr().Next())
				continue
			case ip.Is4() && pfx.Bits() < 31 && ip == broadcast(pfx):
				c.add(ap, "%s is the broadcast address of %s; use a host address", a, pfx.Masked())
				continue
			case ip.Is6() && pfx.Bits() < 127 && ip == pfx.Masked().Addr():
				c.add(ap, "%s is the subnet-router anycast address of %s; use a host address", a, pfx.Masked())
				continue
			}
			if first, dup := seenAddr[ip]; dup {
				c.add(ap, "address %s is already assigned at %s", ip, first)
				continue
			}
			seenAddr[ip] = ap
			addrs = append(addrs, linkAddr{l.name, pfx})
		}
	}
	// Gateways are checked once every address is known: a gateway may be
	// reachable through another link's prefix.
	for _, l := range links {
		for j, r := range l.cfg.Routes {
			rp := index(l.path+".routes", j)
			c.route(rp, r, addrs, dhcp4, dhcp6, brokenAddr)
		}
	}
	// Lookups are maps and name lists are made once: a hostile config may
	// list thousands of links, and a check per pair would be quadratic.
	linkNames := keys(kinds)
	type vlanKey struct {
		link string
		id   int
	}
	vlanIDs := map[vlanKey]string{}
	for i, v := range n.VLANs {
		p := index(base+".vlans", i)
		if v.ID < 1 || v.ID > 4094 {
			c.add(p+".id", "VLAN id %d is out of range (1-4094)", v.ID)
		}
		switch kind, ok := kinds[v.Link]; {
		case v.Link == "":
			c.add(p+".link", "link is required: the interface or bond carrying the VLAN")
		case !ok:
			c.add(p+".link", "link %q is not an interface or bond of this config%s", v.Link, didYouMean(v.Link, linkNames))
		case kind == "vlan":
			c.add(p+".link", "link %q is a VLAN; VLANs sit on an interface or bond", v.Link)
		}
		if k := (vlanKey{v.Link, v.ID}); v.ID != 0 {
			if first, dup := vlanIDs[k]; dup {
				c.add(p+".id", "VLAN id %d on %q is already used by %s", v.ID, v.Link, first)
			} else {
				vlanIDs[k] = p
			}
		}
	}
	members := map[string]string{}
	ifaces := map[string]int{} // interface name -> index of its first entry
	var ifaceNames []string
	for i, in := range n.Interfaces {
		if _, dup := ifaces[in.Name]; !dup {
			ifaces[in.Name] = i
		}
		ifaceNames = append(ifaceNames, in.Name)
	}
	for i, b := range n.Bonds {
		c.bond(index(base+".bonds", i), b, n, kinds, members, ifaces, ifaceNames)
	}
	c.nameservers(n.Nameservers, base+".nameservers")
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func (c *checker) route(rp string, r Route, addrs []linkAddr, dhcp4, dhcp6, brokenAddr bool) {
	var dst netip.Prefix
	isDefault := r.To == "default"
	switch {
	case r.To == "":
		c.add(rp+".to", `to is required: a CIDR or "default"`)
	case isDefault:
	default:
		p, msg := parseCIDR(r.To)
		if msg != "" {
			c.add(rp+".to", "%s", msg)
		} else {
			dst = p
		}
	}
	if r.Metric != nil && (*r.Metric < 0 || *r.Metric > 1<<32-1) {
		c.add(rp+".metric", "metric %d is out of range (0-4294967295)", *r.Metric)
	}
	if r.Via == "" {
		if isDefault {
			// "default" takes its family from the gateway; an on-link
			// default route is written as 0.0.0.0/0 or ::/0.
			c.add(rp+".via", `a "default" route needs via (the gateway); for an on-link default route write to: 0.0.0.0/0 or ::/0`)
		}
		return // an on-link route
	}
	gw, err := netip.ParseAddr(r.Via)
	if err != nil || gw.Zone() != "" {
		c.add(rp+".via", "invalid gateway %q: expected an IP address", r.Via)
		return
	}
	if dst.IsValid() && dst.Addr().Is4() != gw.Is4() {
		c.add(rp+".via", "gateway %s and destination %s are of different IP families", gw, dst)
		return
	}
	if gw.Is6() && gw.IsLinkLocalUnicast() {
		return // reachable on any IPv6 link
	}
	if gw.Is4() && dhcp4 || gw.Is6() && dhcp6 {
		return // a DHCP address may make it reachable; not known in advance
	}
	for _, a := range addrs {
		if a.p.Masked().Contains(gw) {
			if a.p.Addr() == gw {
				c.add(rp+".via", "gateway %s is this node's own address", gw)
			}
			return
		}
	}
	if !brokenAddr {
		c.add(rp+".via", "gateway %s is not reachable: it is inside no address prefix of any link", gw)
	}
}

var bondModes = []string{"balance-rr", "active-backup", "balance-xor", "broadcast", "802.3ad", "balance-tlb", "balance-alb"}
var hashPolicies = []string{"layer2", "layer3+4", "layer2+3", "encap2+3", "encap3+4", "vlan+srcmac"}

// The bonding driver ignores these parameters in other modes; saying so
// beats a bond that silently balances differently than configured.
var (
	hashPolicyModes = []string{"balance-xor", "802.3ad", "balance-tlb"}
	primaryModes    = []string{"active-backup", "balance-tlb", "balance-alb"}
)

func (c *checker) bond(p string, b Bond, n *Network, kinds, members map[string]string, ifaces map[string]int, ifaceNames []string) {
	if len(b.Interfaces) == 0 {
		c.add(p+".interfaces", "a bond needs at least one member interface")
	}
	for j, m := range b.Interfaces {
		mp := index(p+".interfaces", j)
		if kinds[m] != "interface" {
			c.add(mp, "member %q is not an interface of this config%s", m, didYouMean(m, ifaceNames))
			continue
		}
		if first, dup := members[m]; dup {
			c.add(mp, "interface %q is already a member of %s", m, first)
			continue
		}
		members[m] = p
		// The entry kinds took m from; a duplicate name is reported apart.
		if i, ok := ifaces[m]; ok {
			if in := n.Interfaces[i]; len(in.Addresses) > 0 || len(in.Routes) > 0 || in.DHCP4 || in.DHCP6 {
				c.add(mp, "member %q has addresses, routes or DHCP of its own (%s); put them on the bond", m, index("network.interfaces", i))
			}
		}
	}
	bp := b.Parameters
	if bp.Mode != "" && !slices.Contains(bondModes, bp.Mode) {
		c.add(p+".parameters.mode", "unknown bond mode %q; must be one of %s%s", bp.Mode, strings.Join(bondModes, ", "), didYouMean(bp.Mode, bondModes))
	}
	if bp.MIIMonitorInterval < 0 {
		c.add(p+".parameters.miiMonitorInterval", "must not be negative")
	}
	if bp.LACPRate != "" {
		if bp.LACPRate != "slow" && bp.LACPRate != "fast" {
			c.add(p+".parameters.lacpRate", "lacpRate must be slow or fast")
		} else if bp.Mode != "802.3ad" {
			c.add(p+".parameters.lacpRate", "lacpRate only applies to mode 802.3ad")
		}
	}
	mode := cmp.Or(bp.Mode, "balance-rr") // the kernel's default
	if bp.TransmitHashPolicy != "" {
		if !slices.Contains(hashPolicies, bp.TransmitHashPolicy) {
			c.add(p+".parameters.transmitHashPolicy", "unknown transmit hash policy %q; must be one of %s", bp.TransmitHashPolicy, strings.Join(hashPolicies, ", "))
		} else if !slices.Contains(hashPolicyModes, mode) {
			c.add(p+".parameters.transmitHashPolicy", "transmitHashPolicy only applies to modes %s, not %s", strings.Join(hashPolicyModes, ", "), mode)
		}
	}
	if bp.Primary != "" {
		if !slices.Contains(b.Interfaces, bp.Primary) {
			c.add(p+".parameters.primary", "primary %q is not a member of the bond", bp.Primary)
		} else if !slices.Contains(primaryModes, mode) {
			c.add(p+".parameters.primary", "primary only applies to modes %s, not %s", strings.Join(primaryModes, ", "), mode)
		}
	}
}

func (c *checker) nameservers(ns Nameservers, p string) {
	for i, a := range ns.Addresses {
		if ip, err := netip.ParseAddr(a); err != nil || ip.IsUnspecified() {
			c.add(index(p+".addresses", i), "invalid nameserver address %q: expected an IP address", a)
		}
	}
	for i, s := range ns.Search {
		if msg := checkDNSName(strings.TrimSuffix(s, ".")); msg != "" {
			c.add(index(p+".search", i), "invalid search domain: %s", msg)
		}
	}
}

var podNetworkBackends = []string{string(PodNetworkHostGW), string(PodNetworkVXLAN)}

var backends = []string{string(BackendAuto), string(BackendFirewalld), string(BackendNftables), string(BackendNone)}

var portRE = regexp.MustCompile(`^([0-9]+)(?:-([0-9]+))?/([a-z]+)$`)

// ParsePort splits a firewall port "N/proto" or "N-M/proto".
func ParsePort(s string) (from, to int, proto string, err error) {
	m := portRE.FindStringSubmatch(s)
	if m == nil {
		return 0, 0, "", fmt.Errorf("port %q must be N/proto or N-M/proto, e.g. 8080/tcp or 30000-32767/tcp", s)
	}
	from, err1 := strconv.Atoi(m[1])
	to = from
	var err2 error
	if m[2] != "" {
		to, err2 = strconv.Atoi(m[2])
	}
	switch {
	case err1 != nil || err2 != nil || from < 1 || from > 65535 || to < 1 || to > 65535:
		return 0, 0, "", fmt.Errorf("port %q is out of range (1-65535)", s)
	case from > to:
		return 0, 0, "", fmt.Errorf("port range %q is reversed (%d > %d)", s, from, to)
	}
	switch m[3] {
	case "tcp", "udp", "sctp":
	default:
		return 0, 0, "", fmt.Errorf("protocol %q in %q must be tcp, udp or sctp", m[3], s)
	}
	return from, to, m[3], nil
}

func (c *checker) firewall(cfg *MachineConfig) {
	fw := cfg.Firewall
	if fw.Backend != "" && !slices.Contains(backends, string(fw.Backend)) {
		c.add("firewall.backend", "unknown backend %q; must be one of auto, firewalld, nftables, none%s", fw.Backend, didYouMean(string(fw.Backend), backends))
	}
	for i, p := range fw.Ports {
		if _, _, _, err := ParsePort(p); err != nil {
			c.add(index("firewall.ports", i), "%s", err)
		}
	}
	if fw.SSHPort != nil && (*fw.SSHPort < 0 || *fw.SSHPort > 65535) {
		c.add("firewall.sshPort", "port %d is out of range (0 closes it, else 1-65535)", *fw.SSHPort)
	}
	if fw.SSHPort != nil && *fw.SSHPort == 0 && cfg.SSHEnabled() {
		c.add("firewall.sshPort", "sshPort 0 closes SSH, but users have sshAuthorizedKeys: remove the keys or the sshPort")
	}
	for i, s := range fw.Sources {
		if _, msg := parseCIDR(s); msg != "" {
			c.add(index("firewall.sources", i), "%s", msg)
		}
	}
	var known []string
	isLink := map[string]bool{}
	for _, l := range cfg.Network.Links() {
		known = append(known, l.Name)
		isLink[l.Name] = true
	}
	for i, name := range fw.Interfaces {
		p := index("firewall.interfaces", i)
		if msg := checkIfname(name); msg != "" {
			c.add(p, "%s", msg)
			continue
		}
		if len(known) == 0 {
			continue // links configured outside kubeboot
		}
		if !isLink[name] {
			c.add(p, "interface %q is not a link of the network section%s", name, didYouMean(name, known))
		}
	}
	if fw.Zone != "" && (fw.Backend == BackendNftables || fw.Backend == BackendNone) {
		c.add("firewall.zone", "zone is a firewalld setting; backend %s does not use it", fw.Backend)
	}
	if fw.Zone != "" && !zoneRE.MatchString(fw.Zone) {
		c.add("firewall.zone", "zone %q is not a firewalld zone name: letters, digits, '-' or '_', at most 17 characters", fw.Zone)
	}
}

// zoneRE is a firewalld zone name (firewalld caps them at 17 characters).
var zoneRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,17}$`)

var sysctlRE = regexp.MustCompile(`^[a-z0-9_]+([./][A-Za-z0-9_@:+-]+)+$`)

// moduleRE is a kernel module name as modprobe takes it: letters, digits,
// '_' and '-' (the same to modprobe), at most 55 bytes (the kernel's
// MODULE_NAME_LEN less its NUL), never starting with '-', which modprobe
// would read as an option ("--version", "-r").
var moduleRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_-]{0,54}$`)

func (c *checker) system(cfg *MachineConfig) {
	s := &cfg.System
	required := cfg.RequiredSysctls()
	for _, k := range keys(s.Sysctls) {
		p := mapKey("system.sysctls", k)
		if !sysctlRE.MatchString(k) || strings.Contains(k, "..") || strings.Contains(k, "/../") {
			c.addKey(p, "invalid sysctl key %q: expected dotted names like net.ipv4.ip_forward", k)
		}
		v := s.Sysctls[k]
		if v == "" || strings.ContainsAny(v, "\n\r") {
			c.add(p, "sysctl value must be one non-empty line")
			continue
		}
		for _, r := range required {
			if r.Key == k && NormalizeSysctl(v) != r.Value {
				c.add(p, "%q conflicts with the %q Kubernetes needs on every node; remove it", v, r.Value)
			}
		}
	}
	for i, m := range s.Modules {
		if !moduleRE.MatchString(m) {
			c.add(index("system.modules", i), "invalid kernel module name %q: expected letters, digits, '_' or '-', not starting with '-', at most 55 characters", m)
		}
	}
}

var (
	versionRE     = regexp.MustCompile(`^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$`)
	tokenRE       = regexp.MustCompile(`^[a-z0-9]{6}\.[a-z0-9]{16}$`)
	caHashRE      = regexp.MustCompile(`^sha256:[0-9a-fA-F]{64}$`)
	certKeyRE     = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)
	labelNameRE   = regexp.MustCompile(`^([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]$`)
	subdomainRE   = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	taintEffects  = []string{"NoSchedule", "PreferNoSchedule", "NoExecute"}
	patchKinds    = []string{"InitConfiguration", "ClusterConfiguration", "JoinConfiguration", "KubeletConfiguration", "KubeProxyConfiguration"}
	minMinor      = 31 // kubeadm config v1beta4 needs Kubernetes 1.31
	kubeletLabels = []string{"kubelet.kubernetes.io/", "node.kubernetes.io/"}
	wellKnownLbls = []string{"kubernetes.io/hostname", "kubernetes.io/arch", "kubernetes.io/os",
		"topology.kubernetes.io/region", "topology.kubernetes.io/zone", "node.kubernetes.io/instance-type"}
)

// checkQualifiedName checks a label or taint key: [prefix/]name.
func checkQualifiedName(k string) string {
	prefix, name, hasPrefix := strings.Cut(k, "/")
	if !hasPrefix {
		name, prefix = prefix, ""
	}
	if hasPrefix && (prefix == "" || len(prefix) > 253 || !subdomainRE.MatchString(prefix)) {
		return fmt.Sprintf("key %q has an invalid prefix: it must be a lower-case DNS subdomain", k)
	}
	if len(name) > 63 || !labelNameRE.MatchString(name) {
		return fmt.Sprintf("key %q: the name part must be 1-63 characters of letters, digits, '-', '_' or '.', starting and ending with a letter or digit", k)
	}
	return ""
}

func checkLabelValue(v string) bool {
	return v == "" || len(v) <= 63 && labelNameRE.MatchString(v)
}

// kubeletRefuses reports whether the kubelet refuses to set this label on
// its own node (NodeRestriction: kubernetes.io and k8s.io prefixes are
// reserved except for the kubelet's own namespaces and well-known labels).
func kubeletRefuses(k string) bool {
	prefix, _, ok := strings.Cut(k, "/")
	if !ok {
		return false
	}
	reserved := prefix == "kubernetes.io" || prefix == "k8s.io" ||
		strings.HasSuffix(prefix, ".kubernetes.io") || strings.HasSuffix(prefix, ".k8s.io")
	if !reserved || slices.Contains(wellKnownLbls, k) {
		return false
	}
	for _, allowed := range kubeletLabels {
		if strings.HasPrefix(k, allowed) {
			return false
		}
	}
	return true
}

// splitCIDRs parses a subnet that may be dual-stack ("v4,v6").
func splitCIDRs(s string) ([]netip.Prefix, string) {
	parts := strings.Split(s, ",")
	if len(parts) > 2 {
		return nil, fmt.Sprintf("at most two CIDRs (one IPv4, one IPv6), found %d", len(parts))
	}
	var out []netip.Prefix
	for _, p := range parts {
		pfx, msg := parseCIDR(strings.TrimSpace(p))
		if msg != "" {
			return nil, msg
		}
		out = append(out, pfx)
	}
	if len(out) == 2 && out[0].Addr().Is4() == out[1].Addr().Is4() {
		return nil, "a dual-stack value needs one IPv4 and one IPv6 CIDR"
	}
	return out, ""
}

func (c *checker) kubernetes(cfg *MachineConfig) {
	k := &cfg.Kubernetes
	switch m := versionRE.FindStringSubmatch(k.Version); {
	case k.Version == "":
		c.add("kubernetes.version", "version is required, e.g. v1.37.2 (the kubeadm baked into the image)")
	case m == nil:
		c.add("kubernetes.version", "version %q must look like vMAJOR.MINOR.PATCH, e.g. v1.37.2", k.Version)
	default:
		major, _ := strconv.Atoi(m[1])
		minor, _ := strconv.Atoi(m[2])
		if major != 1 || minor < minMinor {
			c.add("kubernetes.version", "version %s is too old: kubeboot writes kubeadm v1beta4 configs, which need v1.%d or later", k.Version, minMinor)
		}
	}
	if k.ControlPlaneEndpoint == "" {
		c.add("kubernetes.controlPlaneEndpoint", "controlPlaneEndpoint is required: host:port of the API server, e.g. controller.home.local:6443")
	} else if msg := checkEndpoint(k.ControlPlaneEndpoint); msg != "" {
		c.add("kubernetes.controlPlaneEndpoint", "%s", msg)
	}

	var nodeAddrs, nodeNets []netip.Prefix
	hasDHCP := false
	for _, l := range cfg.Network.Links() {
		hasDHCP = hasDHCP || l.DHCP4 || l.DHCP6
		for _, a := range l.Addresses {
			if p, msg := parseAddress(a); msg == "" {
				nodeAddrs = append(nodeAddrs, p)
				if !slices.Contains(nodeNets, p.Masked()) {
					nodeNets = append(nodeNets, p.Masked())
				}
			}
		}
	}
	if a := k.AdvertiseAddress; a != "" {
		ip, err := netip.ParseAddr(a)
		switch {
		case err != nil || ip.Zone() != "":
			c.add("kubernetes.advertiseAddress", "invalid IP address %q", a)
		case !hasDHCP && len(nodeAddrs) > 0 && !slices.ContainsFunc(nodeAddrs, func(p netip.Prefix) bool { return p.Addr() == ip }):
			c.add("kubernetes.advertiseAddress", "%s is not a static address of this node", ip)
		}
	}

	subnets := map[string][]netip.Prefix{}
	for _, s := range []struct{ field, value string }{{"podSubnet", k.PodSubnet}, {"serviceSubnet", k.ServiceSubnet}} {
		if s.value == "" {
			continue
		}
		p := "kubernetes." + s.field
		pfxs, msg := splitCIDRs(s.value)
		if msg != "" {
			c.add(p, "%s", msg)
			continue
		}
		subnets[s.field] = pfxs
		for _, pfx := range pfxs {
			for _, a := range nodeNets {
				if pfx.Overlaps(a) {
					c.add(p, "%s %s overlaps the node network %s; choose a range no node uses", s.field, pfx, a)
				}
			}
			if s.field == "serviceSubnet" && pfx.Addr().BitLen()-pfx.Bits() > 20 {
				c.add(p, "serviceSubnet %s is too large: kubeadm allows at most 2^20 addresses (/12 for IPv4, /108 for IPv6)", pfx)
			}
		}
	}
	for _, a := range subnets["podSubnet"] {
		for _, b := range subnets["serviceSubnet"] {
			if a.Overlaps(b) {
				c.add("kubernetes.podSubnet", "podSubnet %s overlaps serviceSubnet %s", a, b)
			}
		}
		// The firewall stage trusts the pod subnet as a source of its own;
		// firewalld cannot tell which of two overlapping sources wins.
		for i, s := range cfg.Firewall.Sources {
			if b, msg := parseCIDR(s); msg == "" && a.Overlaps(b) {
				c.add(index("firewall.sources", i), "%s overlaps kubernetes.podSubnet %s; pod traffic is always accepted, list only sources outside it", s, a)
			}
		}
	}
	if b := k.PodNetwork.Backend; b != "" && !slices.Contains(podNetworkBackends, string(b)) {
		c.add("kubernetes.podNetwork.backend", "unknown backend %q; must be host-gw (nodes on one layer-2 network) or vxlan (routed between nodes)%s", b, didYouMean(string(b), podNetworkBackends))
	}
	if msg := checkDNSName(k.DNSDomain); k.DNSDomain != "" && msg != "" {
		c.add("kubernetes.dnsDomain", "%s", msg)
	}
	// A node name taken from the hostname was checked as the hostname.
	if k.NodeName != "" && k.NodeName != cfg.Hostname && (len(k.NodeName) > 253 || !subdomainRE.MatchString(k.NodeName)) {
		c.add("kubernetes.nodeName", "node name %q must be a lower-case RFC 1123 subdomain", k.NodeName)
	}
	for _, key := range keys(k.NodeLabels) {
		p := mapKey("kubernetes.nodeLabels", key)
		if msg := checkQualifiedName(key); msg != "" {
			c.addKey(p, "invalid label %s", msg)
		} else if kubeletRefuses(key) {
			c.addKey(p, "the kubelet refuses to set label %q on its node (kubernetes.io and k8s.io prefixes are reserved; use node.kubernetes.io/ or your own prefix)", key)
		}
		if !checkLabelValue(k.NodeLabels[key]) {
			c.add(p, "invalid label value: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit")
		}
	}
	seenTaints := map[string]string{}
	for i, t := range k.NodeTaints {
		p := index("kubernetes.nodeTaints", i)
		if t.Key == "" {
			c.add(p+".key", "taint key is required")
		} else if msg := checkQualifiedName(t.Key); msg != "" {
			c.add(p+".key", "invalid taint %s", msg)
		}
		if !checkLabelValue(t.Value) {
			c.add(p+".value", "invalid taint value: at most 63 letters, digits, '-', '_' or '.'")
		}
		if !slices.Contains(taintEffects, t.Effect) {
			c.add(p+".effect", "taint effect %q must be one of NoSchedule, PreferNoSchedule, NoExecute%s", t.Effect, didYouMean(t.Effect, taintEffects))
		}
		id := t.Key + ":" + t.Effect
		if first, dup := seenTaints[id]; dup {
			c.add(p, "duplicate taint %s (also %s)", id, first)
		}
		seenTaints[id] = p
	}
	for i, san := range k.CertSANs {
		if _, err := netip.ParseAddr(san); err == nil {
			continue
		}
		if msg := checkDNSName(strings.TrimPrefix(san, "*.")); msg != "" {
			c.add(index("kubernetes.certSANs", i), "certificate SAN must be an IP address or DNS name: %s", msg)
		}
	}
	c.credentials(cfg.Role, &k.Credentials)
	for i, p := range k.KubeadmPatches {
		pp := index("kubernetes.kubeadmPatches", i)
		if !slices.Contains(patchKinds, p.Kind) {
			c.add(pp+".kind", "kind %q must be one of %s%s", p.Kind, strings.Join(patchKinds, ", "), didYouMean(p.Kind, patchKinds))
		} else if cfg.Role == RoleInit && p.Kind == "JoinConfiguration" {
			c.add(pp+".kind", "JoinConfiguration is not generated on an init node")
		} else if (cfg.Role == RoleControlPlane || cfg.Role == RoleWorker) && (p.Kind == "InitConfiguration" || p.Kind == "ClusterConfiguration") {
			c.add(pp+".kind", "%s is only generated on the init node", p.Kind)
		} else if (cfg.Role == RoleControlPlane || cfg.Role == RoleWorker) && p.Kind == "KubeProxyConfiguration" {
			c.add(pp+".kind", "KubeProxyConfiguration is cluster-wide: kube-proxy reads it from the ConfigMap the init node creates, so patch it in the init node's config")
		}
		if len(p.Patch) == 0 {
			c.add(pp+".patch", "patch is required: a mapping merged into the %s document", p.Kind)
		}
		for _, f := range []string{"apiVersion", "kind"} {
			if _, ok := p.Patch[f]; ok {
				c.add(pp+".patch."+f, "%s is set by kubeboot and cannot be patched", f)
			}
		}
	}
	c.preflightErrors(k.IgnorePreflightErrors)
	if k.AllowSchedulingOnControlPlane {
		if !cfg.Role.IsControlPlane() {
			c.add("kubernetes.allowSchedulingOnControlPlane", "only applies to init and control-plane nodes; a %s node has no control-plane taint", cfg.Role)
		}
		for i, t := range k.NodeTaints {
			if t.Key == ControlPlaneTaintKey {
				c.add(index("kubernetes.nodeTaints", i)+".key", "the control-plane taint contradicts allowSchedulingOnControlPlane: true; remove one of them")
			}
		}
	}
}

// ControlPlaneTaintKey is the key of the taint kubeadm puts on control-plane
// nodes (with effect NoSchedule).
const ControlPlaneTaintKey = "node-role.kubernetes.io/control-plane"

// Names of kubeadm's preflight checks (cmd/kubeadm/app/preflight), and the
// prefixes of the checks whose names carry a port, path or service.
var (
	preflightChecks = []string{"CRI", "ContainerRuntimeVersion", "ExternalEtcdClientCertificates", "ExternalEtcdVersion",
		"Firewalld", "HTTPProxy", "HTTPProxyCIDR", "Hostname", "ImagePull", "IsPrivilegedUser", "KubeletVersion",
		"KubernetesVersion", "Mem", "NumCPU", "Swap", "SystemVerification"}
	preflightFamilies = []string{"DirAvailable-", "FileAvailable-", "FileContent-", "FileExisting-", "Port-", "Service-"}
	preflightSuffixRE = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
)

// preflightErrors checks kubeadm preflight check names. kubeadm itself
// accepts any string, so a typo would only show at boot as the very error
// it was meant to ignore.
func (c *checker) preflightErrors(names []string) {
	seen := map[string]string{}
	for i, n := range names {
		p := index("kubernetes.ignorePreflightErrors", i)
		lower := strings.ToLower(n)
		if first, dup := seen[lower]; dup {
			c.add(p, "%q is listed twice (also %s; kubeadm ignores case)", n, first)
			continue
		}
		seen[lower] = p
		switch {
		case lower == "all":
			c.add(p, `"all" would turn every preflight error into a warning, a missing container runtime or an active swap included; list the checks to ignore by name, e.g. NumCPU or Mem`)
		case knownPreflightCheck(n):
		case didYouMean(n, preflightChecks) != "":
			c.add(p, "unknown kubeadm preflight check %q%s", n, didYouMean(n, preflightChecks))
		default:
			c.add(p, "unknown kubeadm preflight check %q: use the NAME kubeadm prints as [ERROR NAME] or [WARNING NAME], e.g. NumCPU, Mem, Swap, Port-6443 or FileContent--proc-sys-net-ipv4-ip_forward", n)
		}
	}
}

func knownPreflightCheck(n string) bool {
	for _, name := range preflightChecks {
		if strings.EqualFold(n, name) {
			return true
		}
	}
	for _, f := range preflightFamilies {
		if len(n) <= len(f) || !strings.EqualFold(n[:len(f)], f) || !preflightSuffixRE.MatchString(n[len(f):]) {
			continue
		}
		if f != "Port-" {
			return true
		}
		port, err := strconv.Atoi(n[len(f):])
		return err == nil && port >= 1 && port <= 65535
	}
	return false
}

// checkEndpoint checks host:port (IPv6 hosts in brackets).
func checkEndpoint(e string) string {
	host, port, err := net.SplitHostPort(e)
	if err != nil {
		return fmt.Sprintf("controlPlaneEndpoint %q must be host:port, e.g. controller.home.local:6443", e)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Sprintf("controlPlaneEndpoint port %q is out of range (1-65535)", port)
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return ""
	}
	if msg := checkDNSName(host); msg != "" {
		return "controlPlaneEndpoint host: " + msg
	}
	return ""
}

// credentials checks the join credentials for the role. Messages never
// contain the values. The cluster secrets count from wherever they come:
// inline (secrets) or read from secretsBundle by ParseWithFiles; a bundle
// path that was not read is trusted to hold a full bundle here and is
// checked where it is read.
func (c *checker) credentials(role Role, cr *Credentials) {
	const p = "kubernetes.credentials"
	if cr.Token != "" && !tokenRE.MatchString(cr.Token.Reveal()) {
		c.add(p+".token", `token is not a bootstrap token: expected 6 and 16 characters of [a-z0-9] joined by ".", e.g. abcdef.0123456789abcdef (the value is not shown)`)
	}
	for i, h := range cr.CACertHashes {
		if !caHashRE.MatchString(h) {
			c.add(index(p+".caCertHashes", i), `expected "sha256:" followed by 64 hex digits`)
		}
	}
	if cr.CertificateKey != "" && !certKeyRE.MatchString(cr.CertificateKey.Reveal()) {
		c.add(p+".certificateKey", "certificate key must be 64 hex digits (a 32-byte AES key, as from kubeadm certs certificate-key; the value is not shown)")
	}
	if cr.TokenTTL != "" {
		if d, err := time.ParseDuration(cr.TokenTTL); err != nil || d <= 0 {
			c.add(p+".tokenTTL", "tokenTTL %q must be a positive duration such as 24h or 90m; leave it out for a token that never expires", cr.TokenTTL)
		} else if role != RoleInit && role != "" {
			c.add(p+".tokenTTL", "tokenTTL is the lifetime of the token the init node creates; a %s node does not create one", role)
		}
	}
	if b := cr.SecretsBundle; b != "" && (strings.ContainsAny(b, "\x00\n") || path.Clean(b) == "/") {
		c.add(p+".secretsBundle", "secretsBundle must be the path of a secrets bundle file")
	}
	if cr.Secrets != nil {
		c.clusterSecrets(cr.Secrets, p+".secrets")
		if cr.SecretsBundle != "" {
			c.addKey(p+".secrets", "give the cluster secrets inline (secrets) or as a file (secretsBundle), not both")
		}
	}
	// misfit reports a role problem at the field the secrets came from:
	// the secrets: key, or the secretsBundle path.
	sec := cr.ClusterSecrets()
	misfit := func(format string, args ...any) {
		if cr.Secrets != nil {
			c.addKey(p+".secrets", format, args...)
		} else {
			c.add(p+".secretsBundle", format, args...)
		}
	}
	hasSecrets := sec != nil || cr.SecretsBundle != ""
	fullSecrets := sec != nil && sec.CA.Key != "" || sec == nil && cr.SecretsBundle != ""
	switch role {
	case RoleInit:
		if len(cr.CACertHashes) > 0 {
			c.add(p+".caCertHashes", "caCertHashes are for joining nodes; the init node installs the CA of its secrets (or kubeadm makes one)")
		}
		if hasSecrets && !fullSecrets {
			misfit("the init node installs the cluster CAs, so it needs their keys; these secrets are a worker's (CA certificate and token only)")
		}
	case RoleControlPlane, RoleWorker:
		if cr.Token == "" && !hasSecrets {
			c.add(p+".token", "a %s node needs the bootstrap token of the cluster to join: token, secrets or secretsBundle", role)
		}
		if role == RoleControlPlane && !fullSecrets {
			if hasSecrets {
				misfit("a control-plane node installs the cluster CAs, so it needs their keys; these secrets are a worker's (CA certificate and token only)")
			} else {
				c.add(p+".secretsBundle", "a control-plane node needs the cluster CAs: secretsBundle or secrets (kubeboot config gen writes them)")
			}
		}
		if role == RoleWorker && !hasSecrets && len(cr.CACertHashes) == 0 {
			c.add(p+".caCertHashes", "a worker node needs caCertHashes or secretsBundle to trust the cluster CA")
		}
		if role == RoleWorker && cr.CertificateKey != "" {
			c.add(p+".certificateKey", "certificateKey is only used by control-plane nodes; remove it from a worker")
		}
		if role == RoleWorker && cr.Secrets != nil {
			c.workerHoldsNoKey(cr.Secrets, p+".secrets")
		}
	}
}

// workerHoldsNoKey reports every private key in a worker's inline secrets.
func (c *checker) workerHoldsNoKey(s *ClusterSecrets, base string) {
	for _, f := range []struct {
		path string
		set  bool
	}{
		{base + ".certificateKey", s.CertificateKey != ""},
		{base + ".ca.key", s.CA.Key != ""},
		{base + ".frontProxyCA.key", s.FrontProxyCA.Key != ""},
		{base + ".etcdCA.key", s.EtcdCA.Key != ""},
		{base + ".serviceAccount.key", s.ServiceAccount.Key != ""},
	} {
		if f.set {
			c.add(f.path, "a worker config never carries a private key; give a worker token and caCertHashes (kubeboot config gen --role worker) or the CA certificate only")
		}
	}
}

// systemVar are the directories under /var that the node's own software
// keeps: a home there would be chowned to its user and made 0700.
var systemVar = []string{"/var/lib/kubeboot", "/var/lib/kubelet", "/var/lib/etcd", "/var/lib/containerd",
	"/var/lib/cni", "/var/lib/dpkg", "/var/lib/apt", "/var/lib/systemd", "/var/log", "/var/cache", "/var/spool", "/var/roothome"}

// checkHome keeps a (clean, absolute) home where a user's directory can
// be: the users stage makes an existing home 0700 and its user's, so a
// home of /etc would hand the user /etc. Root's is /root; another user's
// is below /home (a link to /var/home) or a directory of its own under
// /var, such as /var/lib/ops.
func checkHome(u User) string {
	if u.Name == "root" {
		if u.Home != "/root" {
			return fmt.Sprintf("root's home is /root, not %q", u.Home)
		}
		return ""
	}
	under := func(dir string) bool { return strings.HasPrefix(u.Home, dir+"/") }
	if under("/home") || under("/var/home") {
		return ""
	}
	if !under("/var") || strings.Count(u.Home, "/") < 3 || slices.ContainsFunc(systemVar, func(d string) bool { return u.Home == d || under(d) }) {
		return fmt.Sprintf("home %q must be below /home, or a directory of its own under /var (e.g. /var/lib/ops) outside what the system keeps there; the users stage makes a home 0700 and its user's", u.Home)
	}
	return ""
}

var userRE = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,30}\$?$`)

func (c *checker) users(users []User) {
	names := map[string]string{}
	uids := map[int]string{}
	for i, u := range users {
		p := index("users", i)
		if !userRE.MatchString(u.Name) {
			c.add(p+".name", "user name %q must be a POSIX name: lower-case letters, digits, '_' or '-', starting with a letter or '_', at most 32 characters", u.Name)
		} else if first, dup := names[u.Name]; dup {
			c.add(p+".name", "duplicate user %q (also %s)", u.Name, first)
		}
		names[u.Name] = p
		if u.UID != nil {
			uid := *u.UID
			switch {
			case u.Name == "root" && uid != 0:
				c.add(p+".uid", "root has uid 0")
			case u.Name != "root" && (uid < 1 || uid > 65533):
				c.add(p+".uid", "uid %d is out of range for a user other than root (1-65533; 0 is root, 65534 is nobody)", uid)
			default:
				if first, dup := uids[uid]; dup {
					c.add(p+".uid", "uid %d is already used by %s", uid, first)
				}
				uids[uid] = p
			}
		}
		if u.Home == "" {
			continue // no name to default it from
		}
		if !path.IsAbs(u.Home) || path.Clean(u.Home) != u.Home || u.Home == "/" {
			c.add(p+".home", "home %q must be a clean absolute path other than /", u.Home)
		} else if msg := checkHome(u); msg != "" {
			c.add(p+".home", "%s", msg)
		}
		c.authorizedKeys(u, p+".sshAuthorizedKeys")
	}
}
