package network

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// resolvLineRE is every line resolv.conf may get: the header, nameserver
// lines with one address, one search line of DNS names.
var resolvLineRE = regexp.MustCompile(`^(# Written by kubeboot .*|nameserver [0-9.]+|search [A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*)$`)

// FuzzLeaseToResolvConf feeds DHCP packets (seeds in
// testdata/fuzz/FuzzLeaseToResolvConf: ACKs like dnsmasq's, and hostile
// ones) through the path a DHCP server's values take to resolv.conf:
// leaseFromACK, then resolvConfContent. A packet is rejected, or its lease
// renders to the header, at most maxLeaseDNS nameserver lines and at most
// one search line holding one DNS name.
func FuzzLeaseToResolvConf(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	f.Fuzz(func(t *testing.T, packet []byte) {
		ack, err := dhcpv4.FromBytes(packet)
		if err != nil {
			return
		}
		ls, _, err := leaseFromACK(ack, now)
		if err != nil {
			return
		}
		var search []string
		if ls.Domain != "" {
			search = []string{ls.Domain}
		}
		content, err := resolvConfContent(ls.DNS, search)
		if err != nil {
			t.Fatalf("a lease leaseFromACK took does not render: %v (lease %+v)", err, ls)
		}
		lines := strings.Split(strings.TrimSuffix(string(content), "\n"), "\n")
		if len(lines) > 1+maxLeaseDNS+1 {
			t.Fatalf("%d lines from one lease:\n%s", len(lines), content)
		}
		for _, l := range lines {
			if !resolvLineRE.MatchString(l) {
				t.Fatalf("resolv.conf line %q from lease %+v", l, ls)
			}
		}
		if !ls.Expires.After(now) || ls.Renew.After(ls.Expires) || ls.Renew.Before(now) {
			t.Fatalf("lease times: now %v renew %v expires %v", now, ls.Renew, ls.Expires)
		}
	})
}
