package network

import (
	"fmt"
	"net/netip"
	"strings"

	"golang.org/x/sys/unix"

	"kubeboot.dev/kubeboot/machineconfig"
)

// linkKind says whether bootstrapd finds a link or creates it.
type linkKind int

const (
	kindInterface linkKind = iota // physical (or veth in tests): matched, never created
	kindVLAN
	kindBond
)

// linkSpec is one managed link of the config, with its addresses and
// routes parsed, so later steps never see strings.
type linkSpec struct {
	Name  string
	Field string // config field path, e.g. network.interfaces[0]
	Kind  linkKind
	Match *machineconfig.Match
	VLAN  *machineconfig.VLAN
	Bond  *machineconfig.Bond
	IP    machineconfig.IPConfig

	Addresses []netip.Prefix
	Routes    []routeSpec
	Master    string // bond this interface is enslaved to
}

// routeSpec is a configured route with its family default resolved.
type routeSpec struct {
	Dst    netip.Prefix
	Via    netip.Addr // invalid for on-link routes
	Metric int
}

// specs turns the network config into link specs in the order they must be
// set up: interfaces, then bonds (need their members), then VLANs (need
// their parent, which may be a bond). The config was validated by
// machineconfig (names, members, CIDRs, routes); the errors left here are
// what this stage cannot do, or a value that is not what validation let
// through, and they name the field path.
func specs(n *machineconfig.Network) ([]*linkSpec, error) {
	var out []*linkSpec
	var errs []string
	bad := func(field, format string, a ...any) {
		errs = append(errs, field+": "+fmt.Sprintf(format, a...))
	}
	byName := map[string]*linkSpec{}
	add := func(s *linkSpec) {
		byName[s.Name] = s
		out = append(out, s)
	}
	for i := range n.Interfaces {
		in := &n.Interfaces[i]
		add(&linkSpec{Name: in.Name, Field: fmt.Sprintf("network.interfaces[%d]", i), Kind: kindInterface, Match: in.Match, IP: in.IPConfig})
	}
	for i := range n.Bonds {
		b := &n.Bonds[i]
		s := &linkSpec{Name: b.Name, Field: fmt.Sprintf("network.bonds[%d]", i), Kind: kindBond, Bond: b, IP: b.IPConfig}
		add(s)
		for _, m := range b.Interfaces {
			if member, ok := byName[m]; ok {
				member.Master = b.Name
			}
		}
		if _, err := bondAttrs(b); err != nil {
			bad(s.Field+".parameters", "%v", err)
		}
	}
	for i := range n.VLANs {
		v := &n.VLANs[i]
		add(&linkSpec{Name: v.Name, Field: fmt.Sprintf("network.vlans[%d]", i), Kind: kindVLAN, VLAN: v, IP: v.IPConfig})
	}
	for _, s := range out {
		if s.IP.DHCP6 {
			bad(s.Field+".dhcp6", "DHCPv6 is not supported yet by bootstrapd's network stage; configure static IPv6 addresses instead")
		}
		for j, a := range s.IP.Addresses {
			p, err := netip.ParsePrefix(a)
			if err != nil {
				bad(fmt.Sprintf("%s.addresses[%d]", s.Field, j), "%q is not an address in CIDR form (e.g. 172.16.0.11/24)", a)
				continue
			}
			s.Addresses = append(s.Addresses, p)
		}
		for j, r := range s.IP.Routes {
			rs, err := parseRoute(r, s.IP.RouteMetric)
			if err != nil {
				bad(fmt.Sprintf("%s.routes[%d]", s.Field, j), "%v", err)
				continue
			}
			s.Routes = append(s.Routes, rs)
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("network config:\n  %s", strings.Join(errs, "\n  "))
	}
	return out, nil
}

// parseRoute resolves "default" by the gateway's family and the metric by
// the link's RouteMetric, so equal routes compare equal to the kernel's.
func parseRoute(r machineconfig.Route, linkMetric *int) (routeSpec, error) {
	var rs routeSpec
	if r.Via != "" {
		via, err := netip.ParseAddr(r.Via)
		if err != nil {
			return rs, fmt.Errorf("via %q is not an IP address", r.Via)
		}
		rs.Via = via
	}
	switch {
	case r.To != "default":
		p, err := netip.ParsePrefix(r.To)
		if err != nil {
			return rs, fmt.Errorf(`to %q is neither "default" nor a CIDR`, r.To)
		}
		rs.Dst = p
	case !rs.Via.IsValid():
		return rs, fmt.Errorf(`to "default" needs via (the gateway) to know the address family`)
	case rs.Via.Is4():
		rs.Dst = netip.MustParsePrefix("0.0.0.0/0")
	default:
		rs.Dst = netip.MustParsePrefix("::/0")
	}
	switch {
	case r.Metric != nil:
		rs.Metric = *r.Metric
	case linkMetric != nil:
		rs.Metric = *linkMetric
	}
	rs.Metric = kernelMetric(rs.Dst.Addr().Is4(), rs.Metric, false)
	return rs, nil
}

// kernelMetric is the metric the kernel stores for a route added with m:
// IPv6 turns 0 into 1024 for static routes and 256 for prefix routes.
func kernelMetric(v4 bool, m int, prefix bool) int {
	if v4 || m != 0 {
		return m
	}
	if prefix {
		return 256
	}
	return 1024
}

// family returns the netlink address family of a prefix or address.
func family(a netip.Addr) int {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}
