package firewall

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/machineconfig"
)

// TableName is the one nftables table (family inet) the nftables backend
// owns. Nothing outside it is ever read for changes or touched: iptables-nft,
// kube-proxy and CNI plugins keep their own tables.
const TableName = "kubeboot"

// The input chain hooks at filter priority 0. There is deliberately no
// forward chain: routed traffic (pod to pod across nodes, NodePort DNAT to a
// pod elsewhere) must pass, and kube-proxy and the CNI plugin filter it in
// their own tables. A base chain with policy accept would change nothing
// but cost a hook on every forwarded packet.
const inputChain = "input"

// ruleset is a complete desired or observed state of the table.
type ruleset struct {
	chainOK bool          // observed only: the input chain exists as desired
	sets    []*setContent // by name
	rules   []ruleContent // in chain order
}

type setContent struct {
	set   *nftables.Set
	elems []nftables.SetElement // what is sent to the kernel
	items []string              // the elements in words, sorted
}

type ruleContent struct {
	comment string
	exprs   []expr.Any
}

// linkLocal is fe80::/10 as address and mask bytes.
var linkLocal = struct{ addr, mask []byte }{
	addr: netip.MustParseAddr("fe80::").AsSlice(),
	mask: netip.MustParseAddr("ffc0::").AsSlice(),
}

// loopbackIndex is lo's ifindex in every network namespace (the kernel's
// LOOPBACK_IFINDEX), so "iif lo" needs no lookup.
const loopbackIndex = 1

var kubebootTable = &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}

// desiredRuleset renders the policy as sets and rules. Ports, interfaces and
// sources live in sets so the number of rules (and of netlink messages in
// the batch) stays small whatever the config lists: large batches hit
// ENOBUFS on the ack socket (google/nftables#350, siderolabs/talos#14001).
func desiredRuleset(p policy, dhcp6 bool) *ruleset {
	rs := &ruleset{}
	addSet := func(name string, key nftables.SetDatatype, interval bool, elems []nftables.SetElement, items []string) *nftables.Set {
		s := &nftables.Set{Table: kubebootTable, Name: name, KeyType: key, Interval: interval}
		// nft prints elements by the byte order recorded in the set's
		// userdata: ports are network order, interface names host order.
		switch key {
		case nftables.TypeInetService:
			s.KeyByteOrder = binaryutil.BigEndian
		case nftables.TypeIFName:
			s.KeyByteOrder = binaryutil.NativeEndian
		}
		rs.sets = append(rs.sets, &setContent{set: s, elems: elems, items: items})
		return s
	}

	var ifaceSet *nftables.Set
	if len(p.interfaces) > 0 {
		var elems []nftables.SetElement
		for _, name := range p.interfaces {
			elems = append(elems, nftables.SetElement{Key: ifname(name)})
		}
		ifaceSet = addSet("ifaces", nftables.TypeIFName, false, elems, slices.Clone(p.interfaces))
	}
	type source struct {
		nfproto byte
		set     *nftables.Set
	}
	// prefixSets puts prefixes into one interval set per address family,
	// named <name>4 and <name>6.
	prefixSets := func(name string, prefixes []netip.Prefix) []source {
		var out []source
		for _, fam := range []struct {
			suffix  string
			is4     bool
			key     nftables.SetDatatype
			nfproto byte
		}{{"4", true, nftables.TypeIPAddr, unix.NFPROTO_IPV4}, {"6", false, nftables.TypeIP6Addr, unix.NFPROTO_IPV6}} {
			var elems []nftables.SetElement
			var items []string
			for _, pfx := range prefixes {
				if pfx.Addr().Is4() != fam.is4 {
					continue
				}
				elems = append(elems, prefixElements(pfx)...)
				items = append(items, pfx.String())
			}
			if len(items) > 0 {
				out = append(out, source{fam.nfproto, addSet(name+fam.suffix, fam.key, true, elems, items)})
			}
		}
		return out
	}
	sources := prefixSets("src", p.sources)
	pods := prefixSets("pods", p.pods)
	// saddrIn matches packets of src's family whose source is in its set.
	saddrIn := func(src source) []expr.Any {
		offset, length := uint32(12), uint32(4)
		if src.nfproto == unix.NFPROTO_IPV6 {
			offset, length = 8, 16
		}
		return []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{src.nfproto}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: length},
			&expr.Lookup{SourceRegister: 1, SetName: src.set.Name},
		}
	}

	accept := &expr.Verdict{Kind: expr.VerdictAccept}
	rule := func(comment string, exprs ...expr.Any) {
		rs.rules = append(rs.rules, ruleContent{comment: comment, exprs: exprs})
	}
	rule("established",
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
			Xor:  binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
		accept)
	rule("loopback",
		&expr.Meta{Key: expr.MetaKeyIIF, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(loopbackIndex)},
		accept)
	// Neighbor discovery (router solicit/advert, neighbor solicit/advert,
	// types 133-136) goes before the invalid drop: DAD probes from :: are
	// not part of any connection and IPv6 stops working without them.
	rule("icmpv6 neighbor discovery", slices.Concat(l4proto(unix.IPPROTO_ICMPV6), []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
		&expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: []byte{133}, ToData: []byte{136}},
		accept})...)
	rule("invalid",
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitINVALID),
			Xor:  binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Verdict{Kind: expr.VerdictDrop})
	rule("icmp", append(l4proto(unix.IPPROTO_ICMP), accept)...)
	rule("icmpv6", append(l4proto(unix.IPPROTO_ICMPV6), accept)...)
	if dhcp6 {
		// DHCPv6 replies come from the server's link-local address to
		// our port 546, unrelated (for conntrack) to the multicast request.
		rule("dhcpv6-client", slices.Concat([]expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV6}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 16},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 16, Mask: linkLocal.mask, Xor: make([]byte, 16)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: linkLocal.addr},
		}, l4proto(unix.IPPROTO_UDP), []expr.Any{
			dport(),
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(546)},
			accept,
		})...)
	}
	// SSH is not restricted by interfaces or sources: a wrong list must not
	// lock the operator out of the node it just configured.
	for _, ssh := range p.ssh {
		rule("ssh "+ssh.String(), append(l4proto(unix.IPPROTO_TCP), dport(),
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(ssh.First)},
			accept)...)
	}

	// The node's own pods reach it through the pod bridge (the API server
	// through the kubernetes Service, hostNetwork pods, the kubelet): the
	// pod network is trusted as a whole, like loopback. Pods on other
	// nodes are masqueraded to their node's address on the way here.
	for _, src := range pods {
		rule(fmt.Sprintf("pod network from %s @%s", PodBridge, src.set.Name), slices.Concat([]expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(PodBridge)},
		}, saddrIn(src), []expr.Any{accept})...)
	}

	for _, proto := range protocols {
		ports := p.portsOf(proto)
		if len(ports) == 0 {
			continue
		}
		var elems []nftables.SetElement
		var items []string
		for _, port := range ports {
			elems = append(elems, rangeElements(binaryutil.BigEndian.PutUint16(port.First), binaryutil.BigEndian.PutUint16(port.Last))...)
			items = append(items, port.String())
		}
		portSet := addSet(proto+"_ports", nftables.TypeInetService, true, elems, items)

		var restrict []expr.Any
		where := ""
		if ifaceSet != nil {
			restrict = append(restrict,
				&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
				&expr.Lookup{SourceRegister: 1, SetName: ifaceSet.Name})
			where = " on @" + ifaceSet.Name
		}
		match := append(l4proto(protoNumber(proto)), dport(),
			&expr.Lookup{SourceRegister: 1, SetName: portSet.Name},
			accept)
		if len(sources) == 0 {
			rule(fmt.Sprintf("%s ports%s", proto, where), slices.Concat(restrict, match)...)
			continue
		}
		// With sources, an address family without any source gets no rule
		// at all: its traffic to these ports is dropped.
		for _, src := range sources {
			rule(fmt.Sprintf("%s ports%s from @%s", proto, where, src.set.Name), slices.Concat(restrict, saddrIn(src), match)...)
		}
	}
	slices.SortFunc(rs.sets, func(a, b *setContent) int { return strings.Compare(a.set.Name, b.set.Name) })
	return rs
}

// l4proto matches the transport protocol of IPv4 and IPv6 packets alike
// (nft's "meta l4proto").
func l4proto(proto byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
}

// dport loads the transport destination port, valid for tcp, udp and sctp
// alike (nft's "th dport"); it always follows an l4proto match.
func dport() expr.Any {
	return &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}
}

func protoNumber(proto string) byte {
	switch proto {
	case "tcp":
		return unix.IPPROTO_TCP
	case "udp":
		return unix.IPPROTO_UDP
	default:
		return unix.IPPROTO_SCTP
	}
}

// ifname is the kernel's IFNAMSIZ-padded interface name key.
func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

// rangeElements is the interval-set encoding of [first, last]: a start
// element and an end element one past last. A range reaching the top of the
// key space has no end element.
func rangeElements(first, last []byte) []nftables.SetElement {
	elems := []nftables.SetElement{{Key: first}}
	if end, ok := increment(last); ok {
		elems = append(elems, nftables.SetElement{Key: end, IntervalEnd: true})
	}
	return elems
}

func increment(b []byte) ([]byte, bool) {
	out := slices.Clone(b)
	for i := len(out) - 1; i >= 0; i-- {
		out[i]++
		if out[i] != 0 {
			return out, true
		}
	}
	return nil, false
}

func prefixElements(p netip.Prefix) []nftables.SetElement {
	first := p.Masked().Addr()
	last := lastAddr(p)
	return rangeElements(first.AsSlice(), last.AsSlice())
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// nftBackend manages table inet kubeboot through netlink.
type nftBackend struct{}

func (nftBackend) conn(env *stage.Env) (*nftables.Conn, error) {
	var opts []nftables.ConnOption
	if env.NetNS.IsOpen() {
		opts = append(opts, nftables.WithNetNSFd(int(env.NetNS)))
	}
	return nftables.New(opts...)
}

func wantsDHCP6(cfg *machineconfig.MachineConfig) bool {
	for _, i := range cfg.Network.Interfaces {
		if i.DHCP6 {
			return true
		}
	}
	for _, v := range cfg.Network.VLANs {
		if v.DHCP6 {
			return true
		}
	}
	for _, b := range cfg.Network.Bonds {
		if b.DHCP6 {
			return true
		}
	}
	return false
}

func (b nftBackend) plan(env *stage.Env, p policy) ([]stage.Change, *ruleset, *nftables.Conn, error) {
	c, err := b.conn(env)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("nftables: open netlink connection: %w", err)
	}
	want := desiredRuleset(p, wantsDHCP6(env.Config))
	have, err := observe(c)
	if err != nil {
		return nil, nil, nil, err
	}
	return diffRulesets(want, have), want, c, nil
}

func (b nftBackend) Plan(env *stage.Env, p policy) ([]stage.Change, error) {
	changes, _, _, err := b.plan(env, p)
	return changes, err
}

// Apply replaces the whole table in one batch when anything differs: the
// batch adds the table (a no-op if present), deletes it and adds the new
// one, and the kernel commits it as one transaction, so no packet ever sees
// a half-built or missing ruleset.
func (b nftBackend) Apply(env *stage.Env, p policy) ([]stage.Change, error) {
	changes, want, c, err := b.plan(env, p)
	if err != nil || len(changes) == 0 {
		return changes, err
	}
	c.AddTable(kubebootTable)
	c.DelTable(kubebootTable)
	c.AddTable(kubebootTable)
	chain := c.AddChain(inputChainSpec())
	for _, s := range want.sets {
		set := *s.set
		if err := c.AddSet(&set, s.elems); err != nil {
			return nil, fmt.Errorf("nftables: set %s: %w", s.set.Name, err)
		}
	}
	for _, r := range want.rules {
		c.AddRule(&nftables.Rule{Table: kubebootTable, Chain: chain, Exprs: r.exprs, UserData: comment(r.comment)})
	}
	if err := c.Flush(); err != nil {
		return nil, fmt.Errorf("nftables: replace table inet %s: %w", TableName, err)
	}
	return changes, nil
}

func inputChainSpec() *nftables.Chain {
	policy := nftables.ChainPolicyDrop
	return &nftables.Chain{
		Name: inputChain, Table: kubebootTable, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &policy,
	}
}

func comment(s string) []byte {
	return userdata.AppendString(nil, userdata.TypeComment, s)
}

// observe reads table inet kubeboot back from the kernel; nil when absent.
func observe(c *nftables.Conn) (*ruleset, error) {
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("nftables: list inet tables: %w", err)
	}
	if !slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == TableName }) {
		return nil, nil
	}
	rs := &ruleset{}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("nftables: list chains of inet %s: %w", TableName, err)
	}
	want := inputChainSpec()
	var extraChains int
	for _, ch := range chains {
		if ch.Table.Name != TableName {
			continue
		}
		if ch.Name != inputChain {
			extraChains++
			continue
		}
		rs.chainOK = ch.Type == want.Type && ch.Hooknum != nil && *ch.Hooknum == *want.Hooknum &&
			ch.Priority != nil && *ch.Priority == *want.Priority && ch.Policy != nil && *ch.Policy == *want.Policy
	}
	rs.chainOK = rs.chainOK && extraChains == 0

	sets, err := c.GetSets(kubebootTable)
	if err != nil {
		return nil, fmt.Errorf("nftables: list sets of inet %s: %w", TableName, err)
	}
	for _, s := range sets {
		elems, err := c.GetSetElements(s)
		if err != nil {
			return nil, fmt.Errorf("nftables: read set %s of inet %s: %w", s.Name, TableName, err)
		}
		rs.sets = append(rs.sets, &setContent{set: s, elems: elems, items: describeElements(s, elems)})
	}
	slices.SortFunc(rs.sets, func(a, b *setContent) int { return strings.Compare(a.set.Name, b.set.Name) })

	if rs.chainOK || slices.ContainsFunc(chains, func(ch *nftables.Chain) bool { return ch.Table.Name == TableName && ch.Name == inputChain }) {
		rules, err := c.GetRules(kubebootTable, &nftables.Chain{Name: inputChain})
		if err != nil {
			return nil, fmt.Errorf("nftables: list rules of inet %s %s: %w", TableName, inputChain, err)
		}
		for _, r := range rules {
			text, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			rs.rules = append(rs.rules, ruleContent{comment: text, exprs: r.Exprs})
		}
	}
	return rs, nil
}

// describeElements turns set elements back into the words the desired side
// uses ("6443/tcp", "enp1s0", "172.16.0.0/24"), so the plan can say exactly
// which ports, interfaces or sources change.
func describeElements(s *nftables.Set, elems []nftables.SetElement) []string {
	if !s.Interval {
		var out []string
		for _, e := range elems {
			out = append(out, describeKey(s, e.Key))
		}
		slices.Sort(out)
		return out
	}
	sorted := slices.Clone(elems)
	// Where one range ends right before the next starts, the end and the
	// start share a key: the end sorts first, closing the earlier range.
	slices.SortFunc(sorted, func(a, b nftables.SetElement) int {
		if c := bytes.Compare(a.Key, b.Key); c != 0 {
			return c
		}
		if a.IntervalEnd == b.IntervalEnd {
			return 0
		}
		if a.IntervalEnd {
			return -1
		}
		return 1
	})
	var out []string
	for i := 0; i < len(sorted); i++ {
		if sorted[i].IntervalEnd {
			continue // the kernel's leading end marker, or a stray end
		}
		start := sorted[i].Key
		var last []byte
		if i+1 < len(sorted) && sorted[i+1].IntervalEnd {
			last = decrement(sorted[i+1].Key)
			i++
		} else {
			last = bytes.Repeat([]byte{0xff}, len(start))
		}
		out = append(out, describeRange(s, start, last))
	}
	return out
}

func decrement(b []byte) []byte {
	out := slices.Clone(b)
	for i := len(out) - 1; i >= 0; i-- {
		out[i]--
		if out[i] != 0xff {
			break
		}
	}
	return out
}

func describeKey(s *nftables.Set, key []byte) string {
	if s.KeyType.Name == nftables.TypeIFName.Name {
		return string(bytes.TrimRight(key, "\x00"))
	}
	return fmt.Sprintf("%x", key)
}

func describeRange(s *nftables.Set, first, last []byte) string {
	switch s.KeyType.Name {
	case nftables.TypeInetService.Name:
		proto, _, _ := strings.Cut(s.Name, "_")
		return Port{Proto: proto, First: binary.BigEndian.Uint16(first), Last: binary.BigEndian.Uint16(last)}.String()
	case nftables.TypeIPAddr.Name, nftables.TypeIP6Addr.Name:
		a, _ := netip.AddrFromSlice(first)
		z, _ := netip.AddrFromSlice(last)
		for bits := 0; bits <= a.BitLen(); bits++ {
			if pfx := netip.PrefixFrom(a, bits); pfx.Masked().Addr() == a && lastAddr(pfx) == z {
				return pfx.String()
			}
		}
		return a.String() + "-" + z.String()
	}
	return fmt.Sprintf("%x-%x", first, last)
}

// diffRulesets says what turning have into want changes; nothing when the
// kernel already holds exactly the desired table.
func diffRulesets(want, have *ruleset) []stage.Change {
	var changes []stage.Change
	add := func(format string, args ...any) {
		changes = append(changes, stage.Change("nftables: "+fmt.Sprintf(format, args...)))
	}
	if have == nil {
		add("create table inet %s (input policy drop)", TableName)
		have = &ruleset{chainOK: true}
	}
	if !have.chainOK {
		add("restore chain %s (filter hook input priority 0 policy drop)", inputChain)
	}

	haveSets := map[string]*setContent{}
	for _, s := range have.sets {
		haveSets[s.set.Name] = s
	}
	for _, w := range want.sets {
		h := haveSets[w.set.Name]
		delete(haveSets, w.set.Name)
		var items []string
		if h != nil {
			items = h.items
			if h.set.KeyType.Name != w.set.KeyType.Name || h.set.Interval != w.set.Interval {
				add("restore set %s (type %s)", w.set.Name, w.set.KeyType.Name)
			}
		}
		verbAdd, verbDel := setVerbs(w.set.Name)
		for _, it := range w.items {
			if !slices.Contains(items, it) {
				add("%s %s", verbAdd, it)
			}
		}
		for _, it := range items {
			if !slices.Contains(w.items, it) {
				add("%s %s", verbDel, it)
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(haveSets)) {
		h := haveSets[name]
		_, verbDel := setVerbs(name)
		for _, it := range h.items {
			add("%s %s", verbDel, it)
		}
		if len(h.items) == 0 {
			add("delete empty set %s", name)
		}
	}

	wantComments := make([]string, len(want.rules))
	for i, r := range want.rules {
		wantComments[i] = r.comment
	}
	haveComments := make([]string, len(have.rules))
	for i, r := range have.rules {
		haveComments[i] = r.comment
	}
	for _, c := range wantComments {
		if !slices.Contains(haveComments, c) {
			add("add rule %q", c)
		}
	}
	for _, c := range haveComments {
		if !slices.Contains(wantComments, c) {
			add("remove rule %q", c)
		}
	}
	if slices.Equal(wantComments, haveComments) {
		for i := range want.rules {
			if !sameExprs(want.rules[i].exprs, have.rules[i].exprs) {
				add("restore rule %q (changed outside kubeboot)", want.rules[i].comment)
			}
		}
	} else if len(changes) == 0 {
		add("reorder rules of chain %s", inputChain)
	}
	return changes
}

func setVerbs(name string) (string, string) {
	switch {
	case strings.HasSuffix(name, "_ports"):
		return "open", "close"
	case name == "ifaces":
		return "accept ports on interface", "stop accepting ports on interface"
	case strings.HasPrefix(name, "src"):
		return "accept ports from", "stop accepting ports from"
	case strings.HasPrefix(name, "pods"):
		return "trust pod network", "stop trusting pod network"
	}
	return "add to set " + name, "remove from set " + name
}

// sameExprs compares rules by their netlink encoding. Set lookups are
// compared by name only: the batch-local set ID is not dumped back.
func sameExprs(a, b []expr.Any) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		ea, err1 := marshalForCompare(a[i])
		eb, err2 := marshalForCompare(b[i])
		if err1 != nil || err2 != nil || !bytes.Equal(ea, eb) {
			return false
		}
	}
	return true
}

func marshalForCompare(e expr.Any) ([]byte, error) {
	if l, ok := e.(*expr.Lookup); ok {
		c := *l
		c.SetID = 0
		e = &c
	}
	return expr.Marshal(byte(nftables.TableFamilyINet), e)
}

func (nftBackend) name() string { return string(machineconfig.BackendNftables) }
