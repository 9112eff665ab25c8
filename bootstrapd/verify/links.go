package verify

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"kubeboot.dev/kubeboot/bootstrapd/firewall"
	"kubeboot.dev/kubeboot/bootstrapd/network"
	"kubeboot.dev/kubeboot/bootstrapd/stage"
)

// podBridge is the bridge the pod network's CNI plugin puts the node's
// pods on, created with the first pod outside the host network.
const podBridge = firewall.PodBridge

// maxLinks bounds the links listed.
const maxLinks = 2000

// netlinkHandle is a handle in the node's network namespace whose socket
// reads are bounded by the request timeout.
func (n *node) netlinkHandle() (*netlink.Handle, error) {
	h, err := netlink.NewHandleAt(n.o.NetNS)
	if err != nil {
		return nil, fmt.Errorf("netlink in the node's network namespace: %w", err)
	}
	if err := h.SetSocketTimeout(n.o.Timeout); err != nil {
		h.Close()
		return nil, err
	}
	return h, nil
}

// dump retries a netlink dump the kernel interrupted because the table
// changed under it.
func dump[T any](f func() (T, error)) (T, error) {
	v, err := f()
	for i := 0; i < 5 && errors.Is(err, netlink.ErrDumpInterrupted); i++ {
		v, err = f()
	}
	return v, err
}

// stageEnv is the environment a stage's own code reads the node through,
// with the stage's state directory.
func (n *node) stageEnv(name string) *stage.Env {
	env := *n.env
	env.StateDir = n.st.StageDir(name)
	return &env
}

// expectNetwork is what the network stage keeps in the kernel for the config.
func (n *node) expectNetwork() (*network.Expectation, error) {
	return network.Expect(n.stageEnv("network"))
}

func (n *node) links(context.Context) Section {
	s := Section{Name: "links", Title: "Links (ip -d link): the config's interfaces, the pod bridge, a veth per pod"}
	h, err := n.netlinkHandle()
	if err != nil {
		s.fail("netlink", "readable", err.Error())
		return s
	}
	defer h.Close()
	all, err := dump(h.LinkList)
	if err != nil {
		s.fail("the node's links", "listed", err.Error())
		return s
	}
	all = first(all, maxLinks)
	byName := map[string]netlink.Link{}
	byIndex := map[int]netlink.Link{}
	for _, l := range all {
		byName[l.Attrs().Name] = l
		byIndex[l.Attrs().Index] = l
	}
	for _, l := range all {
		s.Found = append(s.Found, describeLink(l, byIndex))
	}

	exp, err := n.expectNetwork()
	if err != nil {
		s.fail("the config's links", "known", err.Error())
	} else {
		for _, e := range exp.Links {
			checkLink(&s, e, byName[e.Name], byIndex)
		}
	}
	n.podLinks(&s, byName, byIndex)
	return s
}

// checkLink holds one configured link to the config: present, its MAC,
// up with carrier, its MTU, its bond.
func checkLink(s *Section, e network.ExpectedLink, l netlink.Link, byIndex map[int]netlink.Link) {
	name := fmt.Sprintf("%s %s (%s)", e.Kind, e.Name, e.Field)
	if l == nil {
		if e.Optional {
			s.pass(name, "present, or absent as it is optional", "absent (optional)")
			return
		}
		s.fail(name, "present", "no link named "+e.Name)
		return
	}
	s.pass(name, "present", fmt.Sprintf("index %d, %s", l.Attrs().Index, l.Type()))
	if want := map[string]string{"bond": "bond", "vlan": "vlan"}[e.Kind]; want != "" {
		s.check(e.Name+" kind", l.Type() == want, want, l.Type())
	}
	if e.MAC != "" {
		got := network.HardwareAddr(l).String()
		s.check(e.Name+" MAC address", strings.EqualFold(got, e.MAC), strings.ToLower(e.MAC), got)
	}
	s.check(e.Name+" up", isUp(l), "UP,LOWER_UP (up, with carrier)", flagsOf(l))
	if e.MTU > 0 {
		s.check(e.Name+" MTU", l.Attrs().MTU == e.MTU, fmt.Sprint(e.MTU), fmt.Sprint(l.Attrs().MTU))
	}
	if e.Master != "" {
		master := "none"
		if m := byIndex[l.Attrs().MasterIndex]; m != nil {
			master = m.Attrs().Name
		}
		s.check(e.Name+" in bond "+e.Master, master == e.Master, "master "+e.Master, "master "+master)
	}
}

// podLinks checks the pod bridge and, for each running pod outside the
// host network, that the peer of the pod's interface is a veth on it.
func (n *node) podLinks(s *Section, byName map[string]netlink.Link, byIndex map[int]netlink.Link) {
	if n.criErr != nil {
		s.fail("pod links", "the runtime's pod sandboxes known", n.criErr.Error())
		return
	}
	var pods []sandbox
	for _, sb := range n.cri.sandboxes {
		if sb.Ready && !sb.HostNetwork {
			pods = append(pods, sb)
		}
	}
	bridgeName := "bridge " + podBridge
	br := byName[podBridge]
	if len(pods) == 0 {
		found := "no running pod outside the host network on this node"
		if br != nil {
			found += "; " + podBridge + " is " + flagsOf(br)
		}
		s.pass(bridgeName, "a bridge, up, once a pod runs outside the host network", found)
		return
	}
	switch {
	case br == nil:
		s.fail(bridgeName, "a bridge, up", "no link named "+podBridge)
	case br.Type() != "bridge":
		s.fail(bridgeName, "a bridge, up", "a "+br.Type())
	default:
		s.check(bridgeName, br.Attrs().Flags&net.FlagUp != 0, "a bridge, up", "bridge, "+flagsOf(br))
	}
	for _, sb := range pods {
		name := fmt.Sprintf("pod %s: a veth on %s", sb.pod(), podBridge)
		expected := "the peer of the pod's interface, a veth in the node's namespace, master " + podBridge
		peer, err := n.podPeer(sb)
		if err != nil {
			s.fail(name, expected, err.Error())
			continue
		}
		l := byIndex[peer]
		if l == nil {
			s.fail(name, expected, fmt.Sprintf("the pod's interface pairs with index %d, which is not in the node's namespace", peer))
			continue
		}
		master := "no master"
		if m := byIndex[l.Attrs().MasterIndex]; m != nil {
			master = "master " + m.Attrs().Name
		}
		ok := l.Type() == "veth" && br != nil && l.Attrs().MasterIndex == br.Attrs().Index
		s.check(name, ok, expected, fmt.Sprintf("%s (%s, %s, %s)", l.Attrs().Name, l.Type(), master, flagsOf(l)))
	}
}

// podPeer is the index, in the node's namespace, of the peer of the
// pod's veth, read inside the pod's namespace (through its process).
func (n *node) podPeer(sb sandbox) (int, error) {
	if sb.PID <= 0 {
		return 0, errors.New("the runtime reported no pid for the sandbox")
	}
	ns, err := netns.GetFromPath(n.env.ProcPath(fmt.Sprintf("%d/ns/net", sb.PID)))
	if err != nil {
		return 0, fmt.Errorf("the pod's namespace: %w", err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return 0, fmt.Errorf("netlink in the pod's namespace: %w", err)
	}
	defer h.Close()
	if err := h.SetSocketTimeout(n.o.Timeout); err != nil {
		return 0, err
	}
	links, err := dump(h.LinkList)
	if err != nil {
		return 0, fmt.Errorf("the pod's links: %w", err)
	}
	for _, l := range links {
		if l.Type() == "veth" && l.Attrs().ParentIndex > 0 {
			return l.Attrs().ParentIndex, nil
		}
	}
	names := make([]string, 0, len(links))
	for _, l := range links {
		names = append(names, l.Attrs().Name+" ("+l.Type()+")")
	}
	return 0, fmt.Errorf("no veth in the pod's namespace: %s", strings.Join(names, ", "))
}

// describeLink is one link as `ip -d link` shows it, on one line.
func describeLink(l netlink.Link, byIndex map[int]netlink.Link) string {
	a := l.Attrs()
	name := a.Name
	if a.ParentIndex > 0 {
		if p := byIndex[a.ParentIndex]; p != nil && a.NetNsID < 0 {
			name += "@" + p.Attrs().Name
		} else {
			name += fmt.Sprintf("@if%d", a.ParentIndex)
		}
	}
	parts := []string{fmt.Sprintf("%d: %s: <%s> mtu %d", a.Index, name, flagsOf(l), a.MTU)}
	if m := byIndex[a.MasterIndex]; m != nil {
		parts = append(parts, "master "+m.Attrs().Name)
	}
	parts = append(parts, "state "+strings.ToUpper(a.OperState.String()))
	if hw := network.HardwareAddr(l); len(hw) > 0 {
		parts = append(parts, "link/ether "+hw.String())
	}
	if a.NetNsID >= 0 {
		parts = append(parts, fmt.Sprintf("link-netnsid %d", a.NetNsID))
	}
	parts = append(parts, l.Type())
	return strings.Join(parts, " ")
}

func isUp(l netlink.Link) bool {
	return l.Attrs().Flags&net.FlagUp != 0 && l.Attrs().RawFlags&unix.IFF_LOWER_UP != 0
}

// flagsOf names the link's flags as `ip link` does.
func flagsOf(l netlink.Link) string {
	raw := l.Attrs().RawFlags
	var out []string
	for _, f := range []struct {
		bit  uint32
		name string
	}{
		{unix.IFF_LOOPBACK, "LOOPBACK"}, {unix.IFF_BROADCAST, "BROADCAST"}, {unix.IFF_POINTOPOINT, "POINTOPOINT"},
		{unix.IFF_MULTICAST, "MULTICAST"}, {unix.IFF_NOARP, "NOARP"}, {unix.IFF_MASTER, "MASTER"},
		{unix.IFF_SLAVE, "SLAVE"}, {unix.IFF_UP, "UP"}, {unix.IFF_LOWER_UP, "LOWER_UP"},
	} {
		if raw&f.bit != 0 {
			out = append(out, f.name)
		}
	}
	if raw&unix.IFF_UP != 0 && raw&unix.IFF_LOWER_UP == 0 {
		out = slices.Insert(out, 0, "NO-CARRIER")
	}
	return strings.Join(out, ",")
}
