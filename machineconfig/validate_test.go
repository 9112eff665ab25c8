package machineconfig

import (
	"strings"
	"testing"
)

func intp(n int) *int { return &n }

// Every semantic rule, one row each: the example config of the given role
// with one change must fail at exactly that path with that message.
func TestValidationRules(t *testing.T) {
	iface := func(c *MachineConfig, i int) *Interface { return &c.Network.Interfaces[i] }
	withBond := func(c *MachineConfig) {
		c.Network.Interfaces = append(c.Network.Interfaces,
			Interface{Name: "eth3"}, Interface{Name: "eth4"})
		c.Network.Bonds = []Bond{{Name: "bond0", Interfaces: []string{"eth3", "eth4"},
			Parameters: BondParameters{Mode: "802.3ad", LACPRate: "fast"}}}
	}
	withVLAN := func(c *MachineConfig) {
		c.Network.VLANs = []VLAN{{Name: "vlan10", ID: 10, Link: "enp2s0"}}
	}
	rules := []struct {
		name   string
		role   string // example to start from: init, control-plane or worker
		change func(c *MachineConfig)
		path   string
		msg    string
	}{
		{"apiVersion wrong", "init", func(c *MachineConfig) { c.APIVersion = "kubeboot.dev/v1" }, "apiVersion", `unsupported apiVersion "kubeboot.dev/v1"; expected kubeboot.dev/v1alpha1`},
		{"apiVersion missing", "init", func(c *MachineConfig) { c.APIVersion = "" }, "apiVersion", "apiVersion is required"},
		{"kind wrong", "init", func(c *MachineConfig) { c.Kind = "Machineconfig" }, "kind", `did you mean "MachineConfig"`},
		{"role master", "init", func(c *MachineConfig) { c.Role = "master" }, "role", `unknown role "master"; must be one of init, control-plane, worker; did you mean "control-plane"?`},
		{"role typo", "init", func(c *MachineConfig) { c.Role = "wroker" }, "role", `did you mean "worker"?`},
		{"role missing", "init", func(c *MachineConfig) { c.Role = "" }, "role", "role is required"},
		{"hostname missing", "init", func(c *MachineConfig) { c.Hostname = "" }, "hostname", "hostname is required"},
		{"hostname upper case", "init", func(c *MachineConfig) { c.Hostname = "Controller.home.local" }, "hostname", "must be lower case"},
		{"hostname bad label", "init", func(c *MachineConfig) { c.Hostname = "-controller.home" }, "hostname", "not a valid RFC 1123 host name"},
		{"hostname underscore", "init", func(c *MachineConfig) { c.Hostname = "my_host" }, "hostname", "not a valid RFC 1123 host name"},
		{"hosts bad ip", "init", func(c *MachineConfig) { c.Hosts[0].IP = "172.16.0.300" }, "hosts[0].ip", `invalid IP address "172.16.0.300"`},
		{"hosts no names", "init", func(c *MachineConfig) { c.Hosts[0].Names = nil }, "hosts[0].names", "at least one name"},
		{"hosts bad name", "init", func(c *MachineConfig) { c.Hosts[0].Names = []string{"a..b"} }, "hosts[0].names[0]", "not a valid RFC 1123"},
		{"link name too long", "init", func(c *MachineConfig) { iface(c, 0).Name = "enp1s0abcdefghij" }, "network.interfaces[0].name", "longer than 15"},
		{"link name missing", "init", func(c *MachineConfig) { iface(c, 0).Name = "" }, "network.interfaces[0].name", "name is required"},
		{"link name slash", "init", func(c *MachineConfig) { iface(c, 0).Name = "en/p1" }, "network.interfaces[0].name", "contains '/'"},
		{"duplicate interface", "init", func(c *MachineConfig) { iface(c, 1).Name = "enp1s0" }, "network.interfaces[1].name", `duplicate link name "enp1s0" (also network.interfaces[0])`},
		{"vlan name clashes", "init", func(c *MachineConfig) { withVLAN(c); c.Network.VLANs[0].Name = "enp1s0" }, "network.vlans[0].name", `duplicate link name "enp1s0"`},
		{"bad MAC", "init", func(c *MachineConfig) { iface(c, 0).Match.MACAddress = "52:54:00:80:ad" }, "network.interfaces[0].match.macAddress", `invalid MAC address "52:54:00:80:ad"`},
		{"duplicate MAC", "init", func(c *MachineConfig) { iface(c, 1).Match.MACAddress = "52:54:00:80:AD:B6" }, "network.interfaces[1].match.macAddress", "duplicate MAC address"},
		{"empty match", "init", func(c *MachineConfig) { iface(c, 0).Match = &Match{} }, "network.interfaces[0].match", "match needs macAddress or name"},
		{"match glob", "init", func(c *MachineConfig) { iface(c, 0).Match.Name = "en*" }, "network.interfaces[0].match.name", "glob characters"},
		{"bad IP", "init", func(c *MachineConfig) { iface(c, 0).Addresses[0] = "172.16.0.311/24" }, "network.interfaces[0].addresses[0]", `invalid IP address "172.16.0.311"`},
		{"no prefix", "init", func(c *MachineConfig) { iface(c, 0).Addresses[0] = "172.16.0.11" }, "network.interfaces[0].addresses[0]", "needs a prefix length"},
		{"prefix /33", "init", func(c *MachineConfig) { iface(c, 1).Addresses[0] = "10.0.0.11/33" }, "network.interfaces[1].addresses[0]", "prefix length /33 is out of range for IPv4 (0-32)"},
		{"prefix /129", "init", func(c *MachineConfig) { iface(c, 1).Addresses = append(iface(c, 1).Addresses, "fd00::1/129") }, "network.interfaces[1].addresses[1]", "out of range for IPv6 (0-128)"},
		{"bad prefix text", "init", func(c *MachineConfig) { iface(c, 1).Addresses[0] = "10.0.0.11/x" }, "network.interfaces[1].addresses[0]", `invalid prefix length "x"`},
		{"negative prefix", "init", func(c *MachineConfig) { iface(c, 1).Addresses[0] = "10.0.0.11/-5" }, "network.interfaces[1].addresses[0]", `invalid prefix length "-5"`},
		{"network address", "init", func(c *MachineConfig) { iface(c, 1).Addresses[0] = "10.0.0.0/24" }, "network.interfaces[1].addresses[0]", "is the network address of 10.0.0.0/24"},
		{"broadcast address", "init", func(c *MachineConfig) { iface(c, 1).Addresses[0] = "10.0.0.255/24" }, "network.interfaces[1].addresses[0]", "is the broadcast address"},
		{"IPv6 anycast", "init", func(c *MachineConfig) { iface(c, 1).Addresses = append(iface(c, 1).Addresses, "fd00::/64") }, "network.interfaces[1].addresses[1]", "subnet-router anycast"},
		{"loopback address", "init", func(c *MachineConfig) { iface(c, 1).Addresses[0] = "127.0.0.2/8" }, "network.interfaces[1].addresses[0]", "not a unicast host address"},
		{"duplicate address", "init", func(c *MachineConfig) { iface(c, 1).Addresses[0] = "172.16.0.11/24" }, "network.interfaces[1].addresses[0]", "already assigned at network.interfaces[0].addresses[0]"},
		{"route to missing", "init", func(c *MachineConfig) { iface(c, 0).Routes[0].To = "" }, "network.interfaces[0].routes[0].to", "to is required"},
		{"route to bad", "init", func(c *MachineConfig) { iface(c, 0).Routes[0].To = "10.5.0.0/40" }, "network.interfaces[0].routes[0].to", "out of range"},
		{"route to host bits", "init", func(c *MachineConfig) { iface(c, 0).Routes[0].To = "10.5.0.1/16" }, "network.interfaces[0].routes[0].to", "has host bits set; did you mean 10.5.0.0/16?"},
		{"route via bad", "init", func(c *MachineConfig) { iface(c, 0).Routes[0].Via = "gateway" }, "network.interfaces[0].routes[0].via", `invalid gateway "gateway"`},
		{"route via unreachable", "init", func(c *MachineConfig) { iface(c, 0).Routes[0].Via = "172.16.1.254" }, "network.interfaces[0].routes[0].via", "gateway 172.16.1.254 is not reachable"},
		{"route via own address", "init", func(c *MachineConfig) { iface(c, 0).Routes[0].Via = "172.16.0.11" }, "network.interfaces[0].routes[0].via", "this node's own address"},
		{"route family mix", "init", func(c *MachineConfig) { iface(c, 0).Routes[0].To = "fd00::/8" }, "network.interfaces[0].routes[0].via", "different IP families"},
		{"route metric negative", "init", func(c *MachineConfig) { iface(c, 0).Routes[0].Metric = intp(-1) }, "network.interfaces[0].routes[0].metric", "metric -1 is out of range"},
		{"routeMetric negative", "init", func(c *MachineConfig) { iface(c, 0).RouteMetric = intp(-5) }, "network.interfaces[0].routeMetric", "metric -5 is out of range"},
		{"MTU too small", "init", func(c *MachineConfig) { iface(c, 0).MTU = 67 }, "network.interfaces[0].mtu", "MTU 67 is out of range (68-65535)"},
		{"MTU too large", "init", func(c *MachineConfig) { iface(c, 0).MTU = 65536 }, "network.interfaces[0].mtu", "out of range"},
		{"vlan id 0", "init", func(c *MachineConfig) { withVLAN(c); c.Network.VLANs[0].ID = 0 }, "network.vlans[0].id", "VLAN id 0 is out of range (1-4094)"},
		{"vlan id 4095", "init", func(c *MachineConfig) { withVLAN(c); c.Network.VLANs[0].ID = 4095 }, "network.vlans[0].id", "out of range"},
		{"vlan link missing", "init", func(c *MachineConfig) { withVLAN(c); c.Network.VLANs[0].Link = "" }, "network.vlans[0].link", "link is required"},
		{"vlan link unknown", "init", func(c *MachineConfig) { withVLAN(c); c.Network.VLANs[0].Link = "enp3s0" }, "network.vlans[0].link", `link "enp3s0" is not an interface or bond of this config; did you mean "enp1s0"?`},
		{"vlan on vlan", "init", func(c *MachineConfig) {
			withVLAN(c)
			c.Network.VLANs = append(c.Network.VLANs, VLAN{Name: "vlan11", ID: 11, Link: "vlan10"})
		}, "network.vlans[1].link", "is a VLAN"},
		{"vlan id reused", "init", func(c *MachineConfig) {
			withVLAN(c)
			c.Network.VLANs = append(c.Network.VLANs, VLAN{Name: "vlan10b", ID: 10, Link: "enp2s0"})
		}, "network.vlans[1].id", "already used by network.vlans[0]"},
		{"bond without members", "init", func(c *MachineConfig) { withBond(c); c.Network.Bonds[0].Interfaces = nil }, "network.bonds[0].interfaces", "at least one member"},
		{"bond member unknown", "init", func(c *MachineConfig) { withBond(c); c.Network.Bonds[0].Interfaces[1] = "eth5" }, "network.bonds[0].interfaces[1]", `member "eth5" is not an interface of this config`},
		{"bond member with address", "init", func(c *MachineConfig) {
			withBond(c)
			c.Network.Interfaces[2].Addresses = []string{"192.168.9.2/24"}
		}, "network.bonds[0].interfaces[0]", "has addresses, routes or DHCP of its own"},
		{"bond member twice", "init", func(c *MachineConfig) {
			withBond(c)
			c.Network.Bonds = append(c.Network.Bonds, Bond{Name: "bond1", Interfaces: []string{"eth4"}})
		}, "network.bonds[1].interfaces[0]", "already a member of network.bonds[0]"},
		{"bond mode", "init", func(c *MachineConfig) { withBond(c); c.Network.Bonds[0].Parameters.Mode = "active_backup" }, "network.bonds[0].parameters.mode", `did you mean "active-backup"?`},
		{"lacp rate value", "init", func(c *MachineConfig) { withBond(c); c.Network.Bonds[0].Parameters.LACPRate = "quick" }, "network.bonds[0].parameters.lacpRate", "slow or fast"},
		{"lacp rate mode", "init", func(c *MachineConfig) { withBond(c); c.Network.Bonds[0].Parameters.Mode = "balance-rr" }, "network.bonds[0].parameters.lacpRate", "only applies to mode 802.3ad"},
		{"hash policy", "init", func(c *MachineConfig) { withBond(c); c.Network.Bonds[0].Parameters.TransmitHashPolicy = "layer5" }, "network.bonds[0].parameters.transmitHashPolicy", `unknown transmit hash policy "layer5"`},
		{"default route without via", "init", func(c *MachineConfig) {
			c.Network.Interfaces[1].Routes = []Route{{To: "default"}}
		}, "network.interfaces[1].routes[0].via", `a "default" route needs via`},
		{"bond primary", "init", func(c *MachineConfig) { withBond(c); c.Network.Bonds[0].Parameters.Primary = "enp1s0" }, "network.bonds[0].parameters.primary", "not a member"},
		{"hash policy mode", "init", func(c *MachineConfig) {
			withBond(c)
			c.Network.Bonds[0].Parameters = BondParameters{Mode: "active-backup", TransmitHashPolicy: "layer3+4"}
		}, "network.bonds[0].parameters.transmitHashPolicy", "only applies to modes balance-xor, 802.3ad, balance-tlb, not active-backup"},
		{"bond primary mode", "init", func(c *MachineConfig) {
			withBond(c)
			c.Network.Bonds[0].Parameters = BondParameters{Primary: "eth3"}
		}, "network.bonds[0].parameters.primary", "only applies to modes active-backup, balance-tlb, balance-alb, not balance-rr"},
		{"bond mii negative", "init", func(c *MachineConfig) { withBond(c); c.Network.Bonds[0].Parameters.MIIMonitorInterval = -1 }, "network.bonds[0].parameters.miiMonitorInterval", "must not be negative"},
		{"nameserver", "init", func(c *MachineConfig) { c.Network.Nameservers.Addresses = []string{"1.1.1.1", "dns.google"} }, "network.nameservers.addresses[1]", `invalid nameserver address "dns.google"`},
		{"search domain", "init", func(c *MachineConfig) { c.Network.Nameservers.Search = []string{"home local"} }, "network.nameservers.search[0]", "invalid search domain"},
		{"firewall backend", "init", func(c *MachineConfig) { c.Firewall.Backend = "nftable" }, "firewall.backend", `unknown backend "nftable"; must be one of auto, firewalld, nftables, none; did you mean "nftables"?`},
		{"port without proto", "init", func(c *MachineConfig) { c.Firewall.Ports = []string{"80/tcp", "8080"} }, "firewall.ports[1]", "must be N/proto or N-M/proto"},
		{"port zero", "init", func(c *MachineConfig) { c.Firewall.Ports = []string{"0/tcp"} }, "firewall.ports[0]", "out of range (1-65535)"},
		{"port too big", "init", func(c *MachineConfig) { c.Firewall.Ports = []string{"30000-70000/udp"} }, "firewall.ports[0]", "out of range (1-65535)"},
		{"port range reversed", "init", func(c *MachineConfig) { c.Firewall.Ports = []string{"90-80/tcp"} }, "firewall.ports[0]", "reversed (90 > 80)"},
		{"port proto", "init", func(c *MachineConfig) { c.Firewall.Ports = []string{"53/icmp"} }, "firewall.ports[0]", `protocol "icmp" in "53/icmp" must be tcp, udp or sctp`},
		{"firewall source", "init", func(c *MachineConfig) { c.Firewall.Sources = []string{"10.0.0.0/8", "10.0.0.1"} }, "firewall.sources[1]", "needs a prefix length"},
		{"firewall source host bits", "init", func(c *MachineConfig) { c.Firewall.Sources = []string{"10.0.0.1/8"} }, "firewall.sources[0]", "did you mean 10.0.0.0/8?"},
		{"firewall interface", "init", func(c *MachineConfig) { c.Firewall.Interfaces = []string{"enp1s1"} }, "firewall.interfaces[0]", `interface "enp1s1" is not a link of the network section; did you mean "enp1s0"?`},
		{"ssh port", "init", func(c *MachineConfig) { c.Firewall.SSHPort = intp(70000) }, "firewall.sshPort", "out of range"},
		{"zone with nftables", "init", func(c *MachineConfig) { c.Firewall.Backend = BackendNftables; c.Firewall.Zone = "public" }, "firewall.zone", "backend nftables does not use it"},
		{"sysctl key", "init", func(c *MachineConfig) { c.System.Sysctls = map[string]string{"net ipv4 ip_forward": "1"} }, `system.sysctls["net ipv4 ip_forward"]`, "invalid sysctl key"},
		{"sysctl traversal", "init", func(c *MachineConfig) { c.System.Sysctls = map[string]string{"net/../../etc": "1"} }, `system.sysctls["net/../../etc"]`, "invalid sysctl key"},
		{"sysctl undoes ip_forward", "init", func(c *MachineConfig) { c.System.Sysctls = map[string]string{"net.ipv4.ip_forward": "0"} }, `system.sysctls["net.ipv4.ip_forward"]`, `"0" conflicts with the "1" Kubernetes needs`},
		{"sysctl undoes IPv6 forwarding", "init", func(c *MachineConfig) {
			c.Kubernetes.PodSubnet = "fd00:10::/56"
			c.System.Sysctls = map[string]string{"net.ipv6.conf.all.forwarding": "0"}
		}, `system.sysctls["net.ipv6.conf.all.forwarding"]`, "conflicts"},
		{"sysctl value", "init", func(c *MachineConfig) { c.System.Sysctls = map[string]string{"vm.swappiness": ""} }, `system.sysctls["vm.swappiness"]`, "one non-empty line"},
		{"module name", "init", func(c *MachineConfig) { c.System.Modules = []string{"br_netfilter", "../evil"} }, "system.modules[1]", "invalid kernel module name"},
		{"version missing", "init", func(c *MachineConfig) { c.Kubernetes.Version = "" }, "kubernetes.version", "version is required"},
		{"version format", "init", func(c *MachineConfig) { c.Kubernetes.Version = "1.37.2" }, "kubernetes.version", "must look like vMAJOR.MINOR.PATCH"},
		{"version too old", "init", func(c *MachineConfig) { c.Kubernetes.Version = "v1.30.4" }, "kubernetes.version", "need v1.31 or later"},
		{"endpoint missing", "init", func(c *MachineConfig) { c.Kubernetes.ControlPlaneEndpoint = "" }, "kubernetes.controlPlaneEndpoint", "controlPlaneEndpoint is required"},
		{"endpoint no port", "init", func(c *MachineConfig) { c.Kubernetes.ControlPlaneEndpoint = "controller.home.local" }, "kubernetes.controlPlaneEndpoint", "must be host:port"},
		{"endpoint port range", "init", func(c *MachineConfig) { c.Kubernetes.ControlPlaneEndpoint = "controller.home.local:70000" }, "kubernetes.controlPlaneEndpoint", `port "70000" is out of range`},
		{"endpoint host", "init", func(c *MachineConfig) { c.Kubernetes.ControlPlaneEndpoint = "bad_host:6443" }, "kubernetes.controlPlaneEndpoint", "controlPlaneEndpoint host"},
		{"advertise address bad", "init", func(c *MachineConfig) { c.Kubernetes.AdvertiseAddress = "172.16.0" }, "kubernetes.advertiseAddress", "invalid IP address"},
		{"advertise address foreign", "init", func(c *MachineConfig) { c.Kubernetes.AdvertiseAddress = "172.16.0.99" }, "kubernetes.advertiseAddress", "not a static address of this node"},
		{"pod subnet bad", "init", func(c *MachineConfig) { c.Kubernetes.PodSubnet = "172.17.0.0/33" }, "kubernetes.podSubnet", "out of range"},
		{"pod subnet overlaps node", "init", func(c *MachineConfig) { c.Kubernetes.PodSubnet = "10.0.0.0/16" }, "kubernetes.podSubnet", "overlaps the node network 10.0.0.0/24"},
		{"pod overlaps service", "init", func(c *MachineConfig) { c.Kubernetes.PodSubnet = "10.96.0.0/16" }, "kubernetes.podSubnet", "overlaps serviceSubnet 10.96.0.0/12"},
		{"pod network backend", "init", func(c *MachineConfig) { c.Kubernetes.PodNetwork.Backend = "vxlna" }, "kubernetes.podNetwork.backend", `unknown backend "vxlna"; must be host-gw (nodes on one layer-2 network) or vxlan (routed between nodes); did you mean "vxlan"?`},
		{"firewall source overlaps pods", "init", func(c *MachineConfig) { c.Firewall.Sources = []string{"172.16.0.0/12"} }, "firewall.sources[0]", "172.16.0.0/12 overlaps kubernetes.podSubnet 172.17.0.0/16"},
		{"service subnet too large", "init", func(c *MachineConfig) { c.Kubernetes.ServiceSubnet = "10.64.0.0/10" }, "kubernetes.serviceSubnet", "too large"},
		{"dual stack same family", "init", func(c *MachineConfig) { c.Kubernetes.PodSubnet = "172.17.0.0/16,172.18.0.0/16" }, "kubernetes.podSubnet", "one IPv4 and one IPv6"},
		{"dns domain", "init", func(c *MachineConfig) { c.Kubernetes.DNSDomain = "cluster..local" }, "kubernetes.dnsDomain", "not a valid RFC 1123"},
		{"node name", "init", func(c *MachineConfig) { c.Kubernetes.NodeName = "Node_1" }, "kubernetes.nodeName", "lower-case RFC 1123 subdomain"},
		{"label key", "init", func(c *MachineConfig) { c.Kubernetes.NodeLabels = map[string]string{"-bad": "x"} }, `kubernetes.nodeLabels["-bad"]`, "invalid label key"},
		{"label reserved", "init", func(c *MachineConfig) {
			c.Kubernetes.NodeLabels = map[string]string{"node-role.kubernetes.io/worker": ""}
		}, `kubernetes.nodeLabels["node-role.kubernetes.io/worker"]`, "the kubelet refuses"},
		{"label value", "init", func(c *MachineConfig) { c.Kubernetes.NodeLabels = map[string]string{"zone": "a b"} }, `kubernetes.nodeLabels["zone"]`, "invalid label value"},
		{"taint effect", "init", func(c *MachineConfig) {
			c.Kubernetes.NodeTaints = []Taint{{Key: "dedicated", Value: "db", Effect: "NoSchedul"}}
		}, "kubernetes.nodeTaints[0].effect", `did you mean "NoSchedule"?`},
		{"taint key", "init", func(c *MachineConfig) { c.Kubernetes.NodeTaints = []Taint{{Effect: "NoSchedule"}} }, "kubernetes.nodeTaints[0].key", "taint key is required"},
		{"taint duplicate", "init", func(c *MachineConfig) {
			c.Kubernetes.NodeTaints = []Taint{{Key: "a", Effect: "NoSchedule"}, {Key: "a", Value: "x", Effect: "NoSchedule"}}
		}, "kubernetes.nodeTaints[1]", "duplicate taint a:NoSchedule"},
		{"cert SAN", "init", func(c *MachineConfig) { c.Kubernetes.CertSANs = []string{"api.example.com", "not valid"} }, "kubernetes.certSANs[1]", "IP address or DNS name"},
		{"worker needs token", "worker", func(c *MachineConfig) {
			c.Kubernetes.Credentials.SecretsBundle = ""
			c.Kubernetes.Credentials.CACertHashes = []string{"sha256:" + strings.Repeat("0", 64)}
		}, "kubernetes.credentials.token", "a worker node needs the bootstrap token"},
		{"worker needs CA", "worker", func(c *MachineConfig) {
			c.Kubernetes.Credentials.SecretsBundle = ""
			c.Kubernetes.Credentials.Token = "abcdef.0123456789abcdef"
		}, "kubernetes.credentials.caCertHashes", "needs caCertHashes or secretsBundle"},
		{"worker has certificate key", "worker", func(c *MachineConfig) { c.Kubernetes.Credentials.CertificateKey = Secret(strings.Repeat("ab", 32)) }, "kubernetes.credentials.certificateKey", "only used by control-plane nodes"},
		{"control plane needs CAs", "control-plane", func(c *MachineConfig) {
			c.Kubernetes.Credentials.SecretsBundle = ""
			c.Kubernetes.Credentials.Token = "abcdef.0123456789abcdef"
			c.Kubernetes.Credentials.CACertHashes = []string{"sha256:" + strings.Repeat("0", 64)}
			c.Kubernetes.Credentials.CertificateKey = Secret(strings.Repeat("ab", 32))
		}, "kubernetes.credentials.secretsBundle", "a control-plane node needs the cluster CAs"},
		{"token TTL format", "init", func(c *MachineConfig) { c.Kubernetes.Credentials.TokenTTL = "1d" }, "kubernetes.credentials.tokenTTL", "positive duration such as 24h"},
		{"token TTL on worker", "worker", func(c *MachineConfig) { c.Kubernetes.Credentials.TokenTTL = "24h" }, "kubernetes.credentials.tokenTTL", "a worker node does not create one"},
		{"inline and bundle", "control-plane", func(c *MachineConfig) {
			c.Kubernetes.Credentials.Secrets = &ClusterSecrets{Token: "abcdef.0123456789abcdef"}
		}, "kubernetes.credentials.secrets", "not both"},
		{"init forbids CA hashes", "init", func(c *MachineConfig) {
			c.Kubernetes.Credentials.CACertHashes = []string{"sha256:" + strings.Repeat("0", 64)}
		}, "kubernetes.credentials.caCertHashes", "caCertHashes are for joining nodes"},
		{"token format", "init", func(c *MachineConfig) { c.Kubernetes.Credentials.Token = "ABCDEF.0123456789abcdef" }, "kubernetes.credentials.token", "not a bootstrap token"},
		{"CA hash format", "worker", func(c *MachineConfig) { c.Kubernetes.Credentials.CACertHashes = []string{"md5:abc"} }, "kubernetes.credentials.caCertHashes[0]", `expected "sha256:" followed by 64 hex digits`},
		{"certificate key format", "init", func(c *MachineConfig) { c.Kubernetes.Credentials.CertificateKey = "0123" }, "kubernetes.credentials.certificateKey", "64 hex digits"},
		{"patch kind", "init", func(c *MachineConfig) {
			c.Kubernetes.KubeadmPatches = []KubeadmPatch{{Kind: "ClusterConfig", Patch: map[string]any{"a": 1}}}
		}, "kubernetes.kubeadmPatches[0].kind", `did you mean "ClusterConfiguration"?`},
		{"join patch on init", "init", func(c *MachineConfig) {
			c.Kubernetes.KubeadmPatches = []KubeadmPatch{{Kind: "JoinConfiguration", Patch: map[string]any{"a": 1}}}
		}, "kubernetes.kubeadmPatches[0].kind", "not generated on an init node"},
		{"init patch on worker", "worker", func(c *MachineConfig) {
			c.Kubernetes.KubeadmPatches = []KubeadmPatch{{Kind: "ClusterConfiguration", Patch: map[string]any{"a": 1}}}
		}, "kubernetes.kubeadmPatches[0].kind", "only generated on the init node"},
		{"patch empty", "init", func(c *MachineConfig) {
			c.Kubernetes.KubeadmPatches = []KubeadmPatch{{Kind: "KubeletConfiguration"}}
		}, "kubernetes.kubeadmPatches[0].patch", "patch is required"},
		{"patch kind field", "init", func(c *MachineConfig) {
			c.Kubernetes.KubeadmPatches = []KubeadmPatch{{Kind: "KubeletConfiguration", Patch: map[string]any{"kind": "X"}}}
		}, "kubernetes.kubeadmPatches[0].patch.kind", "set by kubeboot"},
		{"kube-proxy patch on a join", "worker", func(c *MachineConfig) {
			c.Kubernetes.KubeadmPatches = []KubeadmPatch{{Kind: "KubeProxyConfiguration", Patch: map[string]any{"mode": "nftables"}}}
		}, "kubernetes.kubeadmPatches[0].kind", "patch it in the init node's config"},
		{"preflight all", "init", func(c *MachineConfig) { c.Kubernetes.IgnorePreflightErrors = []string{"NumCPU", "All"} }, "kubernetes.ignorePreflightErrors[1]", `"all" would turn every preflight error into a warning`},
		{"preflight typo", "init", func(c *MachineConfig) { c.Kubernetes.IgnorePreflightErrors = []string{"NumCPUs"} }, "kubernetes.ignorePreflightErrors[0]", `unknown kubeadm preflight check "NumCPUs"; did you mean "NumCPU"?`},
		{"preflight unknown", "init", func(c *MachineConfig) { c.Kubernetes.IgnorePreflightErrors = []string{"DiskSpace"} }, "kubernetes.ignorePreflightErrors[0]", "use the NAME kubeadm prints as [ERROR NAME] or [WARNING NAME], e.g. NumCPU"},
		{"preflight port", "init", func(c *MachineConfig) { c.Kubernetes.IgnorePreflightErrors = []string{"Port-70000"} }, "kubernetes.ignorePreflightErrors[0]", `unknown kubeadm preflight check "Port-70000"`},
		{"preflight twice", "init", func(c *MachineConfig) { c.Kubernetes.IgnorePreflightErrors = []string{"Mem", "mem"} }, "kubernetes.ignorePreflightErrors[1]", `"mem" is listed twice (also kubernetes.ignorePreflightErrors[0]`},
		{"scheduling on a worker", "worker", func(c *MachineConfig) { c.Kubernetes.AllowSchedulingOnControlPlane = true }, "kubernetes.allowSchedulingOnControlPlane", "only applies to init and control-plane nodes"},
		{"scheduling and the taint", "control-plane", func(c *MachineConfig) {
			c.Kubernetes.AllowSchedulingOnControlPlane = true
			c.Kubernetes.NodeTaints = []Taint{{Key: "node-role.kubernetes.io/control-plane", Effect: "NoSchedule"}}
		}, "kubernetes.nodeTaints[0].key", "contradicts allowSchedulingOnControlPlane"},
		{"user name", "init", func(c *MachineConfig) { c.Users[0].Name = "Admin" }, "users[0].name", "must be a POSIX name"},
		{"user duplicate", "init", func(c *MachineConfig) { c.Users = append(c.Users, User{Name: "admin"}) }, "users[1].name", `duplicate user "admin"`},
		{"uid range", "init", func(c *MachineConfig) { c.Users[0].UID = intp(0) }, "users[0].uid", "uid 0 is out of range"},
		{"root uid", "init", func(c *MachineConfig) { c.Users = append(c.Users, User{Name: "root", UID: intp(5)}) }, "users[1].uid", "root has uid 0"},
		{"uid duplicate", "init", func(c *MachineConfig) {
			c.Users[0].UID = intp(1000)
			c.Users = append(c.Users, User{Name: "ops", UID: intp(1000)})
		}, "users[1].uid", "uid 1000 is already used by users[0]"},
		{"home relative", "init", func(c *MachineConfig) { c.Users[0].Home = "home/admin" }, "users[0].home", "clean absolute path"},
	}
	examples := map[string]string{"init": "controller.yaml", "control-plane": "control-plane.yaml", "worker": "worker.yaml"}
	seen := map[string]bool{}
	for _, r := range rules {
		if seen[r.name] {
			t.Fatalf("duplicate row %q", r.name)
		}
		seen[r.name] = true
		t.Run(r.name, func(t *testing.T) {
			cfg := loadExample(t, examples[r.role])
			r.change(cfg)
			err := cfg.Validate()
			list, ok := err.(ErrorList)
			if !ok {
				t.Fatalf("Validate() = %v, want an ErrorList", err)
			}
			for _, e := range list {
				if e.Path == r.path && strings.Contains(e.Message, r.msg) {
					return
				}
			}
			t.Errorf("no error at %s containing %q; got:\n%v", r.path, r.msg, err)
		})
	}
}

// Secret values never appear in error messages, whatever is wrong.
func TestErrorsDoNotRevealSecrets(t *testing.T) {
	const token, key = "NOTATOKEN-s3cr3tvalue", "s3cr3tcertificatekey"
	cfg := loadExample(t, "worker.yaml")
	cfg.Kubernetes.Credentials.Token = token
	cfg.Kubernetes.Credentials.CertificateKey = key
	err := cfg.Validate()
	if err == nil {
		t.Fatal("want errors")
	}
	for _, s := range []string{token, key, "s3cr3t"} {
		if strings.Contains(err.Error(), s) {
			t.Errorf("error text reveals a secret:\n%v", err)
		}
	}
	// Type errors do not print values either.
	_, err = Parse("w.yaml", []byte("kubernetes:\n  credentials:\n    token: [s3cr3t]\n"))
	if err == nil || strings.Contains(err.Error(), "s3cr3t") {
		t.Errorf("type error reveals a secret or is missing: %v", err)
	}
}

func TestDefaults(t *testing.T) {
	cfg := &MachineConfig{
		Hostname: "n1",
		Network: Network{
			Interfaces: []Interface{
				{Name: "eth0", IPConfig: IPConfig{Addresses: []string{"fd00::5/64", "192.168.1.5/24"}}},
				{Name: "eth1", IPConfig: IPConfig{Addresses: []string{"fd01::5/64", "10.0.0.5/24"},
					Routes: []Route{{To: "default", Via: "10.0.0.1"}}}},
			},
		},
		Users: []User{{Name: "root"}, {Name: "ops"}, {Name: "x", Home: "/srv/x"}},
	}
	cfg.SetDefaults()
	got := []string{string(cfg.Firewall.Backend), cfg.Kubernetes.ServiceSubnet, cfg.Kubernetes.DNSDomain,
		cfg.Kubernetes.NodeName, cfg.Kubernetes.AdvertiseAddress, cfg.Users[0].Home, cfg.Users[1].Home, cfg.Users[2].Home}
	want := []string{"auto", "10.96.0.0/12", "cluster.local", "n1", "10.0.0.5", "/root", "/home/ops", "/srv/x"}
	for i := range got {
		if got[i] != want[i] {
			t.Errorf("default %d = %q, want %q", i, got[i], want[i])
		}
	}
	if !*cfg.Firewall.KubernetesPorts || *cfg.Firewall.SSHPort != 22 {
		t.Error("firewall kubernetesPorts/sshPort defaults not applied")
	}
	// Without a default route: the first static address of any link.
	cfg.Network.Interfaces[1].Routes = nil
	cfg.Kubernetes.AdvertiseAddress = ""
	cfg.SetDefaults()
	if cfg.Kubernetes.AdvertiseAddress != "fd00::5" {
		t.Errorf("advertiseAddress without default route = %q, want fd00::5", cfg.Kubernetes.AdvertiseAddress)
	}
	// Explicit values are kept; sshPort 0 (closed) is not a missing value.
	closed := 0
	cfg.Firewall.SSHPort = &closed
	cfg.SetDefaults()
	if *cfg.Firewall.SSHPort != 0 {
		t.Error("SetDefaults overwrote sshPort 0")
	}
}

// Check names as kubeadm prints them ([ERROR NAME]), in any case.
func TestIgnorePreflightErrorsAccepted(t *testing.T) {
	cfg := loadExample(t, "controller.yaml")
	cfg.Kubernetes.IgnorePreflightErrors = []string{"NumCPU", "mem", "Port-6443", "FileContent--proc-sys-net-ipv4-ip_forward",
		"DirAvailable--var-lib-etcd", "FileAvailable--etc-kubernetes-manifests-kube-apiserver.yaml", "FileExisting-losetup",
		"Service-kubelet", "SystemVerification", "IsPrivilegedUser"}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestParsePort(t *testing.T) {
	from, to, proto, err := ParsePort("30000-32767/tcp")
	if err != nil || from != 30000 || to != 32767 || proto != "tcp" {
		t.Errorf("ParsePort = %d %d %q %v", from, to, proto, err)
	}
	from, to, proto, err = ParsePort("4789/udp")
	if err != nil || from != 4789 || to != 4789 || proto != "udp" {
		t.Errorf("ParsePort = %d %d %q %v", from, to, proto, err)
	}
}
