package network

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"kubeboot.dev/kubeboot/bootstrapd/stage"
)

// dumpRetries bounds retries of a netlink dump that the kernel interrupted
// because the table changed under it (netlink.ErrDumpInterrupted).
const dumpRetries = 10

func retryDump[T any](f func() (T, error)) (T, error) {
	for i := 0; ; i++ {
		v, err := f()
		if errors.Is(err, netlink.ErrDumpInterrupted) && i < dumpRetries {
			continue
		}
		return v, err
	}
}

// aggregateTypes are links the stage creates itself; matching by MAC must
// not pick them, as a bond or VLAN carries the MAC of a member.
var aggregateTypes = []string{"bond", "vlan", "bridge", "macvlan", "ipvlan"}

// HardwareAddr is the address a link is matched by: the permanent one
// when the driver reports it (a bond member's current MAC is the bond's).
func HardwareAddr(l netlink.Link) net.HardwareAddr {
	if a := l.Attrs().PermHWAddr; len(a) > 0 {
		return a
	}
	return l.Attrs().HardwareAddr
}

// findLink resolves a spec to the kernel link it stands for, or nil when
// the link does not exist (yet). For a matched interface already renamed by
// an earlier run, the link carrying the target name is accepted when it
// still satisfies the MAC part of the match.
func findLink(links []netlink.Link, s *linkSpec) (netlink.Link, error) {
	byName := func(name string) netlink.Link {
		for _, l := range links {
			if l.Attrs().Name == name {
				return l
			}
		}
		return nil
	}
	if s.Kind != kindInterface || s.Match == nil {
		return byName(s.Name), nil
	}
	var mac net.HardwareAddr
	if s.Match.MACAddress != "" {
		var err error
		if mac, err = net.ParseMAC(s.Match.MACAddress); err != nil {
			return nil, fmt.Errorf("%s.match.macAddress: %q is not a MAC address", s.Field, s.Match.MACAddress)
		}
	}
	macOK := func(l netlink.Link) bool { return mac == nil || bytes.Equal(HardwareAddr(l), mac) }
	var found []netlink.Link
	for _, l := range links {
		if slices.Contains(aggregateTypes, l.Type()) || l.Attrs().Flags&net.FlagLoopback != 0 {
			continue
		}
		if macOK(l) && (s.Match.Name == "" || l.Attrs().Name == s.Match.Name) {
			found = append(found, l)
		}
	}
	if len(found) == 0 {
		if l := byName(s.Name); l != nil && macOK(l) {
			return l, nil
		}
		return nil, nil
	}
	if len(found) > 1 {
		var names []string
		for _, l := range found {
			names = append(names, l.Attrs().Name)
		}
		return nil, fmt.Errorf("%s.match %s matches %d links (%s); make the match unique", s.Field, describeMatch(s), len(found), strings.Join(names, ", "))
	}
	return found[0], nil
}

func describeMatch(s *linkSpec) string {
	var parts []string
	if s.Match.MACAddress != "" {
		parts = append(parts, "macAddress "+s.Match.MACAddress)
	}
	if s.Match.Name != "" {
		parts = append(parts, "name "+s.Match.Name)
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

func linkNames(links []netlink.Link) string {
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	return strings.Join(names, ", ")
}

// hasCarrier reads IFF_LOWER_UP, which is what "state UP" in `ip link` means.
func hasCarrier(l netlink.Link) bool { return l.Attrs().RawFlags&unix.IFF_LOWER_UP != 0 }

// waitCarrier polls until every link named has carrier. A link still
// without it when the timeout ends is a Temporary error naming it: cables
// get plugged and switch ports come up, so the engine retries.
func waitCarrier(ctx context.Context, h *netlink.Handle, names []string, timeout time.Duration) error {
	if len(names) == 0 {
		return nil
	}
	deadline := time.Now().Add(timeout)
	for {
		var missing []string
		for _, n := range names {
			l, err := h.LinkByName(n)
			if err != nil {
				return fmt.Errorf("%s: read link state: %w", n, err)
			}
			if !hasCarrier(l) {
				missing = append(missing, fmt.Sprintf("%s (operstate %s)", n, l.Attrs().OperState))
			}
		}
		if len(missing) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return stage.Temporary(fmt.Errorf("no carrier after %s on %s: check the cable/switch port, or mark the link optional: true",
				timeout, strings.Join(missing, ", ")))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for carrier on %s: %w", strings.Join(missing, ", "), ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
