package machineconfig

import "strings"

// Sysctl is one kernel setting.
type Sysctl struct{ Key, Value string }

// requiredSysctls are set on every node: kubeadm's preflight checks
// ip_forward, and bridged pod traffic must pass iptables (kube-proxy).
var requiredSysctls = []Sysctl{
	{"net.ipv4.ip_forward", "1"},
	{"net.bridge.bridge-nf-call-iptables", "1"},
	{"net.bridge.bridge-nf-call-ip6tables", "1"},
}

// ipv6Sysctls are required when the cluster uses IPv6: preflight then
// checks net.ipv6.conf.default.forwarding, and "all" is what forwards.
var ipv6Sysctls = []Sysctl{
	{"net.ipv6.conf.all.forwarding", "1"},
	{"net.ipv6.conf.default.forwarding", "1"},
}

// RequiredSysctls are the kernel settings Kubernetes needs on this node;
// system.sysctls may not contradict them (the validator says so).
func (c *MachineConfig) RequiredSysctls() []Sysctl {
	if !c.UsesIPv6() {
		return requiredSysctls
	}
	return append(append([]Sysctl{}, requiredSysctls...), ipv6Sysctls...)
}

// UsesIPv6 reports whether the cluster's pods, services or node address
// are IPv6.
func (c *MachineConfig) UsesIPv6() bool {
	k := c.Kubernetes
	return strings.Contains(k.PodSubnet, ":") || strings.Contains(k.ServiceSubnet, ":") || strings.Contains(k.AdvertiseAddress, ":")
}

// NormalizeSysctl makes multi-field values ("4096\t87380\t6291456")
// comparable, as the kernel prints them with tabs.
func NormalizeSysctl(v string) string { return strings.Join(strings.Fields(v), " ") }
