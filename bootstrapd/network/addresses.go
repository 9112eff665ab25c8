package network

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

type staleAddr struct {
	link string
	addr netip.Prefix
}

// wantAddrs are the addresses a link must hold: the configured ones and,
// for DHCP links, the address of the current lease.
func (r *run) wantAddrs(s *linkSpec) []netip.Prefix {
	want := slices.Clone(s.Addresses)
	if l := r.leaseOf(s); l != nil {
		if p, err := netip.ParsePrefix(l.Address); err == nil {
			want = append(want, p)
		}
	}
	return want
}

// reconcileAddresses adds missing addresses and returns the ones to remove;
// those go last, after the routes have moved off them.
func (r *run) reconcileAddresses() ([]staleAddr, error) {
	var stale []staleAddr
	for _, s := range r.specs {
		l := r.links[s.Name]
		if l == nil && r.absent[s.Name] {
			continue
		}
		var have []netlink.Addr
		if l != nil {
			var err error
			have, err = retryDump(func() ([]netlink.Addr, error) { return r.h.AddrList(l, netlink.FAMILY_ALL) })
			if err != nil {
				return nil, fmt.Errorf("%s: list addresses: %w", s.Name, err)
			}
		}
		want := r.wantAddrs(s)
		for _, w := range want {
			var cur *netlink.Addr
			for i := range have {
				if p, ok := ipNetToPrefix(have[i].IPNet); ok && p == w {
					cur = &have[i]
				}
			}
			a := r.netlinkAddr(s, w)
			switch {
			case cur == nil:
				r.change(s.Name, "add address %s", w)
				if err := r.do(func() error { return r.h.AddrAdd(l, a) }); err != nil {
					return nil, fmt.Errorf("%s: %s: add address %s: %w", s.Field, s.Name, w, err)
				}
			case cur.Flags&unix.IFA_F_NOPREFIXROUTE == 0:
				// Someone added it with a kernel prefix route at the kernel's
				// metric; only a fresh address drops that route.
				r.change(s.Name, "re-add address %s without the kernel's own prefix route", w)
				if err := r.do(func() error {
					if err := r.h.AddrDel(l, cur); err != nil {
						return err
					}
					return r.h.AddrAdd(l, a)
				}); err != nil {
					return nil, fmt.Errorf("%s: %s: re-add address %s: %w", s.Field, s.Name, w, err)
				}
			case r.renewed[s.Name] && a.ValidLft > 0:
				// A renewed lease extends the address's lifetime; the lease
				// change already says so.
				if err := r.do(func() error { return r.h.AddrReplace(l, a) }); err != nil {
					return nil, fmt.Errorf("%s: %s: extend lifetime of %s: %w", s.Field, s.Name, w, err)
				}
			}
		}
		for _, h := range have {
			p, ok := ipNetToPrefix(h.IPNet)
			if !ok || slices.Contains(want, p) || kernelManaged(p, h) {
				continue
			}
			stale = append(stale, staleAddr{s.Name, p})
		}
		if len(stale) > 0 && r.apply {
			// Without it, deleting a primary IPv4 address deletes the
			// secondaries of its subnet too, including wanted ones.
			if err := r.setSysctl(fmt.Sprintf("net/ipv4/conf/%s/promote_secondaries", s.Name), "1"); err != nil {
				return nil, fmt.Errorf("%s: %w", s.Name, err)
			}
		}
	}
	return stale, nil
}

// kernelManaged addresses are left alone: IPv6 link-local ones and those
// the kernel configured itself from router advertisements (not permanent).
func kernelManaged(p netip.Prefix, a netlink.Addr) bool {
	if p.Addr().Is4() {
		return false
	}
	return p.Addr().IsLinkLocalUnicast() || a.Flags&unix.IFA_F_PERMANENT == 0
}

func (r *run) netlinkAddr(s *linkSpec, p netip.Prefix) *netlink.Addr {
	a := &netlink.Addr{IPNet: prefixToIPNet(p), Flags: unix.IFA_F_NOPREFIXROUTE}
	if l := r.leaseOf(s); l != nil && l.Address == p.String() {
		// The kernel drops a lease's address when the lease ends, so a node
		// never keeps an address the server may have handed to another.
		left := max(int(l.Expires.Sub(r.now())/time.Second), 1)
		a.ValidLft, a.PreferedLft = left, left
	}
	return a
}

// setSysctl writes a per-namespace sysctl from a thread inside env.NetNS.
func (r *run) setSysctl(key, value string) error {
	return r.env.InNetNS(func() error {
		p := r.env.ProcPath(filepath.Join("sys", key))
		if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
			return fmt.Errorf("set sysctl %s=%s: %w", key, value, err)
		}
		return nil
	})
}
