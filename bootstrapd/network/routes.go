package network

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Route protocols as `ip route` names them: connected prefix routes look
// like the kernel's own, configured ones are "static", lease ones "dhcp".
const (
	protoKernel = unix.RTPROT_KERNEL
	protoStatic = unix.RTPROT_STATIC
	protoDHCP   = unix.RTPROT_DHCP
)

// wantRoute is a route the stage keeps in the main table.
type wantRoute struct {
	Link   string
	Dst    netip.Prefix
	Via    netip.Addr // invalid when on-link
	Src    netip.Addr // IPv4 prefix routes only, as the kernel sets it
	Metric int
	Proto  int
}

func (w wantRoute) owned() ownedRoute {
	o := ownedRoute{Link: w.Link, Dst: w.Dst.String(), Metric: w.Metric, Proto: w.Proto}
	if w.Via.IsValid() {
		o.Via = w.Via.String()
	}
	if w.Src.IsValid() {
		o.Src = w.Src.String()
	}
	return o
}

func (w wantRoute) scope() netlink.Scope {
	if w.Dst.Addr().Is4() && !w.Via.IsValid() {
		return netlink.SCOPE_LINK
	}
	return netlink.SCOPE_UNIVERSE // IPv6 routes are always universe
}

// String reads like `ip route`.
func (w wantRoute) String() string { return describeRoute(w.owned(), w.scope()) }

func describeRoute(o ownedRoute, scope netlink.Scope) string {
	dst := o.Dst
	if dst == "0.0.0.0/0" || dst == "::/0" {
		dst = "default"
	}
	parts := []string{dst}
	if o.Via != "" {
		parts = append(parts, "via", o.Via)
	}
	parts = append(parts, "proto", protoName(o.Proto))
	if scope == netlink.SCOPE_LINK {
		parts = append(parts, "scope link")
	}
	if o.Src != "" {
		parts = append(parts, "src", o.Src)
	}
	parts = append(parts, "metric", fmt.Sprint(o.Metric))
	return strings.Join(parts, " ")
}

func protoName(p int) string {
	switch p {
	case protoKernel:
		return "kernel"
	case protoStatic:
		return "static"
	case protoDHCP:
		return "dhcp"
	case unix.RTPROT_BOOT:
		return "boot"
	case unix.RTPROT_RA:
		return "ra"
	}
	return fmt.Sprint(p)
}

// wantRoutes lists the prefix routes of every wanted address, the
// configured routes and the lease routers' default routes.
func (r *run) wantRoutes() []wantRoute {
	var out []wantRoute
	for _, s := range r.specs {
		if r.links[s.Name] == nil && r.absent[s.Name] {
			continue
		}
		linkMetric := 0
		if s.IP.RouteMetric != nil {
			linkMetric = *s.IP.RouteMetric
		}
		for _, a := range r.wantAddrs(s) {
			if a.Bits() == a.Addr().BitLen() {
				continue // a host address has no connected prefix
			}
			w := wantRoute{Link: s.Name, Dst: a.Masked(), Proto: protoKernel,
				Metric: kernelMetric(a.Addr().Is4(), linkMetric, true)}
			if a.Addr().Is4() {
				w.Src = a.Addr()
			}
			// Several addresses in one subnet share one connected route,
			// sourced from the first, as the kernel does with its own.
			if !slices.ContainsFunc(out, func(o wantRoute) bool { return o.Dst == w.Dst && o.Metric == w.Metric }) {
				out = append(out, w)
			}
		}
		for _, rt := range s.Routes {
			out = append(out, wantRoute{Link: s.Name, Dst: rt.Dst, Via: rt.Via, Metric: rt.Metric, Proto: protoStatic})
		}
		if l := r.leaseOf(s); l != nil && l.Router != "" {
			if gw, err := netip.ParseAddr(l.Router); err == nil {
				out = append(out, wantRoute{Link: s.Name, Dst: netip.MustParsePrefix("0.0.0.0/0"), Via: gw,
					Metric: linkMetric, Proto: protoDHCP})
			}
		}
	}
	return out
}

// kernelRoute is a main-table route as read back, in comparable form.
type kernelRoute struct {
	r     netlink.Route
	dst   netip.Prefix
	owned ownedRoute // with the link's current name, "" for unknown links
}

func (r *run) kernelRoutes() ([]kernelRoute, error) {
	filter := &netlink.Route{Table: unix.RT_TABLE_MAIN}
	routes, err := retryDump(func() ([]netlink.Route, error) {
		return r.h.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	names := map[int]string{}
	for name, l := range r.links {
		if l != nil {
			names[l.Attrs().Index] = name
		}
	}
	var out []kernelRoute
	for _, rt := range routes {
		if rt.Type != unix.RTN_UNICAST || len(rt.MultiPath) > 0 {
			continue
		}
		dst, o := ownedOf(rt, names[rt.LinkIndex])
		out = append(out, kernelRoute{r: rt, dst: dst, owned: o})
	}
	return out, nil
}

// ownedOf is a kernel route on the link named link in comparable form.
func ownedOf(rt netlink.Route, link string) (netip.Prefix, ownedRoute) {
	dst, ok := ipNetToPrefix(rt.Dst)
	if !ok { // older kernels and netlink versions leave default routes' Dst nil
		if rt.Family == unix.AF_INET6 {
			dst = netip.MustParsePrefix("::/0")
		} else {
			dst = netip.MustParsePrefix("0.0.0.0/0")
		}
	}
	o := ownedRoute{Link: link, Dst: dst.String(), Metric: rt.Priority, Proto: int(rt.Protocol)}
	if gw := ipToAddr(rt.Gw); gw.IsValid() {
		o.Via = gw.String()
	}
	if src := ipToAddr(rt.Src); src.IsValid() {
		o.Src = src.String()
	}
	return dst, o
}

// reconcileRoutes adds or replaces wanted routes and deletes routes the
// stage added earlier on managed links that the config no longer has.
func (r *run) reconcileRoutes() error {
	have, err := r.kernelRoutes()
	if err != nil {
		return err
	}
	want := r.wantRoutes()
	wanted := map[ownedRoute]bool{}
	replaced := map[ownedRoute]bool{} // kernel routes a wanted one took the place of
	for _, w := range want {
		o := w.owned()
		wanted[o] = true
		nr := r.netlinkRoute(w)
		var same *kernelRoute // same kernel key: table, destination, metric
		for i := range have {
			if have[i].dst == w.Dst && have[i].r.Priority == w.Metric {
				same = &have[i]
			}
		}
		switch {
		case same != nil && same.owned == o && same.r.Scope == w.scope():
		case same != nil:
			replaced[same.owned] = true
			r.change(w.Link, "replace route %s (was: %s dev %s)", w, describeRoute(same.owned, same.r.Scope), orUnknown(same.owned.Link))
			if err := r.do(func() error { return r.h.RouteReplace(nr) }); err != nil {
				return fmt.Errorf("%s: replace route %s: %w", w.Link, w, err)
			}
		default:
			r.change(w.Link, "add route %s", w)
			if err := r.do(func() error { return r.h.RouteAdd(nr) }); err != nil {
				return fmt.Errorf("%s: add route %s: %w", w.Link, w, err)
			}
		}
		r.st.own(o)
	}
	managed := map[string]bool{}
	for _, s := range r.specs {
		managed[s.Name] = r.links[s.Name] != nil
	}
	for _, o := range append([]ownedRoute(nil), r.st.Routes...) {
		if wanted[o] || !managed[o.Link] {
			continue
		}
		var cur *kernelRoute
		for i := range have {
			if have[i].owned == o {
				cur = &have[i]
			}
		}
		if cur == nil || replaced[o] {
			r.st.disown(o) // gone already: with its link, or replaced above
			continue
		}
		r.change(o.Link, "remove route %s", describeRoute(o, cur.r.Scope))
		if err := r.do(func() error {
			if err := r.h.RouteDel(&cur.r); err != nil && !isGone(err) {
				return err
			}
			return nil
		}); err != nil {
			return fmt.Errorf("%s: remove route %s: %w", o.Link, describeRoute(o, cur.r.Scope), err)
		}
		r.st.disown(o)
	}
	return nil
}

func orUnknown(link string) string {
	if link == "" {
		return "(unmanaged link)"
	}
	return link
}

func (r *run) netlinkRoute(w wantRoute) *netlink.Route {
	nr := &netlink.Route{
		Dst:      &net.IPNet{IP: net.IP(w.Dst.Addr().AsSlice()), Mask: net.CIDRMask(w.Dst.Bits(), w.Dst.Addr().BitLen())},
		Priority: w.Metric,
		Protocol: netlink.RouteProtocol(w.Proto),
		Scope:    w.scope(),
		Table:    unix.RT_TABLE_MAIN,
		Type:     unix.RTN_UNICAST,
	}
	if l := r.links[w.Link]; l != nil {
		nr.LinkIndex = l.Attrs().Index
	}
	if w.Via.IsValid() {
		nr.Gw = net.IP(w.Via.AsSlice())
	}
	if w.Src.IsValid() {
		nr.Src = net.IP(w.Src.AsSlice())
	}
	return nr
}
