package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"kubeboot.dev/kubeboot/machineconfig"
)

// The network scenario's node: both NICs on the first network's bridge
// (a bond's members share a segment), VLAN 100 tagged on it.
const (
	bondConfig    = "e2e/testdata/bond-vlan.yaml"
	bondUserData  = "e2e/testdata/bond-vlan.user-data.yaml"
	bondNetConfig = "e2e/testdata/bond-vlan.network-config.yaml"
	bondVLAN      = 100
)

// network: one node, two ways of giving it the same network. First the
// native config baked into an image (no CIDATA: the third config source),
// then the image of the cluster with the config on CIDATA and the network
// as a netplan v2 network-config file. Each time: addresses, routes, the
// bond's active member and failover, the VLAN id, traffic on both
// networks, the firewall, the image's layout. Then the second node is
// powered off, its disk grown, and booted again: /etc and the machine id
// persist, STATE grows, the network comes back.
func (s *sc) network(ctx context.Context) error {
	// The cluster's machines are done with: their CPU goes to this one.
	for _, vm := range s.lab.VMs() {
		if err := vm.Kill(); err != nil {
			return err
		}
	}
	cfg, err := s.loadConfig(bondConfig)
	if err != nil {
		return err
	}
	nics, err := nicsOf(cfg, BridgeMgmt, BridgeMgmt)
	if err != nil {
		return err
	}
	vlan, err := s.lab.AddVLAN(ctx, bondVLAN, BridgeMgmt, BridgeData)
	if err != nil {
		return err
	}
	s.ok("lab: VLAN %d tagged on %s is %s (the lab's VLAN port)", bondVLAN, BridgeMgmt, BridgeData)

	baked, err := s.bakedImage(ctx)
	if err != nil {
		return err
	}
	vm, err := s.lab.NewVM(ctx, VMSpec{Name: "net", Image: baked, NICs: nics})
	if err != nil {
		return err
	}
	if err := vm.Start(ctx); err != nil {
		return err
	}
	if err := s.checkBondNode(ctx, vm, cfg, "native config baked into the image"); err != nil {
		return err
	}

	vm.Spec.Image = s.image
	vm.Spec.Config = filepath.Join(s.repo, bondUserData)
	vm.Spec.NetworkConfig = filepath.Join(s.repo, bondNetConfig)
	if err := vm.Reflash(ctx); err != nil {
		return err
	}
	if err := s.checkBondNode(ctx, vm, cfg, "netplan v2 network-config on CIDATA"); err != nil {
		return err
	}
	if err := s.persistence(ctx, vm, cfg); err != nil {
		return err
	}
	select {
	case err := <-vlan.Errs:
		return err
	default:
	}
	return vm.Poweroff(ctx)
}

// bakedImage is node.raw with the native bond config baked in:
// $KUBEBOOT_E2E_BAKED_IMAGE when set (make e2e builds it and checks it
// with TestBuiltImage first), else built now into the lab's work dir.
func (s *sc) bakedImage(ctx context.Context) (string, error) {
	if p := os.Getenv("KUBEBOOT_E2E_BAKED_IMAGE"); p != "" {
		if !filepath.IsAbs(p) {
			p = filepath.Join(s.repo, p)
		}
		return p, nil
	}
	out := filepath.Join(s.lab.Work, "baked", "node.raw")
	t := time.Now()
	if err := run(ctx, s.lab.Kubeboot, "image", "build", "--spec", filepath.Join(s.repo, "configs/image.yaml"),
		"-o", out, "--machine-config", filepath.Join(s.repo, bondConfig)); err != nil {
		return "", err
	}
	s.ok("built %s with %s baked in (%.0f s)", out, bondConfig, time.Since(t).Seconds())
	return out, nil
}

// checkBondNode waits for a boot of the bond node and checks it.
func (s *sc) checkBondNode(ctx context.Context, vm *VM, cfg *machineconfig.MachineConfig, how string) error {
	b := s.newBoot(vm, how, vm.Started, 0)
	if err := s.awaitHost(ctx, b); err != nil {
		return err
	}
	if err := s.checkHostname(ctx, vm, cfg); err != nil {
		return err
	}
	if err := s.checkNetwork(ctx, vm, cfg); err != nil {
		return err
	}
	if err := s.checkSystem(ctx, vm, false); err != nil {
		return err
	}
	for _, gw := range []string{"172.16.0.254", "10.0.0.254"} {
		if _, err := vm.Check(ctx, "ping -c 1 -W 5 "+gw, time.Minute); err != nil {
			return fmt.Errorf("the node cannot reach the lab's gateway %s: %w", gw, err)
		}
	}
	s.ok("%s: reaches the gateways 172.16.0.254 (bond0) and 10.0.0.254 (vlan%d)", vm.Name, bondVLAN)
	if err := s.failover(ctx, vm, cfg); err != nil {
		return err
	}
	checks, err := vm.CheckOS(ctx)
	if err != nil {
		return err
	}
	s.oks(vm.Name+": ", checks)
	bond := cfg.Network.Bonds[0]
	addr, _, _ := strings.Cut(bond.Addresses[0], "/")
	checks, err = vm.CheckFirewall(ctx, cfg, addr, 10250, true)
	if err != nil {
		return err
	}
	s.oks(vm.Name+": ", checks)
	check, err := vm.CheckKubeletIdle(ctx)
	if err != nil {
		return err
	}
	s.ok("%s: %s", vm.Name, check)
	return s.finish(ctx, b)
}

// failover pulls the primary member's cable (QMP set_link): the bond moves
// to the other member and both networks still answer; back in, the
// primary is active again.
func (s *sc) failover(ctx context.Context, vm *VM, cfg *machineconfig.MachineConfig) error {
	bond := cfg.Network.Bonds[0]
	primary, other := bond.Interfaces[0], bond.Interfaces[1]
	ping := func() error {
		for _, a := range []string{"172.16.0.31", "10.0.0.31"} {
			if _, err := s.lab.Ping(ctx, a); err != nil {
				return err
			}
		}
		return nil
	}
	step := func(up bool, want string) error {
		if err := vm.QMP.SetLink(vm.Netdev(0), up); err != nil {
			return err
		}
		deadline := time.Now().Add(time.Minute)
		for {
			st, err := vm.Bond(ctx, bond.Name)
			if err != nil {
				return err
			}
			if st.ActiveSlave == want {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: %s's active member is %q a minute after %s's link went %s, want %s", vm.Name, bond.Name, st.ActiveSlave, primary, map[bool]string{true: "up", false: "down"}[up], want)
			}
			time.Sleep(time.Second)
		}
		// Ping retries while the bridges learn the new port.
		if err := ping(); err != nil {
			return fmt.Errorf("%s: no answer with %s active: %w", vm.Name, want, err)
		}
		return nil
	}
	if err := step(false, other); err != nil {
		return err
	}
	s.ok("%s: %s's cable out: %s active, 172.16.0.31 and 10.0.0.31 (VLAN %d) answer", vm.Name, primary, other, bondVLAN)
	if err := step(true, primary); err != nil {
		return err
	}
	s.ok("%s: %s's cable back: the primary %s is active again, both networks answer", vm.Name, primary, primary)
	return nil
}

// persistence: /etc and the machine id survive a power cycle; after the
// disk grows (qemu-img resize while off), systemd-repart grows STATE and
// its ext4 to the new end with the data kept; bootstrapd puts the network
// back (kernel state is gone after a boot).
func (s *sc) persistence(ctx context.Context, vm *VM, cfg *machineconfig.MachineConfig) error {
	token := "kubeboot-e2e-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	before, err := vm.Check(ctx, "echo "+token+" > /etc/kubeboot-e2e && cat /etc/machine-id && df -B1 --output=size /var | tail -n 1 && sync", time.Minute)
	if err != nil {
		return err
	}
	f := strings.Fields(before)
	if len(f) != 2 {
		return fmt.Errorf("%s: machine id and /var size: %q", vm.Name, before)
	}
	machineID, sizeBefore := f[0], f[1]
	if err := vm.Poweroff(ctx); err != nil {
		return err
	}
	if err := vm.Resize(ctx, "+4G"); err != nil {
		return err
	}
	if err := vm.Start(ctx); err != nil {
		return err
	}
	b := s.newBoot(vm, "disk +4 GiB", vm.Started, 0)
	if err := s.awaitHost(ctx, b); err != nil {
		return err
	}
	after, err := vm.Check(ctx, "cat /etc/kubeboot-e2e /etc/machine-id && df -B1 --output=size /var | tail -n 1", time.Minute)
	if err != nil {
		return err
	}
	f = strings.Fields(after)
	if len(f) != 3 || f[0] != token || f[1] != machineID {
		return fmt.Errorf("%s: after a power cycle /etc/kubeboot-e2e and the machine id read %q, want %s and %s", vm.Name, after, token, machineID)
	}
	s.ok("%s: /etc changes and the machine id %s persist across a power cycle", vm.Name, machineID)
	was, _ := strconv.ParseInt(sizeBefore, 10, 64)
	now, _ := strconv.ParseInt(f[2], 10, 64)
	if now < was+3<<30 {
		return fmt.Errorf("%s: /var did not grow with the disk: %d -> %d bytes", vm.Name, was, now)
	}
	s.ok("%s: STATE grew with the disk (%d -> %d MiB), data kept", vm.Name, was>>20, now>>20)
	if err := s.checkNetwork(ctx, vm, cfg); err != nil {
		return err
	}
	bond := cfg.Network.Bonds[0]
	addr, _, _ := strings.Cut(bond.Addresses[0], "/")
	checks, err := vm.CheckFirewall(ctx, cfg, addr, 10250, true)
	if err != nil {
		return err
	}
	s.oks(vm.Name+": after the power cycle: ", checks)
	return s.finish(ctx, b)
}
