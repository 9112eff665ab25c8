package network

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"

	"kubeboot.dev/kubeboot/bootstrapd/stage"
)

// leaseOf returns the link's DHCPv4 lease while the kernel still holds its
// address (before it expires), or nil.
func (r *run) leaseOf(s *linkSpec) *lease {
	if !s.IP.DHCP4 {
		return nil
	}
	l := r.st.Leases[s.Name]
	if l == nil || !r.now().Before(l.Expires) {
		return nil
	}
	return l
}

// reconcileDHCP requests a lease for every dhcp4 link without a current
// one. A lease is current until its renewal time (T1); the stage does not
// keep running, so a lease is renewed when the stage runs again after T1
// (and the kernel drops the address when the lease expires).
func (r *run) reconcileDHCP() error {
	for _, s := range r.specs {
		if !s.IP.DHCP4 {
			if _, ok := r.st.Leases[s.Name]; ok && r.apply {
				delete(r.st.Leases, s.Name) // its address and route go as stale
			}
			continue
		}
		l := r.links[s.Name]
		if l == nil && r.absent[s.Name] {
			continue
		}
		prev := r.st.Leases[s.Name]
		if l != nil && prev != nil && r.now().Before(prev.Renew) {
			held, err := r.holds(l, prev.Address)
			if err != nil {
				return err
			}
			if held {
				continue
			}
		}
		if r.apply && s.IP.Optional && !hasCarrier(l) {
			r.log.Info("optional link has no carrier, DHCPv4 skipped", "link", s.Name)
			continue
		}
		if !r.apply {
			r.change(s.Name, "request DHCPv4 lease")
			continue
		}
		ls, err := r.acquire(s, l, prev)
		if err != nil {
			// No server yet, or it is slow: worth retrying.
			return stage.Temporary(fmt.Errorf("%s: %s: DHCPv4: %w", s.Field, s.Name, err))
		}
		r.change(s.Name, "DHCPv4 lease %s from %s (router %s, dns %s, renew after %s)", ls.Address, ls.Server,
			orNone(ls.Router), orNone(strings.Join(ls.DNS, " ")), ls.Renew.Sub(ls.Acquired).Round(time.Second))
		if r.st.Leases == nil {
			r.st.Leases = map[string]*lease{}
		}
		r.st.Leases[s.Name] = ls
		r.renewed[s.Name] = true
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// holds reports whether link l carries the address (CIDR) addr.
func (r *run) holds(l netlink.Link, addr string) (bool, error) {
	want, err := netip.ParsePrefix(addr)
	if err != nil {
		return false, nil
	}
	have, err := retryDump(func() ([]netlink.Addr, error) { return r.h.AddrList(l, netlink.FAMILY_V4) })
	if err != nil {
		return false, fmt.Errorf("%s: list addresses: %w", l.Attrs().Name, err)
	}
	for _, a := range have {
		if p, ok := ipNetToPrefix(a.IPNet); ok && p == want {
			return true, nil
		}
	}
	return false, nil
}

// acquire runs DISCOVER/OFFER/REQUEST/ACK on link l, asking for the
// previous address so a re-run keeps it when the server agrees.
func (r *run) acquire(s *linkSpec, l netlink.Link, prev *lease) (*lease, error) {
	var conn net.PacketConn
	// The raw socket belongs to the namespace of the thread creating it.
	if err := r.env.InNetNS(func() error {
		c, err := nclient4.NewRawUDPConn(l.Attrs().Name, nclient4.ClientPort)
		conn = c
		return err
	}); err != nil {
		return nil, fmt.Errorf("open raw socket: %w", err)
	}
	client, err := nclient4.NewWithConn(conn, l.Attrs().HardwareAddr, nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(3))
	if err != nil {
		conn.Close()
		return nil, err
	}
	defer client.Close()

	mods := []dhcpv4.Modifier{dhcpv4.WithRequestedOptions(dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter,
		dhcpv4.OptionDomainNameServer, dhcpv4.OptionDomainName)}
	if host, _, _ := strings.Cut(r.env.Config.Hostname, "."); host != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptHostName(host)))
	}
	if prev != nil {
		if p, err := netip.ParsePrefix(prev.Address); err == nil {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IP(p.Addr().AsSlice()))))
		}
	}
	ctx, cancel := context.WithTimeout(r.ctx, r.dhcpTimeout)
	defer cancel()
	got, err := client.Request(ctx, mods...)
	if err != nil {
		return nil, fmt.Errorf("no lease (is a DHCP server reachable on this link?): %w", err)
	}
	return leaseFromACK(got.ACK, r.now())
}

func leaseFromACK(ack *dhcpv4.DHCPv4, now time.Time) (*lease, error) {
	ip := ipToAddr(ack.YourIPAddr)
	if !ip.Is4() || ip.IsUnspecified() {
		return nil, fmt.Errorf("ACK from %s carries no address", ack.ServerIPAddr)
	}
	mask := ack.SubnetMask()
	if mask == nil {
		return nil, fmt.Errorf("ACK for %s carries no subnet mask", ip)
	}
	ones, bits := mask.Size()
	if bits != 32 {
		return nil, fmt.Errorf("ACK for %s carries an invalid subnet mask %s", ip, mask)
	}
	lt := ack.IPAddressLeaseTime(0)
	if lt <= 0 {
		return nil, fmt.Errorf("ACK for %s carries no lease time", ip)
	}
	ls := &lease{
		Address:  netip.PrefixFrom(ip, ones).String(),
		Acquired: now,
		Renew:    now.Add(ack.IPAddressRenewalTime(lt / 2)),
		Expires:  now.Add(lt),
	}
	if sid := ipToAddr(ack.ServerIdentifier()); sid.IsValid() {
		ls.Server = sid.String()
	}
	if rs := ack.Router(); len(rs) > 0 {
		ls.Router = ipToAddr(rs[0]).String()
	}
	for _, d := range ack.DNS() {
		ls.DNS = append(ls.DNS, ipToAddr(d).String())
	}
	ls.Domain = ack.DomainName()
	return ls, nil
}
