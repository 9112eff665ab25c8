package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"kubeboot.dev/kubeboot/machineconfig"
)

// ipLink is what `ip -j -d addr` says of a link (the fields the lab reads).
type ipLink struct {
	Name      string   `json:"ifname"`
	Link      string   `json:"link"` // a VLAN's parent
	Master    string   `json:"master"`
	Address   string   `json:"address"`
	PermAddr  string   `json:"permaddr"` // a bond member's own MAC
	OperState string   `json:"operstate"`
	Flags     []string `json:"flags"`
	LinkInfo  struct {
		Kind string `json:"info_kind"`
		Data struct {
			ID int `json:"id"`
		} `json:"info_data"`
	} `json:"linkinfo"`
	Addrs []ipAddr `json:"addr_info"`
}

type ipAddr struct {
	Family    string `json:"family"`
	Local     string `json:"local"`
	PrefixLen int    `json:"prefixlen"`
}

type ipRoute struct {
	Dst     string `json:"dst"`
	Gateway string `json:"gateway"`
	Dev     string `json:"dev"`
	Metric  *int   `json:"metric"`
	Proto   string `json:"protocol"`
}

// bondState is a bond's view from /sys/class/net/NAME/bonding.
type bondState struct {
	Mode, Slaves, ActiveSlave, Primary, MIIMon string
}

func (vm *VM) links(ctx context.Context) (map[string]ipLink, error) {
	out, err := vm.Check(ctx, "ip -j -d addr show", time.Minute)
	if err != nil {
		return nil, err
	}
	var list []ipLink
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, fmt.Errorf("%s: ip -j addr: %w", vm.Name, err)
	}
	m := map[string]ipLink{}
	for _, l := range list {
		m[l.Name] = l
	}
	return m, nil
}

func (vm *VM) routes(ctx context.Context, family string) ([]ipRoute, error) {
	out, err := vm.Check(ctx, "ip -j "+family+" route show table main", time.Minute)
	if err != nil {
		return nil, err
	}
	var list []ipRoute
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, fmt.Errorf("%s: ip -j route: %w", vm.Name, err)
	}
	return list, nil
}

// Bond reads a bond's state from sysfs.
func (vm *VM) Bond(ctx context.Context, name string) (bondState, error) {
	out, err := vm.Check(ctx, "cd /sys/class/net/"+name+"/bonding && for f in mode slaves active_slave primary miimon; do echo \"$(cat $f)\"; done", time.Minute)
	if err != nil {
		return bondState{}, err
	}
	l := strings.Split(out, "\n")
	if len(l) != 5 {
		return bondState{}, fmt.Errorf("%s: bond %s: unexpected sysfs output %q", vm.Name, name, out)
	}
	return bondState{Mode: l[0], Slaves: l[1], ActiveSlave: l[2], Primary: l[3], MIIMon: l[4]}, nil
}

// CheckNetwork compares the guest's links, addresses, routes, bonds and
// VLANs with the config's network section and returns what it checked.
func (vm *VM) CheckNetwork(ctx context.Context, cfg *machineconfig.MachineConfig) ([]string, error) {
	links, err := vm.links(ctx)
	if err != nil {
		return nil, err
	}
	routes4, err := vm.routes(ctx, "-4")
	if err != nil {
		return nil, err
	}
	routes6, err := vm.routes(ctx, "-6")
	if err != nil {
		return nil, err
	}
	var checked []string
	var probs []string
	bad := func(format string, args ...any) { probs = append(probs, fmt.Sprintf(format, args...)) }
	n := &cfg.Network
	for _, it := range n.Interfaces {
		l, ok := links[it.Name]
		if !ok {
			bad("no link %s", it.Name)
			continue
		}
		if it.Match != nil && it.Match.MACAddress != "" {
			mac := l.Address
			if l.PermAddr != "" {
				mac = l.PermAddr
			}
			if !strings.EqualFold(mac, it.Match.MACAddress) {
				bad("%s has MAC %s, the config matches %s", it.Name, mac, it.Match.MACAddress)
			}
		}
	}
	for _, v := range n.VLANs {
		l, ok := links[v.Name]
		switch {
		case !ok:
			bad("no VLAN link %s", v.Name)
		case l.LinkInfo.Kind != "vlan" || l.LinkInfo.Data.ID != v.ID || l.Link != v.Link:
			bad("%s is kind %q id %d on %q, want vlan id %d on %s", v.Name, l.LinkInfo.Kind, l.LinkInfo.Data.ID, l.Link, v.ID, v.Link)
		default:
			checked = append(checked, fmt.Sprintf("%s: VLAN id %d on %s", v.Name, v.ID, v.Link))
		}
	}
	for _, b := range n.Bonds {
		st, err := vm.Bond(ctx, b.Name)
		if err != nil {
			bad("%v", err)
			continue
		}
		slaves := strings.Fields(st.Slaves)
		slices.Sort(slaves)
		want := slices.Sorted(slices.Values(b.Interfaces))
		mode, _, _ := strings.Cut(st.Mode, " ")
		switch {
		case b.Parameters.Mode != "" && mode != b.Parameters.Mode:
			bad("bond %s mode %q, want %s", b.Name, st.Mode, b.Parameters.Mode)
		case !slices.Equal(slaves, want):
			bad("bond %s members %v, want %v", b.Name, slaves, want)
		case b.Parameters.Primary != "" && (st.Primary != b.Parameters.Primary || st.ActiveSlave != b.Parameters.Primary):
			bad("bond %s primary %q, active %q, want both %s", b.Name, st.Primary, st.ActiveSlave, b.Parameters.Primary)
		case b.Parameters.MIIMonitorInterval != 0 && st.MIIMon != strconv.Itoa(b.Parameters.MIIMonitorInterval):
			bad("bond %s miimon %s, want %d", b.Name, st.MIIMon, b.Parameters.MIIMonitorInterval)
		default:
			checked = append(checked, fmt.Sprintf("%s: %s over %s, active %s", b.Name, mode, strings.Join(want, "+"), st.ActiveSlave))
		}
		for _, m := range b.Interfaces {
			if links[m].Master != b.Name {
				bad("%s's master is %q, want %s", m, links[m].Master, b.Name)
			}
		}
	}
	for _, cl := range n.Links() {
		l, ok := links[cl.Name]
		if !ok {
			bad("no link %s", cl.Name)
			continue
		}
		if len(cl.Addresses) > 0 && (l.OperState != "UP" && l.OperState != "UNKNOWN") {
			bad("%s is %s", cl.Name, l.OperState)
		}
		for _, a := range cl.Addresses {
			p, err := netip.ParsePrefix(a)
			if err != nil {
				bad("config address %s: %v", a, err)
				continue
			}
			if !slices.ContainsFunc(l.Addrs, func(x ipAddr) bool {
				return x.Local == p.Addr().String() && x.PrefixLen == p.Bits()
			}) {
				bad("%s lacks %s", cl.Name, a)
				continue
			}
			checked = append(checked, fmt.Sprintf("%s: %s", cl.Name, a))
			if cl.RouteMetric != nil && p.Addr().Is4() {
				net := p.Masked().String()
				if !slices.ContainsFunc(routes4, func(r ipRoute) bool {
					return r.Dst == net && r.Dev == cl.Name && r.Metric != nil && *r.Metric == *cl.RouteMetric
				}) {
					bad("no route to %s dev %s metric %d", net, cl.Name, *cl.RouteMetric)
				}
			}
		}
		for _, r := range cl.Routes {
			metric := cl.RouteMetric
			if r.Metric != nil {
				metric = r.Metric
			}
			gw, err := netip.ParseAddr(r.Via)
			list := routes4
			if err == nil && gw.Is6() {
				list = routes6
			}
			to := r.To
			if r.IsDefaultRoute() {
				to = "default"
			}
			if !slices.ContainsFunc(list, func(x ipRoute) bool {
				return x.Dst == to && x.Gateway == r.Via && x.Dev == cl.Name && (metric == nil || (x.Metric != nil && *x.Metric == *metric))
			}) {
				bad("no route %s via %s dev %s metric %v", to, r.Via, cl.Name, deref(metric))
				continue
			}
			checked = append(checked, fmt.Sprintf("route %s via %s dev %s metric %v", to, r.Via, cl.Name, deref(metric)))
		}
	}
	if len(probs) > 0 {
		out, _ := vm.Check(ctx, "ip -br addr; ip route", time.Minute)
		return checked, fmt.Errorf("%s: the network differs from the config:\n  %s\nthe guest has:\n%s", vm.Name, strings.Join(probs, "\n  "), out)
	}
	return checked, nil
}

func deref(p *int) string {
	if p == nil {
		return "(kernel default)"
	}
	return strconv.Itoa(*p)
}
