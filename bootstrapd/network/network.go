// Package network is bootstrapd's network stage: it makes the links,
// addresses, routes and resolv.conf of the node match the machine config,
// through netlink handles bound to the stage's network namespace.
//
// Prefix routes: addresses are added with IFA_F_NOPREFIXROUTE and the stage
// adds the connected route itself with the link's RouteMetric, so the
// kernel holds "172.16.0.0/24 dev enp1s0 proto kernel scope link src
// 172.16.0.11 metric 100" as NetworkManager left it on the reference
// machine. Routes the stage adds are recorded in network.json in its state
// directory;
// only those are ever deleted.
package network

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/machineconfig"
)

// New returns the network stage.
func New() stage.Stage {
	return &networkStage{carrierTimeout: 30 * time.Second, dhcpTimeout: 30 * time.Second, now: time.Now}
}

type networkStage struct {
	carrierTimeout time.Duration // per Apply, for all non-optional links together
	dhcpTimeout    time.Duration // per link, for the whole DISCOVER..ACK exchange
	now            func() time.Time
}

func (*networkStage) Name() string { return "network" }

// Inputs: the network section.
func (*networkStage) Inputs(cfg *machineconfig.MachineConfig) any { return cfg.Network }

// Validate checks, before the engine changes anything, what Plan checks:
// the config's network section and that its links can be found.
func (n *networkStage) Validate(ctx context.Context, env *stage.Env) error {
	_, err := n.run(ctx, env, false)
	return err
}

func (n *networkStage) Plan(ctx context.Context, env *stage.Env) ([]stage.Change, error) {
	return n.run(ctx, env, false)
}

func (n *networkStage) Apply(ctx context.Context, env *stage.Env) ([]stage.Change, error) {
	return n.run(ctx, env, true)
}

// run is Plan (apply false) and Apply in one walk, so the plan is exactly
// the list of changes Apply would make. In a plan, links that would be
// created are nil and everything on them counts as new.
type run struct {
	*networkStage
	ctx     context.Context
	env     *stage.Env
	log     *slog.Logger
	h       *netlink.Handle
	apply   bool
	st      *state
	specs   []*linkSpec
	links   map[string]netlink.Link // spec name -> kernel link, nil when absent
	created map[string]bool         // links this Apply created (and raises without a separate change)
	absent  map[string]bool         // optional links not present: skipped
	renewed map[string]bool         // links whose DHCP lease this Apply acquired
	changes []stage.Change
}

func (n *networkStage) run(ctx context.Context, env *stage.Env, apply bool) ([]stage.Change, error) {
	if env.Config == nil {
		return nil, errors.New("network: no machine config in the stage environment")
	}
	specs, err := specs(&env.Config.Network)
	if err != nil {
		return nil, err
	}
	h, err := netlink.NewHandleAt(env.NetNS)
	if err != nil {
		return nil, fmt.Errorf("network: open netlink in the target network namespace: %w", err)
	}
	defer h.Close()
	st, err := loadState(env)
	if err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	log := env.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &run{networkStage: n, ctx: ctx, env: env, log: log.With("stage", "network"), h: h, apply: apply,
		st: st, specs: specs, links: map[string]netlink.Link{},
		created: map[string]bool{}, absent: map[string]bool{}, renewed: map[string]bool{}}
	err = r.reconcile()
	if apply {
		// Save even after a failure: routes added before it are ours.
		if serr := st.save(env); serr != nil && err == nil {
			err = fmt.Errorf("network: save %s: %w", statePath(env), serr)
		}
	}
	return r.changes, err
}

func (r *run) reconcile() error {
	if err := r.reconcileLinks(); err != nil {
		return err
	}
	if r.apply {
		var wait []string
		for _, s := range r.specs {
			if r.links[s.Name] != nil && !s.IP.Optional {
				wait = append(wait, s.Name)
			}
		}
		if err := waitCarrier(r.ctx, r.h, wait, r.carrierTimeout); err != nil {
			return err
		}
	}
	if err := r.reconcileDHCP(); err != nil {
		return err
	}
	staleAddrs, err := r.reconcileAddresses()
	if err != nil {
		return err
	}
	if err := r.reconcileRoutes(); err != nil {
		return err
	}
	for _, sa := range staleAddrs {
		r.change(sa.link, "remove address %s", sa.addr)
		if err := r.do(func() error {
			l := r.links[sa.link]
			a := &netlink.Addr{IPNet: prefixToIPNet(sa.addr)}
			if err := r.h.AddrDel(l, a); err != nil && !isGone(err) {
				return fmt.Errorf("%s: remove address %s: %w", sa.link, sa.addr, err)
			}
			return nil
		}); err != nil {
			return err
		}
	}
	return r.reconcileResolvConf()
}

// change records one change; the engine logs what Apply returns.
func (r *run) change(link, format string, a ...any) {
	c := fmt.Sprintf(format, a...)
	if link != "" {
		c = link + ": " + c
	}
	r.changes = append(r.changes, stage.Change(c))
}

// do runs f only in Apply.
func (r *run) do(f func() error) error {
	if !r.apply {
		return nil
	}
	return f()
}

// reconcileLinks finds, creates, renames, sizes, enslaves and raises links.
func (r *run) reconcileLinks() error {
	all, err := retryDump(r.h.LinkList)
	if err != nil {
		return fmt.Errorf("network: list links: %w", err)
	}
	wasUp := map[string]bool{}
	for _, s := range r.specs {
		l, err := r.ensureLink(s, all)
		if err != nil {
			return err
		}
		r.links[s.Name] = l
		if l == nil {
			continue
		}
		wasUp[s.Name] = l.Attrs().Flags&net.FlagUp != 0
		if s.IP.MTU > 0 && l.Attrs().MTU != s.IP.MTU {
			r.change(s.Name, "set mtu %d (was %d)", s.IP.MTU, l.Attrs().MTU)
			if err := r.do(func() error { return r.h.LinkSetMTU(l, s.IP.MTU) }); err != nil {
				return fmt.Errorf("%s: %s: set mtu %d: %w", s.Field, s.Name, s.IP.MTU, err)
			}
		}
	}
	if err := r.reconcileBondMembers(); err != nil {
		return err
	}
	for _, s := range r.specs {
		l := r.links[s.Name]
		if l == nil {
			continue // absent optional link, or created by this (planned) run and raised then
		}
		if !wasUp[s.Name] && !r.created[s.Name] {
			r.change(s.Name, "set up")
		}
		// Enslaving takes links down; raise them whatever the plan said.
		if err := r.do(func() error { return r.h.LinkSetUp(l) }); err != nil {
			return fmt.Errorf("%s: %s: set up: %w", s.Field, s.Name, err)
		}
	}
	return r.refreshLinks()
}

// refreshLinks re-reads the links so later steps see new indexes and flags.
func (r *run) refreshLinks() error {
	if !r.apply {
		return nil
	}
	for name, l := range r.links {
		if l == nil {
			continue
		}
		nl, err := r.h.LinkByIndex(l.Attrs().Index)
		if err != nil {
			return fmt.Errorf("%s: re-read link: %w", name, err)
		}
		r.links[name] = nl
	}
	return nil
}

func (r *run) ensureLink(s *linkSpec, all []netlink.Link) (netlink.Link, error) {
	switch s.Kind {
	case kindVLAN:
		return r.ensureVLAN(s, all)
	case kindBond:
		return r.ensureBond(s, all)
	}
	l, err := findLink(all, s)
	if err != nil {
		return nil, err
	}
	if l == nil {
		how := "named " + s.Name
		if s.Match != nil {
			how = "matching " + describeMatch(s)
		}
		if s.IP.Optional {
			r.log.Info("optional link not present, skipped", "link", s.Name, "field", s.Field)
			r.absent[s.Name] = true
			return nil, nil
		}
		// Drivers load and udev renames after boot starts; worth retrying.
		return nil, stage.Temporary(fmt.Errorf("%s: no link %s; links present: %s", s.Field, how, linkNames(all)))
	}
	if old := l.Attrs().Name; old != s.Name {
		for _, o := range all {
			if o.Attrs().Name == s.Name && o.Attrs().Index != l.Attrs().Index {
				return nil, fmt.Errorf("%s: cannot rename %s to %s: another link (index %d) already has that name", s.Field, old, s.Name, o.Attrs().Index)
			}
		}
		r.change(s.Name, "rename from %s (matched %s)", old, describeMatch(s))
		if err := r.do(func() error {
			// The kernel renames only links that are down.
			if err := r.h.LinkSetDown(l); err != nil {
				return err
			}
			if err := r.h.LinkSetName(l, s.Name); err != nil {
				return err
			}
			if l.Attrs().Flags&net.FlagUp != 0 {
				return r.h.LinkSetUp(l)
			}
			return nil
		}); err != nil {
			return nil, fmt.Errorf("%s: rename %s to %s: %w", s.Field, old, s.Name, err)
		}
		if r.apply {
			if l, err = r.h.LinkByIndex(l.Attrs().Index); err != nil {
				return nil, fmt.Errorf("%s: re-read %s after rename: %w", s.Field, s.Name, err)
			}
		}
	}
	return l, nil
}

func (r *run) ensureVLAN(s *linkSpec, all []netlink.Link) (netlink.Link, error) {
	parent := r.links[s.VLAN.Link]
	var have netlink.Link
	for _, l := range all {
		if l.Attrs().Name == s.Name {
			have = l
		}
	}
	if have != nil {
		v, ok := have.(*netlink.Vlan)
		if !ok {
			return nil, fmt.Errorf("%s: link %s exists but is a %s, not a VLAN; remove it or rename the VLAN", s.Field, s.Name, have.Type())
		}
		if parent != nil && v.ParentIndex == parent.Attrs().Index && v.VlanId == s.VLAN.ID {
			return have, nil
		}
		r.change(s.Name, "delete vlan (id %d on index %d, config wants id %d on %s)", v.VlanId, v.ParentIndex, s.VLAN.ID, s.VLAN.Link)
		if err := r.do(func() error { return r.h.LinkDel(have) }); err != nil {
			return nil, fmt.Errorf("%s: delete %s: %w", s.Field, s.Name, err)
		}
	}
	r.change(s.Name, "create vlan %d on %s", s.VLAN.ID, s.VLAN.Link)
	if !r.apply {
		return nil, nil
	}
	if parent == nil {
		return nil, fmt.Errorf("%s: parent link %s is not present", s.Field, s.VLAN.Link)
	}
	attrs := netlink.LinkAttrs{Name: s.Name, ParentIndex: parent.Attrs().Index, MTU: s.IP.MTU}
	if err := r.h.LinkAdd(&netlink.Vlan{LinkAttrs: attrs, VlanId: s.VLAN.ID, VlanProtocol: netlink.VLAN_PROTOCOL_8021Q}); err != nil {
		return nil, fmt.Errorf("%s: create vlan %s (id %d on %s): %w", s.Field, s.Name, s.VLAN.ID, s.VLAN.Link, err)
	}
	r.created[s.Name] = true
	return r.h.LinkByName(s.Name)
}

func (r *run) ensureBond(s *linkSpec, all []netlink.Link) (netlink.Link, error) {
	want, err := bondAttrs(s.Bond)
	if err != nil {
		return nil, fmt.Errorf("%s.parameters: %w", s.Field, err)
	}
	var have netlink.Link
	for _, l := range all {
		if l.Attrs().Name == s.Name {
			have = l
		}
	}
	if have != nil {
		b, ok := have.(*netlink.Bond)
		if !ok {
			return nil, fmt.Errorf("%s: link %s exists but is a %s, not a bond; remove it or rename the bond", s.Field, s.Name, have.Type())
		}
		recreate, diff := bondDiff(b, want)
		if !recreate {
			if len(diff) > 0 {
				r.change(s.Name, "set bond %v", diff)
				mod := netlink.NewLinkBond(netlink.LinkAttrs{Name: s.Name, Index: b.Index})
				mod.Miimon, mod.LacpRate, mod.XmitHashPolicy = want.Miimon, want.LacpRate, want.XmitHashPolicy
				if err := r.do(func() error { return r.h.LinkModify(mod) }); err != nil {
					return nil, fmt.Errorf("%s: %s: set bond %v: %w", s.Field, s.Name, diff, err)
				}
			}
			return have, nil
		}
		r.change(s.Name, "delete bond to change %v", diff)
		if err := r.do(func() error { return r.h.LinkDel(have) }); err != nil {
			return nil, fmt.Errorf("%s: delete %s: %w", s.Field, s.Name, err)
		}
	}
	r.change(s.Name, "create bond (mode %s)", want.Mode)
	if !r.apply {
		return nil, nil
	}
	want.MTU = s.IP.MTU
	if err := r.h.LinkAdd(want); err != nil {
		return nil, fmt.Errorf("%s: create bond %s: %w", s.Field, s.Name, err)
	}
	r.created[s.Name] = true
	return r.h.LinkByName(s.Name)
}

// reconcileBondMembers enslaves interfaces to their bonds and sets the
// bond's primary once its members have indexes.
func (r *run) reconcileBondMembers() error {
	for _, s := range r.specs {
		if s.Master == "" || r.links[s.Name] == nil {
			continue
		}
		m, bond := r.links[s.Name], r.links[s.Master]
		if bond != nil && m.Attrs().MasterIndex == bond.Attrs().Index {
			continue
		}
		r.change(s.Name, "enslave to bond %s", s.Master)
		if err := r.do(func() error {
			// The bonding driver takes only members that are down.
			if err := r.h.LinkSetDown(m); err != nil {
				return err
			}
			return r.h.LinkSetMasterByIndex(m, bond.Attrs().Index)
		}); err != nil {
			return fmt.Errorf("%s: enslave %s to %s: %w", s.Field, s.Name, s.Master, err)
		}
	}
	for _, s := range r.specs {
		if s.Kind != kindBond || s.Bond.Parameters.Primary == "" {
			continue
		}
		bond, primary := r.links[s.Name], r.links[s.Bond.Parameters.Primary]
		if primary == nil {
			continue // optional member absent
		}
		if b, ok := bond.(*netlink.Bond); ok && b.Primary == primary.Attrs().Index {
			continue
		}
		r.change(s.Name, "set bond primary %s", s.Bond.Parameters.Primary)
		if err := r.do(func() error {
			mod := netlink.NewLinkBond(netlink.LinkAttrs{Name: s.Name, Index: bond.Attrs().Index})
			mod.Primary = primary.Attrs().Index
			return r.h.LinkModify(mod)
		}); err != nil {
			return fmt.Errorf("%s.parameters.primary: %s: %w", s.Field, s.Name, err)
		}
	}
	return nil
}

// prefixToIPNet converts keeping the host part (an address, not a network).
func prefixToIPNet(p netip.Prefix) *net.IPNet {
	bits := 32
	if !p.Addr().Is4() {
		bits = 128
	}
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), bits)}
}

// ipNetToPrefix is the inverse; IPv4 comes back unmapped.
func ipNetToPrefix(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a, ones), true
}

func ipToAddr(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}
	}
	return a.Unmap()
}

// isGone reports the kernel's "no such address/route": what a delete of
// something already gone (e.g. a route that left with its address) returns.
func isGone(err error) bool {
	return errors.Is(err, unix.ESRCH) || errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, unix.ENOENT)
}
