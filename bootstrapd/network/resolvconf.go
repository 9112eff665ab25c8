package network

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"

	"kubeboot.dev/kubeboot/atomicfile"
	"kubeboot.dev/kubeboot/machineconfig"
)

const resolvConf = "/etc/resolv.conf"

// reconcileResolvConf writes resolv.conf from the configured nameservers
// and those of the DHCP leases; with neither it leaves the file alone.
func (r *run) reconcileResolvConf() error {
	ns := r.env.Config.Network.Nameservers
	var servers, search []string
	for _, a := range ns.Addresses {
		servers = appendNew(servers, a)
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
	content, err := resolvConfContent(servers, search)
	if err != nil {
		return err
	}
	path := r.env.Path(resolvConf)
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, content) {
		return nil
	}
	r.change("", "write %s (nameserver %s; search %s)", resolvConf, orNone(strings.Join(servers, " ")), orNone(strings.Join(search, " ")))
	return r.do(func() error {
		if _, err := atomicfile.WriteIfChanged(path, content, 0o644, 0o755); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		return nil
	})
}

// resolvConfContent renders resolv.conf. Every value is checked here too,
// where it becomes a line: the config's were validated, a lease's were
// checked when it was taken, but a lease may come from network.json
// written by an older bootstrapd, and a value with a blank or a newline
// would add an option or a nameserver.
func resolvConfContent(servers, search []string) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("# Written by kubeboot bootstrapd (network stage) from the machine config; changes are overwritten.\n")
	for _, s := range servers {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("nameserver %q is not an IP address (delete the network stage's %s if a DHCP lease put it there)", s, stateFile)
		}
		fmt.Fprintf(&b, "nameserver %s\n", ip)
	}
	for _, d := range search {
		if err := machineconfig.CheckDNSName(strings.TrimSuffix(d, ".")); err != nil {
			return nil, fmt.Errorf("search domain: %v (delete the network stage's %s if a DHCP lease put it there)", err, stateFile)
		}
	}
	if len(search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(search, " "))
	}
	return b.Bytes(), nil
}

func appendNew(list []string, v string) []string {
	if slices.Contains(list, v) {
		return list
	}
	return append(list, v)
}
