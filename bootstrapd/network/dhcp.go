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
	"kubeboot.dev/kubeboot/machineconfig"
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
	ls, ignored, err := leaseFromACK(got.ACK, r.now())
	for _, note := range ignored {
		r.log.Warn("DHCPv4 lease: value from the server ignored", "link", s.Name, "value", note)
	}
	return ls, err
}

// maxLeaseDNS bounds the nameservers taken from a lease: glibc reads 3.
const maxLeaseDNS = 3

// leaseFromACK takes the lease out of a DHCPACK. The DHCP server is not
// trusted to send sane values: the address must be a usable unicast host
// address, and the router, the nameservers and the domain name must be
// what they claim to be (an address, a DNS name) or they are dropped and
// named in ignored; a domain name with a newline in it would otherwise add
// lines to resolv.conf. Options not requested (hostname, search list,
// classless routes) are not read.
func leaseFromACK(ack *dhcpv4.DHCPv4, now time.Time) (ls *lease, ignored []string, err error) {
	ip := ipToAddr(ack.YourIPAddr)
	if !unicast4(ip) {
		return nil, nil, fmt.Errorf("ACK from %s carries no usable address (%s)", ack.ServerIPAddr, ip)
	}
	mask := ack.SubnetMask()
	if mask == nil {
		return nil, nil, fmt.Errorf("ACK for %s carries no subnet mask", ip)
	}
	ones, bits := mask.Size()
	if bits != 32 || ones == 0 {
		return nil, nil, fmt.Errorf("ACK for %s carries an invalid subnet mask %s", ip, mask)
	}
	pfx := netip.PrefixFrom(ip, ones)
	if ones < 31 && (ip == pfx.Masked().Addr() || ip == lastAddr(pfx)) {
		return nil, nil, fmt.Errorf("ACK offers %s, the network or broadcast address of %s", ip, pfx.Masked())
	}
	lt := ack.IPAddressLeaseTime(0)
	if lt <= 0 {
		return nil, nil, fmt.Errorf("ACK for %s carries no lease time", ip)
	}
	renew := ack.IPAddressRenewalTime(lt / 2)
	if renew <= 0 || renew > lt {
		renew = lt / 2
	}
	ls = &lease{
		Address:  pfx.String(),
		Acquired: now,
		Renew:    now.Add(renew),
		Expires:  now.Add(lt),
	}
	if sid := ipToAddr(ack.ServerIdentifier()); sid.Is4() {
		ls.Server = sid.String()
	}
	if rs := ack.Router(); len(rs) > 0 {
		if gw := ipToAddr(rs[0]); unicast4(gw) && gw != ip {
			ls.Router = gw.String()
		} else {
			ignored = append(ignored, fmt.Sprintf("router %s: not a unicast address other than the lease's", gw))
		}
	}
	for _, d := range ack.DNS() {
		switch ns := ipToAddr(d); {
		case !ns.Is4() || ns.IsUnspecified() || ns.IsMulticast() || ns == broadcast4:
			ignored = append(ignored, fmt.Sprintf("nameserver %s: not a unicast address", ns))
		case len(ls.DNS) == maxLeaseDNS:
			ignored = append(ignored, fmt.Sprintf("nameserver %s: more than %d", ns, maxLeaseDNS))
		default:
			ls.DNS = appendNew(ls.DNS, ns.String())
		}
	}
	if d := ack.DomainName(); d != "" {
		d = strings.TrimSuffix(strings.TrimRight(d, "\x00"), ".") // some servers count the C string's NUL
		if err := machineconfig.CheckDNSName(d); err != nil {
			ignored = append(ignored, "domain name: "+err.Error())
		} else {
			ls.Domain = d
		}
	}
	return ls, ignored, nil
}

var broadcast4 = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// unicast4 is an IPv4 address a host or router can have.
func unicast4(ip netip.Addr) bool {
	return ip.Is4() && !ip.IsUnspecified() && !ip.IsMulticast() && !ip.IsLoopback() && ip != broadcast4
}

// lastAddr is the broadcast address of an IPv4 prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	for i := p.Bits(); i < 32; i++ {
		b[i/8] |= 1 << (7 - i%8)
	}
	return netip.AddrFrom4(b)
}
