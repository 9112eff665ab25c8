package network

import (
	"cmp"
	"fmt"

	"github.com/vishvananda/netlink"

	"kubeboot.dev/kubeboot/machineconfig"
)

// bondAttrs turns the config's bond parameters into a netlink.Bond with
// only the set parameters filled (the rest stay -1: kernel defaults).
// Primary is set later, once the members are enslaved and have indexes.
// The machine config validator has already checked every value and its
// mode; an unknown result here means its names and netlink's disagree.
func bondAttrs(b *machineconfig.Bond) (*netlink.Bond, error) {
	nb := netlink.NewLinkBond(netlink.LinkAttrs{Name: b.Name})
	p := b.Parameters
	nb.Mode = netlink.StringToBondMode(cmp.Or(p.Mode, "balance-rr"))
	if nb.Mode == netlink.BOND_MODE_UNKNOWN {
		return nil, fmt.Errorf("bond mode %q has no netlink equivalent", p.Mode)
	}
	if p.MIIMonitorInterval > 0 {
		nb.Miimon = p.MIIMonitorInterval
	}
	if p.LACPRate != "" {
		if nb.LacpRate = netlink.StringToBondLacpRate(p.LACPRate); nb.LacpRate == netlink.BOND_LACP_RATE_UNKNOWN {
			return nil, fmt.Errorf("lacpRate %q has no netlink equivalent", p.LACPRate)
		}
	}
	if p.TransmitHashPolicy != "" {
		if nb.XmitHashPolicy = netlink.StringToBondXmitHashPolicy(p.TransmitHashPolicy); nb.XmitHashPolicy == netlink.BOND_XMIT_HASH_POLICY_UNKNOWN {
			return nil, fmt.Errorf("transmitHashPolicy %q has no netlink equivalent", p.TransmitHashPolicy)
		}
	}
	return nb, nil
}

// bondDiff lists the parameters in which the kernel's bond differs from
// the wanted one; a mode difference needs the bond recreated (the kernel
// refuses to change the mode of a bond that is up or has members).
func bondDiff(have, want *netlink.Bond) (modeDiffers bool, diff []string) {
	if have.Mode != want.Mode {
		return true, []string{fmt.Sprintf("mode %s -> %s", have.Mode, want.Mode)}
	}
	if want.Miimon >= 0 && have.Miimon != want.Miimon {
		diff = append(diff, fmt.Sprintf("miimon %d -> %d", have.Miimon, want.Miimon))
	}
	if want.LacpRate >= 0 && have.LacpRate != want.LacpRate {
		diff = append(diff, fmt.Sprintf("lacp_rate %s -> %s", have.LacpRate, want.LacpRate))
	}
	if want.XmitHashPolicy >= 0 && have.XmitHashPolicy != want.XmitHashPolicy {
		diff = append(diff, fmt.Sprintf("xmit_hash_policy %s -> %s", have.XmitHashPolicy, want.XmitHashPolicy))
	}
	return false, diff
}
