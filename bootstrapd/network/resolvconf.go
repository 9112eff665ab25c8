package network

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"

	"kubeboot.dev/kubeboot/atomicfile"
)

const resolvConf = "/etc/resolv.conf"

// reconcileResolvConf writes resolv.conf from the configured nameservers
// and those of the DHCP leases; with neither it leaves the file alone.
func (r *run) reconcileResolvConf() error {
	ns := r.env.Config.Network.Nameservers
	var servers, search []string
	for i, a := range ns.Addresses {
		ip, err := netip.ParseAddr(a)
		if err != nil {
			return fmt.Errorf("network.nameservers.addresses[%d]: %q is not an IP address", i, a)
		}
		servers = appendNew(servers, ip.String())
	}
	for _, d := range ns.Search {
		search = appendNew(search, d)
	}
	for _, s := range r.specs {
		if l := r.leaseOf(s); l != nil {
			for _, d := range l.DNS {
				servers = appendNew(servers, d)
			}
			if l.Domain != "" {
				search = appendNew(search, l.Domain)
			}
		}
	}
	if len(servers) == 0 && len(search) == 0 {
		return nil
	}
	if len(servers) > 3 {
		r.log.Warn("glibc uses only the first 3 nameservers of resolv.conf", "nameservers", servers)
	}
	var b bytes.Buffer
	b.WriteString("# Written by kubeboot bootstrapd (network stage) from the machine config; changes are overwritten.\n")
	for _, s := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if len(search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(search, " "))
	}
	path := r.env.Path(resolvConf)
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, b.Bytes()) {
		return nil
	}
	r.change("", "write %s (nameserver %s; search %s)", resolvConf, orNone(strings.Join(servers, " ")), orNone(strings.Join(search, " ")))
	return r.do(func() error {
		if _, err := atomicfile.WriteIfChanged(path, b.Bytes(), 0o644, 0o755); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		return nil
	})
}

func appendNew(list []string, v string) []string {
	if slices.Contains(list, v) {
		return list
	}
	return append(list, v)
}
