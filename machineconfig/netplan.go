package machineconfig

import (
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The netplan (cloud-init network-config v2) subset kubeboot understands.
// Keys are netplan's; conversion to the internal model is in
// decodeNetplan. See docs/machine-config.md for the mapping.

type netplanMatch struct {
	MACAddress string `yaml:"macaddress"`
	Name       string `yaml:"name"`
}

type netplanRoute struct {
	To     string `yaml:"to"`
	Via    string `yaml:"via"`
	Metric *int   `yaml:"metric"`
}

type netplanNameservers struct {
	Addresses []string `yaml:"addresses"`
	Search    []string `yaml:"search"`
}

type netplanCommon struct {
	DHCP4       bool               `yaml:"dhcp4"`
	DHCP6       bool               `yaml:"dhcp6"`
	Addresses   []string           `yaml:"addresses"`
	Gateway4    string             `yaml:"gateway4"`
	Gateway6    string             `yaml:"gateway6"`
	Routes      []netplanRoute     `yaml:"routes"`
	Nameservers netplanNameservers `yaml:"nameservers"`
	MTU         int                `yaml:"mtu"`
	Optional    bool               `yaml:"optional"`
}

type netplanEthernet struct {
	Match         *netplanMatch `yaml:"match"`
	SetName       string        `yaml:"set-name"`
	netplanCommon `yaml:",inline"`
}

type netplanVLAN struct {
	ID            int    `yaml:"id"`
	Link          string `yaml:"link"`
	netplanCommon `yaml:",inline"`
}

type netplanBondParameters struct {
	Mode               string `yaml:"mode"`
	MIIMonitorInterval int    `yaml:"mii-monitor-interval"`
	LACPRate           string `yaml:"lacp-rate"`
	TransmitHashPolicy string `yaml:"transmit-hash-policy"`
	Primary            string `yaml:"primary"`
}

type netplanBond struct {
	Interfaces    []string              `yaml:"interfaces"`
	Parameters    netplanBondParameters `yaml:"parameters"`
	netplanCommon `yaml:",inline"`
}

var netplanTopKeys = []string{"version", "renderer", "ethernets", "vlans", "bonds"}

// decodeNetplan converts the network-config v2 mapping n (display path
// display) into net, whose internal path is internal. Positions are recorded
// under the netplan paths and aliased from the internal ones, so later
// validation problems point at what the user wrote.
func (d *decoder) decodeNetplan(n *yaml.Node, display, internal string, net *Network) {
	d.netplan, d.yaml11Bools = true, true
	defer func() { d.netplan, d.yaml11Bools = false, false }()
	d.alias(internal, display)

	type entry[T any] struct {
		id   string
		path string
		v    T
	}
	var (
		ethernets []entry[netplanEthernet]
		vlans     []entry[netplanVLAN]
		bonds     []entry[netplanBond]
	)
	// devices decodes an id -> settings mapping, keeping the file's order.
	devices := func(n *yaml.Node, path string, add func(id, p string, v *yaml.Node)) {
		if n = d.resolve(n); n == nil || isNull(n) {
			return
		}
		if n.Kind != yaml.MappingNode {
			d.fail(path, pos(n), "expected a mapping of device IDs to settings, found %s", describe(n))
			return
		}
		d.eachEntry(n, path, func(id string) string { return netplanID(path, id) }, func(id string, k, v *yaml.Node) {
			p := netplanID(path, id)
			d.record(p, k, v)
			add(id, p, v)
		})
	}
	d.eachEntry(n, display, func(key string) string { return join(display, key) }, func(key string, k, v *yaml.Node) {
		p := join(display, key)
		d.record(p, k, v)
		switch key {
		case "version":
			var version int
			d.decode(v, reflect.ValueOf(&version).Elem(), p)
			if version != 2 && !d.bad[p] {
				d.fail(p, pos(v), "only network-config version 2 is supported")
			}
		case "renderer":
			// Which backend netplan would use; kubeboot configures links itself.
			var renderer string
			d.decode(v, reflect.ValueOf(&renderer).Elem(), p)
		case "ethernets":
			devices(v, p, func(id, p string, v *yaml.Node) {
				e := entry[netplanEthernet]{id: id, path: p}
				d.decode(v, reflect.ValueOf(&e.v).Elem(), p)
				ethernets = append(ethernets, e)
			})
		case "vlans":
			devices(v, p, func(id, p string, v *yaml.Node) {
				e := entry[netplanVLAN]{id: id, path: p}
				d.decode(v, reflect.ValueOf(&e.v).Elem(), p)
				vlans = append(vlans, e)
			})
		case "bonds":
			devices(v, p, func(id, p string, v *yaml.Node) {
				e := entry[netplanBond]{id: id, path: p}
				d.decode(v, reflect.ValueOf(&e.v).Elem(), p)
				bonds = append(bonds, e)
			})
		case "interfaces", "nameservers":
			d.fail(p, pos(k), "%q belongs to the native network form; remove \"version\" to use it, or write ethernets/vlans/bonds", key)
		default:
			d.unknownKey(p, k, key, netplanTopKeys)
		}
	})

	// Other sections refer to devices by netplan ID; the internal model uses
	// the link's final name.
	names := map[string]string{}
	for _, e := range ethernets {
		names[e.id] = netplanLinkName(e.id, e.v)
	}
	for _, e := range vlans {
		names[e.id] = e.id
	}
	for _, e := range bonds {
		names[e.id] = e.id
	}
	rename := func(id string) string {
		if n, ok := names[id]; ok {
			return n
		}
		return id
	}
	renameAll := func(ids []string) []string {
		if ids == nil {
			return nil
		}
		out := make([]string, len(ids))
		for i, id := range ids {
			out[i] = rename(id)
		}
		return out
	}

	for i, e := range ethernets {
		ip := index(join(internal, "interfaces"), i)
		d.alias(ip, e.path)
		iface := Interface{Name: names[e.id]}
		switch {
		case e.v.SetName != "":
			d.alias(ip+".name", e.path+".set-name")
		case iface.Name != e.id:
			d.alias(ip+".name", e.path+".match.name")
		default:
			d.alias(ip+".name", e.path)
		}
		if e.v.SetName != "" {
			if e.v.Match == nil {
				d.fail(e.path+".set-name", d.where[e.path+".set-name"].key, "set-name needs a match (macaddress or name) to select the link to rename")
			}
		}
		if m := e.v.Match; m != nil {
			d.alias(ip+".match", e.path+".match")
			d.alias(ip+".match.macAddress", e.path+".match.macaddress")
			d.alias(ip+".match.name", e.path+".match.name")
			if m.MACAddress != "" || e.v.SetName != "" {
				iface.Match = &Match{MACAddress: m.MACAddress, Name: m.Name}
			} else if m.Name == "" {
				iface.Match = &Match{}
			}
		}
		iface.IPConfig = d.netplanIPConfig(e.v.netplanCommon, e.path, ip, net, internal)
		net.Interfaces = append(net.Interfaces, iface)
	}
	for i, e := range vlans {
		ip := index(join(internal, "vlans"), i)
		d.alias(ip, e.path)
		d.alias(ip+".name", e.path)
		d.alias(ip+".id", e.path+".id")
		d.alias(ip+".link", e.path+".link")
		vlan := VLAN{Name: e.id, ID: e.v.ID, Link: rename(e.v.Link)}
		vlan.IPConfig = d.netplanIPConfig(e.v.netplanCommon, e.path, ip, net, internal)
		net.VLANs = append(net.VLANs, vlan)
	}
	for i, e := range bonds {
		ip := index(join(internal, "bonds"), i)
		d.alias(ip, e.path)
		d.alias(ip+".name", e.path)
		d.alias(ip+".interfaces", e.path+".interfaces")
		for j := range e.v.Interfaces {
			d.alias(index(ip+".interfaces", j), index(e.path+".interfaces", j))
		}
		pp, ep := ip+".parameters", e.path+".parameters"
		d.alias(pp, ep)
		for native, np := range map[string]string{"mode": "mode", "miiMonitorInterval": "mii-monitor-interval",
			"lacpRate": "lacp-rate", "transmitHashPolicy": "transmit-hash-policy", "primary": "primary"} {
			d.alias(pp+"."+native, ep+"."+np)
		}
		p := e.v.Parameters
		bond := Bond{
			Name:       e.id,
			Interfaces: renameAll(e.v.Interfaces),
			Parameters: BondParameters{
				Mode:               p.Mode,
				MIIMonitorInterval: p.MIIMonitorInterval,
				LACPRate:           p.LACPRate,
				TransmitHashPolicy: p.TransmitHashPolicy,
				Primary:            rename(p.Primary),
			},
		}
		bond.IPConfig = d.netplanIPConfig(e.v.netplanCommon, e.path, ip, net, internal)
		net.Bonds = append(net.Bonds, bond)
	}
}

// netplanLinkName is the internal name of an ethernet: its set-name, else
// the exact kernel name it matches, else its netplan ID (kubeboot renames a
// link matched by MAC alone to its ID, so that the ID other sections use is
// also the kernel name; netplan would keep the kernel's name).
func netplanLinkName(id string, e netplanEthernet) string {
	switch {
	case e.SetName != "":
		return e.SetName
	case e.Match != nil && e.Match.MACAddress == "" && e.Match.Name != "":
		return e.Match.Name
	}
	return id
}

// netplanID is the display path of a device: IDs are usually plain names.
func netplanID(path, id string) string {
	if id == "" || strings.ContainsAny(id, ".[]\" ") {
		return mapKey(path, id)
	}
	return join(path, id)
}

// netplanIPConfig converts the layer-3 settings of one device; its
// nameservers are merged into the network-wide ones.
func (d *decoder) netplanIPConfig(c netplanCommon, path, ip string, net *Network, internal string) IPConfig {
	out := IPConfig{MTU: c.MTU, DHCP4: c.DHCP4, DHCP6: c.DHCP6, Optional: c.Optional, Addresses: c.Addresses}
	for _, f := range []string{"mtu", "dhcp4", "dhcp6", "optional", "addresses", "routes"} {
		d.alias(ip+"."+f, path+"."+f)
	}
	for i := range c.Addresses {
		d.alias(index(ip+".addresses", i), index(path+".addresses", i))
	}
	for i, r := range c.Routes {
		rp, np := index(ip+".routes", i), index(path+".routes", i)
		d.alias(rp, np)
		d.alias(rp+".to", np+".to")
		d.alias(rp+".via", np+".via")
		d.alias(rp+".metric", np+".metric")
		to := r.To
		if to == "0.0.0.0/0" || to == "::/0" {
			to = "default"
		}
		out.Routes = append(out.Routes, Route{To: to, Via: r.Via, Metric: r.Metric})
	}
	for _, gw := range []struct{ key, via string }{{"gateway4", c.Gateway4}, {"gateway6", c.Gateway6}} {
		if gw.via == "" {
			continue
		}
		rp := index(ip+".routes", len(out.Routes))
		for _, sub := range []string{"", ".to", ".via"} {
			d.alias(rp+sub, path+"."+gw.key)
		}
		out.Routes = append(out.Routes, Route{To: "default", Via: gw.via})
	}
	ns := &net.Nameservers
	for i, a := range c.Nameservers.Addresses {
		if !slices.Contains(ns.Addresses, a) {
			d.alias(index(join(internal, "nameservers.addresses"), len(ns.Addresses)), index(path+".nameservers.addresses", i))
			ns.Addresses = append(ns.Addresses, a)
		}
	}
	for i, s := range c.Nameservers.Search {
		if !slices.Contains(ns.Search, s) {
			d.alias(index(join(internal, "nameservers.search"), len(ns.Search)), index(path+".nameservers.search", i))
			ns.Search = append(ns.Search, s)
		}
	}
	return out
}
