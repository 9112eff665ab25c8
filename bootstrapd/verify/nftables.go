package verify

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"

	"kubeboot.dev/kubeboot/bootstrapd/firewall"
	"kubeboot.dev/kubeboot/machineconfig"
)

// maxChains bounds the chains listed (kube-proxy makes a few per Service).
const maxChains = 20000

// kube-proxy's tables and chains (k8s.io/kubernetes v1.37.2
// pkg/proxy/iptables/proxier.go and pkg/proxy/nftables/proxier.go): the
// top-level chains it always creates, and where the per-Service chains
// show that it has synced the Services.
var (
	iptablesChains = map[string][]string{
		"filter": {"KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-FORWARD", "KUBE-NODEPORTS", "KUBE-PROXY-FIREWALL"},
		"nat":    {"KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"},
	}
	iptablesServicePrefix = "KUBE-SVC-" // in table nat

	nftablesTable         = "kube-proxy"
	nftablesChains        = []string{"services", "masquerading", "filter-input", "filter-forward", "nat-prerouting", "nat-output", "nat-postrouting"}
	nftablesServicePrefix = "service-"
)

// firewalldTable is the table firewalld's nftables backend keeps.
const firewalldTable = "firewalld"

func (n *node) nftables(ctx context.Context) Section {
	s := Section{Name: "nftables", Title: "nftables ruleset (nft list ruleset): kube-proxy's chains and our firewall"}
	var opts []nftables.ConnOption
	if n.o.NetNS.IsOpen() {
		opts = append(opts, nftables.WithNetNSFd(int(n.o.NetNS)))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		s.fail("nftables", "readable", err.Error())
		return s
	}
	defer c.CloseLasting()
	tables, err := c.ListTables()
	if err != nil {
		s.fail("nftables", "tables listed", err.Error())
		return s
	}
	chains, err := c.ListChains()
	if err != nil {
		s.fail("nftables", "chains listed", err.Error())
		return s
	}
	chains = first(chains, maxChains)
	byTable := map[string][]*nftables.Chain{} // "ip nat" -> chains
	for _, ch := range chains {
		k := tableKey(ch.Table)
		byTable[k] = append(byTable[k], ch)
	}
	for _, t := range tables {
		k := tableKey(t)
		var names []string
		for _, ch := range byTable[k] {
			names = append(names, describeChain(ch))
		}
		s.found("table %s: %d chains: %s", k, len(names), strings.Join(names, ", "))
	}
	has := func(family, table, chain string) bool {
		return slices.ContainsFunc(byTable[family+" "+table], func(ch *nftables.Chain) bool { return ch.Name == chain })
	}

	for _, fam := range n.podFamilies() {
		n.kubeProxy(&s, c, fam, tables, byTable, has)
	}
	n.firewall(ctx, &s, tables)
	return s
}

// podFamilies are the nftables families ("ip", "ip6") of the pod subnet:
// kube-proxy programs a table set per IP family of the cluster.
func (n *node) podFamilies() []string {
	var out []string
	for _, c := range strings.Split(n.o.Config.Kubernetes.PodSubnet, ",") {
		p, err := netip.ParsePrefix(strings.TrimSpace(c))
		if err != nil {
			continue
		}
		fam := "ip"
		if p.Addr().Is6() {
			fam = "ip6"
		}
		if !slices.Contains(out, fam) {
			out = append(out, fam)
		}
	}
	if len(out) == 0 {
		out = []string{"ip"}
	}
	return out
}

// kubeProxy checks kube-proxy's rules in one family, in whichever mode
// the node runs it: its own table kube-proxy (nftables mode) or its chains
// in iptables-nft's filter and nat tables (iptables mode).
func (n *node) kubeProxy(s *Section, c *nftables.Conn, fam string, tables []*nftables.Table, byTable map[string][]*nftables.Chain, has func(family, table, chain string) bool) {
	name := fmt.Sprintf("kube-proxy's chains (%s)", fam)
	if slices.ContainsFunc(tables, func(t *nftables.Table) bool { return tableKey(t) == fam+" "+nftablesTable }) {
		var missing []string
		for _, ch := range nftablesChains {
			if !has(fam, nftablesTable, ch) {
				missing = append(missing, ch)
			}
		}
		expected := fmt.Sprintf("table %s %s with chains %s", fam, nftablesTable, strings.Join(nftablesChains, ", "))
		s.check(name, len(missing) == 0, expected, foundChains("nftables mode: table "+fam+" "+nftablesTable, missing))
		services := countPrefix(byTable[fam+" "+nftablesTable], nftablesServicePrefix)
		s.check(fmt.Sprintf("kube-proxy has synced the Services (%s)", fam), services > 0,
			"a "+nftablesServicePrefix+"* chain per Service port (at least default/kubernetes)", fmt.Sprintf("%d %s* chains", services, nftablesServicePrefix))
		return
	}
	var missing []string
	var expected []string
	for _, table := range []string{"filter", "nat"} {
		expected = append(expected, fmt.Sprintf("%s %s: %s", fam, table, strings.Join(iptablesChains[table], ", ")))
		for _, ch := range iptablesChains[table] {
			if !has(fam, table, ch) {
				missing = append(missing, table+" "+ch)
			}
		}
	}
	s.check(name, len(missing) == 0, "iptables mode: "+strings.Join(expected, "; ")+"; or nftables mode: table "+fam+" "+nftablesTable,
		foundChains("iptables mode (iptables-nft): tables "+fam+" filter, "+fam+" nat", missing))
	services := countPrefix(byTable[fam+" nat"], iptablesServicePrefix)
	s.check(fmt.Sprintf("kube-proxy has synced the Services (%s)", fam), services > 0,
		"a "+iptablesServicePrefix+"* chain per Service port in "+fam+" nat (at least default/kubernetes)", fmt.Sprintf("%d %s* chains", services, iptablesServicePrefix))
}

// firewall checks our firewall through the firewall stage itself: its plan
// for this node's config changes nothing, and its table is there.
func (n *node) firewall(ctx context.Context, s *Section, tables []*nftables.Table) {
	env := n.stageEnv("firewall")
	changes, err := firewall.New().Plan(ctx, env)
	name := "the firewall stage's rules hold"
	switch {
	case err != nil:
		s.fail(name, "the firewall stage finds nothing to change", err.Error())
		return
	case len(changes) > 0:
		var cs []string
		for _, c := range changes {
			cs = append(cs, string(c))
		}
		s.fail(name, "the firewall stage finds nothing to change", "it would: "+strings.Join(cs, "; "))
		return
	}
	fw := env.Data.Firewall
	open := "no ports"
	if len(fw.Open) > 0 {
		open = strings.Join(fw.Open, " ")
	}
	s.pass(name, "the firewall stage finds nothing to change", fmt.Sprintf("backend %s, open: %s", fw.Backend, open))
	table := ""
	switch fw.Backend {
	case string(machineconfig.BackendNftables):
		table = "inet " + firewall.TableName
	case string(machineconfig.BackendFirewalld):
		table = "inet " + firewalldTable
	default:
		return
	}
	present := slices.ContainsFunc(tables, func(t *nftables.Table) bool { return tableKey(t) == table })
	found := "absent"
	if present {
		found = "present"
	}
	s.check("table "+table, present, "present (firewall backend "+fw.Backend+")", found)
}

func tableKey(t *nftables.Table) string { return familyName(t.Family) + " " + t.Name }

func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	case nftables.TableFamilyARP:
		return "arp"
	case nftables.TableFamilyNetdev:
		return "netdev"
	case nftables.TableFamilyBridge:
		return "bridge"
	}
	return fmt.Sprint(f)
}

// describeChain is a chain's name, with its hook and policy for base chains.
func describeChain(ch *nftables.Chain) string {
	if ch.Hooknum == nil {
		return ch.Name
	}
	policy := "accept"
	if ch.Policy != nil && *ch.Policy == nftables.ChainPolicyDrop {
		policy = "drop"
	}
	return fmt.Sprintf("%s (hook %s, policy %s)", ch.Name, hookName(*ch.Hooknum), policy)
}

func hookName(h nftables.ChainHook) string {
	switch h {
	case *nftables.ChainHookPrerouting:
		return "prerouting"
	case *nftables.ChainHookInput:
		return "input"
	case *nftables.ChainHookForward:
		return "forward"
	case *nftables.ChainHookOutput:
		return "output"
	case *nftables.ChainHookPostrouting:
		return "postrouting"
	}
	return fmt.Sprint(h)
}

func countPrefix(chains []*nftables.Chain, prefix string) int {
	n := 0
	for _, ch := range chains {
		if strings.HasPrefix(ch.Name, prefix) {
			n++
		}
	}
	return n
}

func foundChains(where string, missing []string) string {
	if len(missing) == 0 {
		return where + ": all present"
	}
	return where + ": missing " + strings.Join(missing, ", ")
}
