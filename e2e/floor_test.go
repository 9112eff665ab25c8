package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"kubeboot.dev/kubeboot/bootstrapd/kubeadmconfig"
	"kubeboot.dev/kubeboot/bootstrapd/podnetwork"
	"kubeboot.dev/kubeboot/clustersecrets"
	"kubeboot.dev/kubeboot/machineconfig"
	"kubeboot.dev/kubeboot/nodepath"
)

// floorDir is where the floor's kubeadm configuration goes on its node.
const floorDir = "/root/floor"

// floor is make bench-boot's baseline for the controller's first boot: the
// same image, NICs and MACs, bootstrapd masked on the kernel command line,
// and what the reference did by hand done by a script over the debug
// shell as soon as it answers: hostname and /etc/hosts, addresses and the
// default route, the two firewall ports kubeadm warned about, the kernel
// settings kubeadm needs, nameservers, then `kubeadm init` with the
// kubeadm configuration bootstrapd renders for configs/controller.yaml
// (kubeadm makes the CAs: there is no bundle to install), admin.conf
// copied out and the pod network applied with kubectl. bootstrapd's
// overhead is the controller scenario's node Ready time less this one.
func (s *sc) floor(ctx context.Context) error {
	for _, vm := range s.lab.VMs() { // the controller's CPU goes to this one
		if err := vm.Kill(); err != nil {
			return err
		}
	}
	cfg, err := s.loadConfig(controllerConfig)
	if err != nil {
		return err
	}
	bundle, err := floorKubeadmFiles(cfg, filepath.Join(s.lab.Work, "flr-kubeadm"))
	if err != nil {
		return err
	}
	nics, err := nicsOf(cfg, BridgeMgmt, BridgeData)
	if err != nil {
		return err
	}
	vm, err := s.lab.NewVM(ctx, VMSpec{Name: "flr", Image: s.image, NICs: nics, KernelArgs: "systemd.mask=bootstrapd.service"})
	if err != nil {
		return err
	}
	n := &node{vm: vm, cfg: cfg, config: controllerConfig}
	n.addr, _, _ = strings.Cut(cfg.Network.Interfaces[0].Addresses[0], "/")
	s.nodes["flr"] = n
	if err := vm.Start(ctx); err != nil {
		return err
	}
	b := s.newBoot(vm, "first boot, bootstrapd masked, the reference's steps by script", vm.Started, 0)
	kl, err := vm.WaitBoot(ctx, 0)
	if err != nil {
		return err
	}
	b.KernelAt = b.consoleAt(kl)
	b.ShellAt = b.since(time.Now())
	// systemd.mask= masks in /run: "masked-runtime".
	if out, err := vm.Check(ctx, "systemctl is-enabled bootstrapd.service || true", time.Minute); err != nil || out != "masked-runtime" {
		return fmt.Errorf("%s: bootstrapd.service is %q (%v), want masked-runtime (systemd.mask= on the kernel command line)", vm.Name, out, err)
	}
	if _, err := vm.Check(ctx, floorHostScript(cfg), 5*time.Minute); err != nil {
		return err
	}
	b.HostPhaseAt = b.since(time.Now())
	if _, err := vm.Check(ctx, "mkdir -p "+floorDir+" && chmod 700 "+floorDir+" && echo "+bundle+" | base64 -d | tar -xz -C "+floorDir, time.Minute); err != nil {
		return err
	}
	start := time.Now()
	if _, err := vm.Check(ctx, "kubeadm init --config "+floorDir+"/"+kubeadmconfig.ConfigFile+" >"+floorDir+"/init.log 2>&1 || { tail -20 "+floorDir+"/init.log; exit 1; }", 30*time.Minute); err != nil {
		return fmt.Errorf("%s: kubeadm init: %w", vm.Name, err)
	}
	b.KubeadmSeconds = time.Since(start).Seconds()
	r, err := vm.Shell.RunSecret(ctx, "cat "+nodepath.AdminConf, time.Minute)
	if err != nil || r.Code != 0 {
		return fmt.Errorf("%s: reading %s: exit %d, %v", vm.Name, nodepath.AdminConf, r.Code, err)
	}
	s.kubeconfig = filepath.Join(s.lab.Work, "flr-admin.conf")
	if err := os.WriteFile(s.kubeconfig, r.Out, 0o600); err != nil {
		return err
	}
	manifest, err := s.floorPodNetwork(ctx, vm, cfg)
	if err != nil {
		return err
	}
	if err := s.kubectlApply(ctx, manifest); err != nil {
		return err
	}
	b.DoneAt = b.since(time.Now())
	if err := s.clusterUp(ctx, b, n); err != nil {
		return err
	}
	s.ok("floor: QEMU start to kernel %.0f s, shell %.0f s, host steps through %.0f s, kubeadm init %.0f s, node Ready %.0f s, coredns Ready %.0f s",
		b.KernelAt, b.ShellAt, b.HostPhaseAt, b.KubeadmSeconds, b.ReadyAt, b.CoreDNSReadyAt)
	if ctl := s.firstBootOf("controller", "ctl"); ctl != nil && ctl.ReadyAt > 0 {
		s.rep.OverheadSeconds = ctl.ReadyAt - b.ReadyAt
		s.ok("bootstrapd's overhead (the controller's node Ready at %.0f s less the floor's %.0f s): %.0f s; coredns Ready %.0f s against %.0f s",
			ctl.ReadyAt, b.ReadyAt, s.rep.OverheadSeconds, ctl.CoreDNSReadyAt, b.CoreDNSReadyAt)
	}
	return nil
}

// floorHostScript is what the reference's administrator did to the host
// before kubeadm: the config's hostname, hosts entries, addresses and
// routes with ip(8), the nameservers bootstrapd would write, ports 6443
// and 10250 in firewalld (the preflight warnings), the kernel settings
// kubeadm checks.
func floorHostScript(cfg *machineconfig.MachineConfig) string {
	var b strings.Builder
	// The debug shell answers before D-Bus is up (hostnamectl, firewall-cmd
	// need it): the administrator logged in to a booted system.
	b.WriteString("systemctl is-system-running --wait >/dev/null || true\n")
	b.WriteString("set -e\nhostnamectl set-hostname " + cfg.Hostname + "\n")
	for _, h := range cfg.Hosts {
		fmt.Fprintf(&b, "echo '%s %s' >> /etc/hosts\n", h.IP, strings.Join(h.Names, " "))
	}
	for _, it := range cfg.Network.Interfaces {
		fmt.Fprintf(&b, "ip link set %s up\n", it.Name)
		for _, a := range it.Addresses {
			fmt.Fprintf(&b, "ip addr add %s dev %s\n", a, it.Name)
		}
		for _, r := range it.Routes {
			fmt.Fprintf(&b, "ip route add %s dev %s", r.To, it.Name)
			if r.Via != "" {
				fmt.Fprintf(&b, " via %s", r.Via)
			}
			if r.Metric != nil {
				fmt.Fprintf(&b, " metric %d", *r.Metric)
			}
			b.WriteString("\n")
		}
	}
	b.WriteString(": > /etc/resolv.conf.floor\n")
	for _, ns := range cfg.Network.Nameservers.Addresses {
		fmt.Fprintf(&b, "echo 'nameserver %s' >> /etc/resolv.conf.floor\n", ns)
	}
	b.WriteString("rm -f /etc/resolv.conf && mv /etc/resolv.conf.floor /etc/resolv.conf\n")
	b.WriteString("firewall-cmd --quiet --add-port=6443/tcp --add-port=10250/tcp\n")
	b.WriteString("modprobe overlay\nmodprobe br_netfilter\n")
	b.WriteString("sysctl -q -w net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1\n")
	return b.String()
}

// floorKubeadmFiles renders the kubeadm configuration bootstrapd would for
// cfg, with a token and certificate key made for this run (the cluster
// bundle's never go into the shell transcript), writes it under root and
// returns its files (kubeadm.yaml and patches/) as a base64 tar.gz, paths
// relative to floorDir.
func floorKubeadmFiles(cfg *machineconfig.MachineConfig, root string) (string, error) {
	fresh, err := clustersecrets.Generate()
	if err != nil {
		return "", err
	}
	r, err := kubeadmconfig.Render(cfg, kubeadmconfig.Inputs{
		Token: fresh.Token, CertificateKey: fresh.CertificateKey, Dir: floorDir,
	})
	if err != nil {
		return "", err
	}
	if err := r.Write(root); err != nil {
		return "", err
	}
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	base := filepath.Join(root, floorDir)
	err = filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == base {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		h, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		h.Name, _ = filepath.Rel(base, p)
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		_, err = tw.Write(data)
		return err
	})
	if err == nil {
		err = tw.Close()
	}
	if err == nil {
		err = gz.Close()
	}
	return base64.StdEncoding.EncodeToString(buf.Bytes()), err
}

// floorPodNetwork is the pod network bootstrapd's podnetwork stage would
// create, as a manifest for kubectl: the reference's `kubectl apply -f
// [podnetwork].yaml`, with the flannel image baked into the node.
func (s *sc) floorPodNetwork(ctx context.Context, vm *VM, cfg *machineconfig.MachineConfig) (string, error) {
	index, err := vm.Check(ctx, "cat "+nodepath.ImagesIndex, time.Minute)
	if err != nil {
		return "", err
	}
	// podnetwork.Image reads the index under a root: the node's, copied.
	root := filepath.Join(s.lab.Work, "flr-images")
	p := filepath.Join(root, nodepath.ImagesIndex)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(p, []byte(index+"\n"), 0o644); err != nil {
		return "", err
	}
	image, err := podnetwork.Image(root)
	if err != nil {
		return "", err
	}
	objs, err := podnetwork.Render(cfg, image)
	if err != nil {
		return "", err
	}
	var docs []string
	for _, o := range objs {
		b, err := json.Marshal(o.Object)
		if err != nil {
			return "", err
		}
		docs = append(docs, string(b))
	}
	return strings.Join(docs, "\n---\n"), nil
}

// firstBootOf is the first boot of node in an earlier scenario's report.
func (s *sc) firstBootOf(scenario, node string) *BootReport {
	for _, r := range s.report.Scenarios {
		if r.Name != scenario || !r.Passed {
			continue
		}
		for _, b := range r.Boots {
			if b.Node == node && b.Boot == "first boot" {
				return b
			}
		}
	}
	return nil
}
