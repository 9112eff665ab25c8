package network

import (
	"errors"
	"net/netip"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"kubeboot.dev/kubeboot/bootstrapd/stage"
)

// Expectation is what the stage keeps in the kernel for a config: the links
// with their addresses, and the main-table routes. `bootstrapd verify`
// compares a node against it, so the rules (which prefix routes, which
// metrics, what a DHCP lease adds) stay in this package.
type Expectation struct {
	Links  []ExpectedLink
	Routes []ExpectedRoute
}

// ExpectedLink is one link of the config.
type ExpectedLink struct {
	Name  string
	Field string // config field path, e.g. network.interfaces[0]
	Kind  string // "interface", "bond" or "vlan"
	// MAC is the match's macAddress for interfaces matched by MAC: the
	// link named Name must carry it (as its permanent address when the
	// driver reports one).
	MAC      string
	MTU      int // 0: not configured, any
	Optional bool
	DHCP4    bool
	// Master is the bond an interface is enslaved to.
	Master string
	// Addresses are the configured ones and the current DHCP lease's.
	Addresses []netip.Prefix
}

// ExpectedRoute is one route the stage keeps.
type ExpectedRoute struct {
	Link   string
	Dst    netip.Prefix
	Via    netip.Addr // invalid when on-link
	Metric int
	want   wantRoute
}

// String reads like `ip route`: "default via 172.16.0.254 dev enp1s0 proto static metric 100".
func (r ExpectedRoute) String() string { return routeText(r.want.owned(), r.want.scope()) }

// KernelRoute is a route of the kernel's main table, in the terms the
// stage compares routes in.
type KernelRoute struct {
	Dst   netip.Prefix
	owned ownedRoute
	scope netlink.Scope
}

// KernelRouteOf reads rt, whose link is named link ("" when unknown).
func KernelRouteOf(rt netlink.Route, link string) KernelRoute {
	dst, o := ownedOf(rt, link)
	return KernelRoute{Dst: dst, owned: o, scope: rt.Scope}
}

// String reads like `ip route`.
func (k KernelRoute) String() string { return routeText(k.owned, k.scope) }

// Link is the name of the route's link, "" when unknown.
func (k KernelRoute) Link() string { return k.owned.Link }

// HeldBy reports whether the kernel route k is r, as the stage judges it:
// same destination, metric, gateway, source, protocol, link and scope.
func (r ExpectedRoute) HeldBy(k KernelRoute) bool {
	return k.owned == r.want.owned() && k.scope == r.want.scope()
}

// routeText is describeRoute with the link, where `ip route` puts it.
func routeText(o ownedRoute, scope netlink.Scope) string {
	text := describeRoute(o, scope)
	if o.Link == "" {
		return text
	}
	return strings.Replace(text, " proto ", " dev "+o.Link+" proto ", 1)
}

// Expect returns what the config in env asks of the kernel, reading the
// stage's state (env.StateDir) for DHCP leases. It reads no kernel state.
func Expect(env *stage.Env) (*Expectation, error) {
	if env.Config == nil {
		return nil, errors.New("network: no machine config")
	}
	specs, err := specs(&env.Config.Network)
	if err != nil {
		return nil, err
	}
	st, err := loadState(env)
	if err != nil {
		return nil, err
	}
	r := &run{networkStage: &networkStage{now: time.Now}, env: env, st: st, specs: specs,
		links: map[string]netlink.Link{}, absent: map[string]bool{}}
	kinds := map[linkKind]string{kindInterface: "interface", kindBond: "bond", kindVLAN: "vlan"}
	e := &Expectation{}
	for _, s := range specs {
		l := ExpectedLink{Name: s.Name, Field: s.Field, Kind: kinds[s.Kind], MTU: s.IP.MTU,
			Optional: s.IP.Optional, DHCP4: s.IP.DHCP4, Master: s.Master, Addresses: r.wantAddrs(s)}
		if s.Match != nil {
			l.MAC = s.Match.MACAddress
		}
		e.Links = append(e.Links, l)
	}
	for _, w := range r.wantRoutes() {
		e.Routes = append(e.Routes, ExpectedRoute{Link: w.Link, Dst: w.Dst, Via: w.Via, Metric: w.Metric, want: w})
	}
	return e, nil
}
