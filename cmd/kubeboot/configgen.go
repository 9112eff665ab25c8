package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"kubeboot.dev/kubeboot/image/spec"
	"kubeboot.dev/kubeboot/machineconfig"
)

const configUsage = `usage: kubeboot config gen --secrets FILE --role R --hostname H -o FILE [flags]

Writes a machine config for one node of the cluster whose secrets FILE
holds (kubeboot secrets gen). Control planes (init, control-plane) carry the
secrets inline: the CAs kubeadm installs and the token. A worker carries
only the bootstrap token and the CA certificate hash (caCertHashes), never
a private key. The n-th --address goes on the n-th interface, named by the
n-th --interface (default enp1s0, enp2s0, ...: the reference machines'
names) and matched by the n-th --mac when given; interface n gets route
metric 100+n-1, and --gateway becomes the default route of the interface
whose network holds it. The config is validated before it is written,
0600; an existing file is replaced only with --force.

Example (the reference controller):
  kubeboot config gen --secrets configs/secrets.yaml --role init \
    --hostname controller.home.local --endpoint controller.home.local:6443 \
    --address 172.16.0.11/24 --mac 52:54:00:80:ad:b6 \
    --address 10.0.0.11/24 --mac 52:54:00:6a:9d:95 --gateway 172.16.0.254 \
    --host controller.home.local=172.16.0.11 --pod-subnet 172.17.0.0/16 \
    --user admin -o controller.yaml

flags:`

func runConfig(args []string) int {
	if len(args) == 0 || args[0] != "gen" {
		fmt.Fprintln(os.Stderr, configUsage)
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return exitOK
		}
		return exitUsage
	}
	fs := flag.NewFlagSet("kubeboot config gen", flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	fs.Usage = func() { fmt.Fprintln(os.Stderr, configUsage); fs.PrintDefaults() }
	secrets := fs.String("secrets", "", "cluster secrets bundle (kubeboot secrets gen)")
	role := fs.String("role", "", "init, control-plane or worker")
	hostname := fs.String("hostname", "", "host name, also the Kubernetes node name")
	endpoint := fs.String("endpoint", "", "control plane endpoint host:port (default HOSTNAME:6443 for init; required otherwise)")
	gateway := fs.String("gateway", "", "default gateway")
	podSubnet := fs.String("pod-subnet", "", "pod network CIDR (the CNI's)")
	specPath := fs.String("spec", "configs/image.yaml", "image spec whose Kubernetes version the node runs")
	version := fs.String("kubernetes-version", "", "Kubernetes version (default: the one --spec pins)")
	out := fs.String("o", "", "machine config to write")
	force := fs.Bool("force", false, "replace an existing file")
	var addresses, macs, names, hosts, users, sshKeys, timeServers multiFlag
	fs.Var(&addresses, "address", "static address CIDR of the next interface, e.g. 172.16.0.11/24 (repeatable)")
	fs.Var(&macs, "mac", "MAC address matching the n-th interface (repeatable)")
	fs.Var(&names, "interface", "name of the n-th interface (repeatable)")
	fs.Var(&hosts, "host", "extra /etc/hosts entry NAME=IP, e.g. controller.home.local=172.16.0.11 (repeatable)")
	fs.Var(&users, "user", "local user: gets the admin kubeconfig on a control plane, logs in with the --ssh-key keys (repeatable)")
	fs.Var(&sshKeys, "ssh-key", "public key file (a .pub, or authorized_keys lines) whose keys every --user logs in with over SSH (repeatable)")
	fs.Var(&timeServers, "time-server", "NTP server the node's clock follows; the first boot waits for it (repeatable)")
	if code, ok := parseFlags(fs, args[1:]); !ok {
		return code
	}
	if *secrets == "" || *role == "" || *hostname == "" || *out == "" || fs.NArg() > 0 {
		fs.Usage()
		return exitUsage
	}
	if len(macs) > len(addresses) || len(names) > len(addresses) {
		fmt.Fprintln(os.Stderr, "kubeboot config gen: each --mac and --interface belongs to an --address: give them in the same order and no more of them")
		return exitUsage
	}
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "kubeboot config gen:", err)
		return exitFail
	}
	bundle, err := machineconfig.LoadBundle(*secrets)
	if err != nil {
		return fail(err)
	}
	if *version == "" {
		s, err := spec.Load(*specPath)
		if err != nil {
			return fail(fmt.Errorf("the Kubernetes version: %w (or give --kubernetes-version)", err))
		}
		*version = s.Kubernetes.Version
	}
	if *endpoint == "" {
		if *role != string(machineconfig.RoleInit) {
			fmt.Fprintln(os.Stderr, "kubeboot config gen: a joining node needs --endpoint, the control plane's host:port")
			return exitUsage
		}
		*endpoint = net.JoinHostPort(*hostname, "6443")
	}
	cfg := &machineconfig.MachineConfig{
		APIVersion: machineconfig.APIVersion, Kind: machineconfig.Kind,
		Role: machineconfig.Role(*role), Hostname: *hostname,
		Kubernetes: machineconfig.Kubernetes{Version: *version, ControlPlaneEndpoint: *endpoint, PodSubnet: *podSubnet},
	}
	for _, h := range hosts {
		name, ip, ok := strings.Cut(h, "=")
		if !ok {
			fmt.Fprintf(os.Stderr, "kubeboot config gen: --host %q must be NAME=IP\n", h)
			return exitUsage
		}
		cfg.Hosts = append(cfg.Hosts, machineconfig.HostEntry{IP: ip, Names: []string{name}})
	}
	for i, a := range addresses {
		in := machineconfig.Interface{Name: "enp" + strconv.Itoa(i+1) + "s0"}
		if i < len(names) {
			in.Name = names[i]
		}
		if i < len(macs) {
			in.Match = &machineconfig.Match{MACAddress: macs[i]}
		}
		metric := 100 + i
		in.Addresses, in.RouteMetric = []string{a}, &metric
		// The gateway is on the link whose network holds it.
		if p, err := netip.ParsePrefix(a); err == nil && *gateway != "" {
			if gw, err := netip.ParseAddr(*gateway); err == nil && p.Masked().Contains(gw) {
				in.Routes = []machineconfig.Route{{To: "default", Via: *gateway}}
				*gateway = ""
			}
		}
		cfg.Network.Interfaces = append(cfg.Network.Interfaces, in)
	}
	if *gateway != "" {
		fmt.Fprintf(os.Stderr, "kubeboot config gen: --gateway %s is in the network of no --address\n", *gateway)
		return exitUsage
	}
	if len(sshKeys) > 0 && len(users) == 0 {
		fmt.Fprintln(os.Stderr, "kubeboot config gen: --ssh-key needs a --user to log in as")
		return exitUsage
	}
	var keys []string
	for _, f := range sshKeys {
		k, err := readPublicKeys(f)
		if err != nil {
			return fail(err)
		}
		keys = append(keys, k...)
	}
	for _, u := range users {
		cfg.Users = append(cfg.Users, machineconfig.User{Name: u, SSHAuthorizedKeys: keys})
	}
	cfg.Time.Servers = timeServers
	cr := &cfg.Kubernetes.Credentials
	if cfg.Role.IsControlPlane() {
		cr.Secrets = bundle.ForRole(cfg.Role)
	} else {
		hash, err := bundle.CACertHash()
		if err != nil {
			return fail(err)
		}
		cr.Token, cr.CACertHashes = bundle.Token, []string{hash}
	}
	data := append([]byte(configHeader(cfg.Role)), cfg.Marshal()...)
	if _, err := machineconfig.Parse(*out, data); err != nil {
		fmt.Fprintf(os.Stderr, "kubeboot config gen: the flags give an invalid config; nothing written:\n%v\n", err)
		return exitFail
	}
	if err := writeSecretFile(*out, data, *force); err != nil {
		return fail(err)
	}
	fmt.Printf("wrote %s (mode 0600): %s %s\n", *out, cfg.Role, cfg.Hostname)
	return exitOK
}

func configHeader(r machineconfig.Role) string {
	what := "the bootstrap token"
	if r.IsControlPlane() {
		what = "the cluster's CA keys and bootstrap token"
	}
	return "# kubeboot machine config written by kubeboot config gen. It holds " + what + ":\n" +
		"# keep it private (mode 0600). Check it with: kubeboot validate FILE\n"
}

// maxKeyFile bounds a --ssh-key file: a few keys are a few KiB.
const maxKeyFile = 64 << 10

// readPublicKeys returns the key lines of a .pub or authorized_keys file
// (blank lines and comments left out); the config's validator checks them.
func readPublicKeys(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--ssh-key: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("--ssh-key %s: %w", path, err)
	}
	if len(data) > maxKeyFile {
		return nil, fmt.Errorf("--ssh-key %s: larger than %d KiB; is it a public key (.pub)?", path, maxKeyFile>>10)
	}
	if strings.Contains(string(data), "PRIVATE KEY") {
		return nil, fmt.Errorf("--ssh-key %s is a private key: give its public half (%s.pub); the private key never leaves your machine", path, path)
	}
	var keys []string
	for _, line := range strings.Split(string(data), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			keys = append(keys, line)
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("--ssh-key %s holds no key", path)
	}
	return keys, nil
}
