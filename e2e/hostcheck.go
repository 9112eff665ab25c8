package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"kubeboot.dev/kubeboot/bootstrapd/firewall"
	"kubeboot.dev/kubeboot/machineconfig"
)

// CheckOS checks the image's layout on a running node: a read-only
// squashfs root, STATE (ext4) on /var, /etc an overlay, containerd's
// store on ext4.
func (vm *VM) CheckOS(ctx context.Context) ([]string, error) {
	var checked []string
	out, err := vm.Check(ctx, "findmnt -n -o FSTYPE,OPTIONS /", time.Minute)
	if err != nil {
		return nil, err
	}
	fstype, opts, _ := strings.Cut(out, " ")
	if fstype != "squashfs" || !slices.Contains(strings.Split(strings.TrimSpace(opts), ","), "ro") {
		return nil, fmt.Errorf("%s: / is %q, want a read-only squashfs", vm.Name, out)
	}
	if r, err := vm.Run(ctx, "touch /kubeboot-e2e-probe", time.Minute); err != nil || r.Code == 0 {
		return nil, fmt.Errorf("%s: / is writable (touch exited %d, %v)", vm.Name, r.Code, err)
	}
	checked = append(checked, "/ is a read-only squashfs")
	out, err = vm.Check(ctx, `set -e; dev=$(findmnt -n -o SOURCE /var); echo "$dev $(findmnt -n -o FSTYPE /var) $(blkid -s PARTLABEL -o value "$dev")"`, time.Minute)
	if err != nil {
		return nil, err
	}
	if f := strings.Fields(out); len(f) != 3 || f[1] != "ext4" || f[2] != "STATE" {
		return nil, fmt.Errorf("%s: /var is %q, want ext4 on the partition STATE", vm.Name, out)
	}
	checked = append(checked, "STATE (ext4) on /var: "+strings.Fields(out)[0])
	if out, err = vm.Check(ctx, "findmnt -n -o FSTYPE /etc", time.Minute); err != nil || out != "overlay" {
		return nil, fmt.Errorf("%s: /etc is %q, want an overlay (%v)", vm.Name, out, err)
	}
	checked = append(checked, "/etc is an overlay")
	if _, err := vm.Check(ctx, "systemctl is-active containerd.service && ctr --address /run/containerd/containerd.sock version >/dev/null", time.Minute); err != nil {
		return nil, err
	}
	if out, err = vm.Check(ctx, "findmnt -n -o FSTYPE -T /var/lib/containerd", time.Minute); err != nil || out != "ext4" {
		return nil, fmt.Errorf("%s: /var/lib/containerd is on %q, want ext4 (%v)", vm.Name, out, err)
	}
	checked = append(checked, "containerd active, its store on ext4")
	return checked, nil
}

// CheckKubeletIdle: kubelet is enabled but has not run, because kubeadm has
// not written its config (a node that has not joined).
func (vm *VM) CheckKubeletIdle(ctx context.Context) (string, error) {
	out, err := vm.Check(ctx, "systemctl is-enabled kubelet.service; systemctl show -p ConditionResult --value kubelet.service", time.Minute)
	if err != nil {
		return "", err
	}
	if out != "enabled\nno" {
		return "", fmt.Errorf("%s: kubelet.service: %q, want enabled and its condition not met (idle until kubeadm writes its config)", vm.Name, out)
	}
	return "kubelet enabled and idle until kubeadm writes /var/lib/kubelet/config.yaml", nil
}

// wantPorts is what firewalld must list for the config: the role's and the
// pod network's ports, the config's own, and SSH's when a user has a key.
func wantPorts(cfg *machineconfig.MachineConfig) []string {
	var want []string
	if cfg.Firewall.KubernetesPorts == nil || *cfg.Firewall.KubernetesPorts {
		ports := append(firewall.RolePorts(cfg.Role), firewall.PodNetworkPorts(cfg.Kubernetes.PodNetwork.Backend)...)
		for _, p := range ports {
			want = append(want, p.String())
		}
	}
	want = append(want, cfg.Firewall.Ports...)
	for _, p := range firewall.SSHPorts(cfg) {
		want = append(want, p.String())
	}
	slices.Sort(want)
	return slices.Compact(want)
}

// closedPort is in no role's list.
const closedPort = 23456

// CheckFirewall: firewalld runs and lists exactly the config's ports, a
// TCP connection from the lab's namespace to openPort at addr gets through,
// and one to an unlisted port with a listener behind it is rejected by
// firewalld (ICMP admin-prohibited: "No route to host", not a timeout or a
// reset). With listen, the node has nothing on openPort yet and the check
// starts a listener there too.
func (vm *VM) CheckFirewall(ctx context.Context, cfg *machineconfig.MachineConfig, addr string, openPort int, listen bool) ([]string, error) {
	if _, err := vm.Check(ctx, "systemctl is-active firewalld.service", time.Minute); err != nil {
		return nil, err
	}
	out, err := vm.Check(ctx, "firewall-cmd --list-ports", 3*time.Minute)
	if err != nil {
		return nil, err
	}
	got := strings.Fields(out)
	slices.Sort(got)
	want := wantPorts(cfg)
	if !slices.Equal(got, want) {
		return nil, fmt.Errorf("%s: firewalld lists %v, want the %s ports %v", vm.Name, got, cfg.Role, want)
	}
	checked := []string{fmt.Sprintf("firewalld active, ports of a %s open: %s", cfg.Role, strings.Join(want, " "))}

	units := "kb-e2e-closed"
	start := fmt.Sprintf("systemd-run -q --unit=kb-e2e-closed socat TCP-LISTEN:%d,reuseaddr,fork 'SYSTEM:echo kb-closed'", closedPort)
	if listen {
		units += " kb-e2e-open"
		start += fmt.Sprintf(" && systemd-run -q --unit=kb-e2e-open socat TCP-LISTEN:%d,reuseaddr,fork 'SYSTEM:echo kb-open'", openPort)
	}
	if _, err := vm.Check(ctx, "systemctl stop "+units+" 2>/dev/null; "+start, time.Minute); err != nil {
		return nil, err
	}
	defer vm.Run(context.Background(), "systemctl stop "+units, time.Minute)
	// The listeners answer on loopback (firewalld trusts lo): they are up.
	if _, err := vm.Check(ctx, fmt.Sprintf("for i in $(seq 40); do [ \"$(socat -T5 -u TCP:127.0.0.1:%d STDOUT 2>/dev/null)\" = kb-closed ] && exit 0; sleep 0.5; done; exit 1", closedPort), 2*time.Minute); err != nil {
		return nil, fmt.Errorf("%s: the probe listener on %d does not answer on the node's loopback: %w", vm.Name, closedPort, err)
	}
	if out, err := vm.lab.probe(ctx, addr, openPort); err != nil {
		return nil, fmt.Errorf("%s: %s:%d/tcp (opened) is not reachable from the lab: %v: %s", vm.Name, addr, openPort, err, out)
	}
	out, err = vm.lab.probe(ctx, addr, closedPort)
	if err == nil {
		return nil, fmt.Errorf("%s: %s:%d/tcp (unlisted) is reachable through firewalld: %s", vm.Name, addr, closedPort, out)
	}
	if !strings.Contains(out, "No route to host") {
		return nil, fmt.Errorf("%s: %s:%d/tcp (unlisted): want firewalld's reject (No route to host), got: %s", vm.Name, addr, closedPort, out)
	}
	return append(checked, fmt.Sprintf("from the lab: %d/tcp connects, %d/tcp (a listener behind it) is rejected by firewalld", openPort, closedPort)), nil
}

// probe opens a TCP connection from the lab's namespace (bash's /dev/tcp,
// 10 s at most) and closes it.
func (l *Lab) probe(ctx context.Context, addr string, port int) (string, error) {
	out, err := l.Command(ctx, "timeout", "10", "bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/%s/%d && echo connected", addr, port)).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}
