package network

import (
	"bytes"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"kubeboot.dev/kubeboot/machineconfig"
)

// Issue 10 item 3: a DHCP server wrote lines into resolv.conf through the
// domain name option. A real dnsmasq serves the hostile values.
func TestDHCPServerCannotWriteResolvConf(t *testing.T) {
	n := newTestNet(t, referenceLinks)
	startDnsmasq(t, n,
		`dhcp-option=option:router,172.16.0.254`,
		`dhcp-option=option:dns-server,172.16.0.254,255.255.255.255,224.0.0.1,172.16.0.253,172.16.0.252,172.16.0.251`,
		`dhcp-option=option:domain-name,"evil.example\nnameserver 6.6.6.6\noptions ndots:15"`)
	cfg := controllerNetwork(t)
	cfg.Interfaces[0].Addresses, cfg.Interfaces[0].Routes, cfg.Interfaces[0].DHCP4 = nil, nil, true
	cfg.Nameservers = machineconfig.Nameservers{}
	env := n.env(cfg)
	var log bytes.Buffer
	env.Log = slog.New(slog.NewTextHandler(&log, nil))
	apply(t, testStage(), env)

	resolv, err := os.ReadFile(filepath.Join(n.root, "etc/resolv.conf"))
	if err != nil {
		t.Fatal(err)
	}
	want := "# Written by kubeboot bootstrapd (network stage) from the machine config; changes are overwritten.\n" +
		"nameserver 172.16.0.254\nnameserver 172.16.0.253\nnameserver 172.16.0.252\n"
	if string(resolv) != want {
		t.Errorf("resolv.conf:\n%s\nwant:\n%s", resolv, want)
	}
	for _, note := range []string{`domain name: \"evil.example\\nnameserver 6.6.6.6\\noptions ndots:15\" is not a valid RFC 1123 host name`,
		"nameserver 255.255.255.255: not a unicast address", "nameserver 224.0.0.1: not a unicast address", "nameserver 172.16.0.251: more than 3"} {
		if !strings.Contains(log.String(), note) {
			t.Errorf("the log does not say %q was ignored:\n%s", note, log.String())
		}
	}
}

// The same hostile values, without a DHCP server: leaseFromACK itself.
func TestLeaseFromACKChecksEveryValue(t *testing.T) {
	mac, _ := net.ParseMAC(mac1)
	ack := func(mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
		p, err := dhcpv4.New(append([]dhcpv4.Modifier{
			dhcpv4.WithMessageType(dhcpv4.MessageTypeAck), dhcpv4.WithHwAddr(mac),
			dhcpv4.WithYourIP(net.IPv4(172, 16, 0, 115)), dhcpv4.WithNetmask(net.IPv4Mask(255, 255, 255, 0)),
			dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(time.Hour)),
		}, mods...)...)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	now := time.Unix(1_800_000_000, 0)
	for _, tc := range []struct {
		name    string
		ack     *dhcpv4.DHCPv4
		err     string
		ignored []string
		check   func(*lease) bool
	}{
		{"domain with newlines", ack(dhcpv4.WithOption(dhcpv4.OptDomainName("evil.example\nnameserver 6.6.6.6\noptions ndots:15"))), "",
			[]string{`domain name: "evil.example\nnameserver 6.6.6.6\noptions ndots:15" is not a valid RFC 1123 host name`}, func(l *lease) bool { return l.Domain == "" }},
		{"domain with a NUL and a dot", ack(dhcpv4.WithOption(dhcpv4.OptDomainName("home.local.\x00"))), "", nil, func(l *lease) bool { return l.Domain == "home.local" }},
		{"router broadcast", ack(dhcpv4.WithRouter(net.IPv4bcast)), "", []string{"router 255.255.255.255: not a unicast address"}, func(l *lease) bool { return l.Router == "" }},
		{"router is the lease", ack(dhcpv4.WithRouter(net.IPv4(172, 16, 0, 115))), "", []string{"router 172.16.0.115"}, func(l *lease) bool { return l.Router == "" }},
		{"nameservers", ack(dhcpv4.WithDNS(net.IPv4zero, net.IPv4(224, 0, 0, 1), net.IPv4(10, 0, 0, 1), net.IPv4(10, 0, 0, 1), net.IPv4(10, 0, 0, 2), net.IPv4(10, 0, 0, 3), net.IPv4(10, 0, 0, 4))), "",
			[]string{"nameserver 0.0.0.0: not a unicast address", "nameserver 224.0.0.1", "nameserver 10.0.0.4: more than 3"},
			func(l *lease) bool { return strings.Join(l.DNS, " ") == "10.0.0.1 10.0.0.2 10.0.0.3" }},
		{"renewal after expiry", ack(dhcpv4.WithOption(dhcpv4.OptRenewTimeValue(2 * time.Hour))), "", nil, func(l *lease) bool { return l.Renew.Equal(now.Add(30 * time.Minute)) }},
		{"broadcast address", ack(dhcpv4.WithYourIP(net.IPv4(172, 16, 0, 255))), "the network or broadcast address of 172.16.0.0/24", nil, nil},
		{"multicast address", ack(dhcpv4.WithYourIP(net.IPv4(224, 0, 0, 5))), "no usable address", nil, nil},
		{"mask 0.0.0.0", ack(dhcpv4.WithNetmask(net.IPv4Mask(0, 0, 0, 0))), "invalid subnet mask", nil, nil},
		{"mask with holes", ack(dhcpv4.WithNetmask(net.IPv4Mask(255, 0, 255, 0))), "invalid subnet mask", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ls, ignored, err := leaseFromACK(tc.ack, now)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(ignored) != len(tc.ignored) {
				t.Errorf("ignored %q, want %q", ignored, tc.ignored)
			}
			for i := range min(len(ignored), len(tc.ignored)) {
				if !strings.Contains(ignored[i], tc.ignored[i]) {
					t.Errorf("ignored[%d] = %q, want %q", i, ignored[i], tc.ignored[i])
				}
			}
			if !tc.check(ls) {
				t.Errorf("lease %+v", ls)
			}
		})
	}
}
