package verify

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"kubeboot.dev/kubeboot/bootstrapd/network"
)

// maxAddresses and maxRoutes bound what is listed.
const (
	maxAddresses = 2000
	maxRoutes    = 5000
)

func (n *node) addresses(context.Context) Section {
	s := Section{Name: "addresses", Title: "Addresses and routes (ip addr, ip route) compared with the config"}
	h, err := n.netlinkHandle()
	if err != nil {
		s.fail("netlink", "readable", err.Error())
		return s
	}
	defer h.Close()
	links, err := dump(h.LinkList)
	if err != nil {
		s.fail("the node's links", "listed", err.Error())
		return s
	}
	names := map[int]string{}
	byName := map[string]netlink.Link{}
	for _, l := range first(links, maxLinks) {
		names[l.Attrs().Index] = l.Attrs().Name
		byName[l.Attrs().Name] = l
	}
	addrs, err := dump(func() ([]netlink.Addr, error) { return h.AddrList(nil, netlink.FAMILY_ALL) })
	if err != nil {
		s.fail("the node's addresses", "listed", err.Error())
		return s
	}
	addrs = first(addrs, maxAddresses)
	held := map[string][]netip.Prefix{} // link name -> addresses
	for _, a := range addrs {
		p, ok := prefixOf(a)
		if !ok {
			continue
		}
		link := names[a.LinkIndex]
		held[link] = append(held[link], p)
		s.found("%s  %s %s scope %s%s", link, family(p), p, scopeName(a.Scope), addrFlags(a.Flags))
	}
	routes, err := dump(func() ([]netlink.Route, error) {
		return h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		s.fail("the node's routes", "listed", err.Error())
		return s
	}
	var kernel []network.KernelRoute
	for _, rt := range first(routes, maxRoutes) {
		if rt.Type != unix.RTN_UNICAST || len(rt.MultiPath) > 0 {
			continue
		}
		k := network.KernelRouteOf(rt, names[rt.LinkIndex])
		if k.Dst.Addr().Is6() && (k.Dst.Addr().IsLinkLocalUnicast() || k.Dst.Addr().IsMulticast()) {
			continue // the kernel's own fe80::/64 and ff00::/8 on every link
		}
		kernel = append(kernel, k)
		s.found("route %s", k)
	}

	exp, err := n.expectNetwork()
	if err != nil {
		s.fail("the config's addresses and routes", "known", err.Error())
	} else {
		absent := map[string]bool{}
		for _, e := range exp.Links {
			if byName[e.Name] == nil && e.Optional {
				absent[e.Name] = true
				continue
			}
			checkAddresses(&s, e, held[e.Name])
		}
		for _, r := range exp.Routes {
			if absent[r.Link] {
				continue
			}
			checkRoute(&s, r, kernel)
		}
	}
	n.podRoute(&s, kernel)
	return s
}

func checkAddresses(s *Section, e network.ExpectedLink, held []netip.Prefix) {
	have := "none"
	if len(held) > 0 {
		have = joinPrefixes(held)
	}
	for _, want := range e.Addresses {
		s.check(fmt.Sprintf("address %s on %s", want, e.Name), slices.Contains(held, want), want.String(), e.Name+" has "+have)
	}
	if e.DHCP4 && !slices.ContainsFunc(e.Addresses, func(p netip.Prefix) bool { return p.Addr().Is4() }) {
		// No current lease recorded: any IPv4 address the server gave.
		ok := slices.ContainsFunc(held, func(p netip.Prefix) bool { return p.Addr().Is4() })
		s.check(fmt.Sprintf("%s has an address from DHCP", e.Name), ok, "an IPv4 address (dhcp4)", e.Name+" has "+have)
	}
}

// checkRoute finds the expected route among the kernel's; failing, it
// shows the kernel's routes to the same destination.
func checkRoute(s *Section, r network.ExpectedRoute, kernel []network.KernelRoute) {
	name := "route " + r.String()
	var same []string
	for _, k := range kernel {
		if r.HeldBy(k) {
			s.pass(name, r.String(), k.String())
			return
		}
		if k.Dst == r.Dst {
			same = append(same, k.String())
		}
	}
	found := "no route to " + describeDst(r.Dst)
	if len(same) > 0 {
		found = strings.Join(same, "; ")
	}
	s.fail(name, r.String(), found)
}

// podRoute checks that this node's pod CIDR (its Node's spec.podCIDR) is
// routed on the pod bridge once a pod runs outside the host network: the
// CNI plugin gives the bridge the CIDR's first address, so the kernel
// routes the CIDR on it.
func (n *node) podRoute(s *Section, kernel []network.KernelRoute) {
	name := "pod CIDR of this node on " + podBridge
	if n.apiErr != nil {
		s.fail(name, "the Node's spec.podCIDR routed on "+podBridge, "the Node object: "+n.apiErr.Error())
		return
	}
	cidrs := n.podCIDRs()
	if len(cidrs) == 0 {
		s.fail(name, "the Node's spec.podCIDR routed on "+podBridge, "node "+n.o.Config.Kubernetes.NodeName+" has no spec.podCIDR (the controller manager allocates it from kubernetes.podSubnet)")
		return
	}
	pods := 0
	if n.cri != nil {
		for _, sb := range n.cri.sandboxes {
			if sb.Ready && !sb.HostNetwork {
				pods++
			}
		}
	}
	for _, c := range cidrs {
		cidr, err := netip.ParsePrefix(c)
		name := fmt.Sprintf("pod CIDR %s of this node on %s", c, podBridge)
		if err != nil {
			s.fail(name, "a CIDR", fmt.Sprintf("spec.podCIDR %q", c))
			continue
		}
		expected := fmt.Sprintf("%s dev %s", cidr.Masked(), podBridge)
		var on []string
		held := false
		for _, k := range kernel {
			if k.Dst == cidr.Masked() {
				on = append(on, k.String())
				held = held || k.Link() == podBridge
			}
		}
		found := "no route to " + cidr.Masked().String()
		if len(on) > 0 {
			found = strings.Join(on, "; ")
		}
		if pods == 0 && !held {
			s.pass(name, expected+" once a pod runs outside the host network", found+" (no such pod on this node yet)")
			continue
		}
		s.check(name, held, expected, found)
	}
}

func prefixOf(a netlink.Addr) (netip.Prefix, bool) {
	if a.IPNet == nil {
		return netip.Prefix{}, false
	}
	ip, ok := netip.AddrFromSlice(a.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := a.Mask.Size()
	return netip.PrefixFrom(ip.Unmap(), ones), true
}

func joinPrefixes(ps []netip.Prefix) string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return strings.Join(out, ", ")
}

func family(p netip.Prefix) string {
	if p.Addr().Is4() {
		return "inet"
	}
	return "inet6"
}

func describeDst(p netip.Prefix) string {
	if p.Bits() == 0 {
		return "default (" + p.String() + ")"
	}
	return p.String()
}

func scopeName(s int) string {
	switch netlink.Scope(s) {
	case netlink.SCOPE_UNIVERSE:
		return "global"
	case netlink.SCOPE_LINK:
		return "link"
	case netlink.SCOPE_HOST:
		return "host"
	}
	return fmt.Sprint(s)
}

func addrFlags(f int) string {
	var out []string
	if f&unix.IFA_F_NOPREFIXROUTE != 0 {
		out = append(out, "noprefixroute")
	}
	if f&unix.IFA_F_PERMANENT == 0 {
		out = append(out, "dynamic")
	}
	if len(out) == 0 {
		return ""
	}
	return " " + strings.Join(out, " ")
}
