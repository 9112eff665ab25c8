package network

import (
	"fmt"

	"github.com/vishvananda/netlink"

	"kubeboot.dev/kubeboot/machineconfig"
)

// bondAttrs turns the config's bond parameters into a netlink.Bond with
// only the set parameters filled (the rest stay -1: kernel defaults).
// Primary is set later, once the members are enslaved and have indexes.
func bondAttrs(b *machineconfig.Bond) (*netlink.Bond, error) {
	nb := netlink.NewLinkBond(netlink.LinkAttrs{Name: b.Name})
	p := b.Parameters
	mode := p.Mode
	if mode == "" {
		mode = "balance-rr" // the kernel's default, named so status reads clearly
	}
	nb.Mode = netlink.StringToBondMode(mode)
	if nb.Mode == netlink.BOND_MODE_UNKNOWN {
		return nil, fmt.Errorf("mode %q is not one of balance-rr, active-backup, balance-xor, broadcast, 802.3ad, balance-tlb, balance-alb", p.Mode)
	}
	if p.MIIMonitorInterval < 0 {
		return nil, fmt.Errorf("miiMonitorInterval %d is negative", p.MIIMonitorInterval)
	}
	if p.MIIMonitorInterval > 0 {
		nb.Miimon = p.MIIMonitorInterval
	}
	if p.LACPRate != "" {
		if nb.Mode != netlink.BOND_MODE_802_3AD {
			return nil, fmt.Errorf("lacpRate applies to mode 802.3ad only, not %s", mode)
		}
		nb.LacpRate = netlink.StringToBondLacpRate(p.LACPRate)
		if nb.LacpRate == netlink.BOND_LACP_RATE_UNKNOWN {
			return nil, fmt.Errorf("lacpRate %q is not slow or fast", p.LACPRate)
		}
	}
	if p.TransmitHashPolicy != "" {
		switch nb.Mode {
		case netlink.BOND_MODE_BALANCE_XOR, netlink.BOND_MODE_802_3AD, netlink.BOND_MODE_BALANCE_TLB:
		default:
			return nil, fmt.Errorf("transmitHashPolicy applies to modes balance-xor, 802.3ad and balance-tlb, not %s", mode)
		}
		nb.XmitHashPolicy = netlink.StringToBondXmitHashPolicy(p.TransmitHashPolicy)
		if nb.XmitHashPolicy == netlink.BOND_XMIT_HASH_POLICY_UNKNOWN {
			return nil, fmt.Errorf("transmitHashPolicy %q is not one of layer2, layer3+4, layer2+3, encap2+3, encap3+4, vlan+srcmac", p.TransmitHashPolicy)
		}
	}
	if p.Primary != "" {
		switch nb.Mode {
		case netlink.BOND_MODE_ACTIVE_BACKUP, netlink.BOND_MODE_BALANCE_TLB, netlink.BOND_MODE_BALANCE_ALB:
		default:
			return nil, fmt.Errorf("primary applies to modes active-backup, balance-tlb and balance-alb, not %s", mode)
		}
		found := false
		for _, m := range b.Interfaces {
			found = found || m == p.Primary
		}
		if !found {
			return nil, fmt.Errorf("primary %q is not one of the bond's interfaces", p.Primary)
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
