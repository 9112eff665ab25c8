package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"kubeboot.dev/kubeboot/bootstrapd/progress"
	"kubeboot.dev/kubeboot/image/spec"
	"kubeboot.dev/kubeboot/internal/secrettest"
	"kubeboot.dev/kubeboot/machineconfig"
)

// The cluster's nodes: the example configs, as written.
const (
	controllerConfig   = "configs/controller.yaml"
	workerConfig       = "configs/worker.yaml"
	controlPlaneConfig = "configs/control-plane.yaml"
	secretsBundle      = "configs/secrets.yaml"
)

// controller: the first control plane from configs/controller.yaml reaches
// Ready with its kube-system pods running, and kubectl in the lab works
// with the admin user's kubeconfig copied out of the node.
func (s *sc) controller(ctx context.Context) error {
	if err := s.ensureSecrets(ctx); err != nil {
		return err
	}
	n, err := s.addNode(ctx, "ctl", controllerConfig)
	if err != nil {
		return err
	}
	b, err := s.initUp(ctx, n, "first boot")
	if err != nil {
		return err
	}
	if err := s.guestCPU(ctx, n); err != nil {
		return err
	}
	if err := s.verify(ctx, n, b); err != nil {
		return err
	}
	checks, err := n.vm.CheckFirewall(ctx, n.cfg, n.addr, 6443, false)
	if err != nil {
		return err
	}
	s.oks(n.vm.Name+": ", checks)
	return s.noSecretsLeaked(ctx, n)
}

// worker: configs/worker.yaml joins and is Ready; a pod pinned to it
// reaches a pod on the controller by IP and resolves kubernetes.default
// through the cluster DNS, with addresses from the pod subnet.
func (s *sc) worker(ctx context.Context) error {
	n, err := s.addNode(ctx, "wrk", workerConfig)
	if err != nil {
		return err
	}
	if err := n.vm.Start(ctx); err != nil {
		return err
	}
	b, err := s.bootNode(ctx, n, "first boot", n.vm.Started, 0)
	if err != nil {
		return err
	}
	if err := s.awaitReady(ctx, b, n); err != nil {
		return err
	}
	if err := s.podsAcrossNodes(ctx); err != nil {
		return err
	}
	if err := s.verify(ctx, n, b); err != nil {
		return err
	}
	checks, err := n.vm.CheckFirewall(ctx, n.cfg, n.addr, 10250, false)
	if err != nil {
		return err
	}
	s.oks(n.vm.Name+": ", checks)
	return s.noSecretsLeaked(ctx, n)
}

// workerReflash: the worker's disk is replaced by a fresh copy of the image
// (same config) and it rejoins by itself: still two nodes, both Ready, and
// the worker's Node is the new machine's (its boot id and machine id), not
// the stale object of the old disk.
func (s *sc) workerReflash(ctx context.Context) error {
	n := s.nodes["wrk"]
	old, err := s.getNode(ctx, n.cfg.Hostname)
	if err != nil {
		return err
	}
	if err := n.vm.Reflash(ctx); err != nil {
		return err
	}
	b, err := s.bootNode(ctx, n, "reflash", n.vm.Started, 0)
	if err != nil {
		return err
	}
	if err := s.awaitReady(ctx, b, n); err != nil {
		return err
	}
	cur, err := s.checkNodeIsMachine(ctx, n)
	if err != nil {
		return err
	}
	if cur.Status.NodeInfo.MachineID == old.Status.NodeInfo.MachineID {
		return fmt.Errorf("the worker's Node still reports the old machine id %s", old.Status.NodeInfo.MachineID)
	}
	s.ok("the Node %s is the reflashed machine's (uid %s -> %s, machine id %s -> %s)", n.cfg.Hostname,
		old.UID, cur.UID, old.Status.NodeInfo.MachineID, cur.Status.NodeInfo.MachineID)
	if err := s.podsAcrossNodes(ctx); err != nil {
		return err
	}
	if err := s.verify(ctx, n, b); err != nil {
		return err
	}
	return s.noSecretsLeaked(ctx, n)
}

// controlPlane: configs/control-plane.yaml joins, etcd has two members;
// the node is reflashed and rejoins, and etcd has exactly two healthy
// members again (the stale one removed, the new one added).
func (s *sc) controlPlane(ctx context.Context) error {
	n, err := s.addNode(ctx, "cp2", controlPlaneConfig)
	if err != nil {
		return err
	}
	if err := n.vm.Start(ctx); err != nil {
		return err
	}
	b, err := s.bootNode(ctx, n, "first boot", n.vm.Started, 0)
	if err != nil {
		return err
	}
	if err := s.awaitReady(ctx, b, n); err != nil {
		return err
	}
	first, err := s.etcdMembers(ctx)
	if err != nil {
		return err
	}
	if _, err := s.copyKubeconfigFrom(ctx, n); err != nil {
		return err
	}
	if err := s.verify(ctx, n, b); err != nil {
		return err
	}
	if err := s.noSecretsLeaked(ctx, n); err != nil {
		return err
	}

	if err := n.vm.Reflash(ctx); err != nil {
		return err
	}
	b, err = s.bootNode(ctx, n, "reflash", n.vm.Started, 0)
	if err != nil {
		return err
	}
	if err := s.awaitReady(ctx, b, n); err != nil {
		return err
	}
	if _, err := s.checkNodeIsMachine(ctx, n); err != nil {
		return err
	}
	second, err := s.etcdMembers(ctx)
	if err != nil {
		return err
	}
	if first[n.cfg.Hostname] == second[n.cfg.Hostname] {
		return fmt.Errorf("etcd member %s kept its id %x across the reflash: the new node did not join as a new member", n.cfg.Hostname, first[n.cfg.Hostname])
	}
	s.ok("etcd member %s: %x (stale, removed) -> %x (the reflashed node)", n.cfg.Hostname, first[n.cfg.Hostname], second[n.cfg.Hostname])
	if _, err := s.kubeSystemRunning(ctx); err != nil {
		return err
	}
	if err := s.verify(ctx, n, b); err != nil {
		return err
	}
	return s.noSecretsLeaked(ctx, n)
}

// reboot: the controller reboots. bootstrapd runs again and changes
// nothing that lasts (the once stages stay done, /etc/kubernetes is
// unchanged; what the kernel forgot, addresses and the hostname, is put
// back), the cluster is Ready again, /etc and the machine id persist.
func (s *sc) reboot(ctx context.Context) error {
	n := s.nodes["ctl"]
	vm := n.vm
	token := fmt.Sprintf("kubeboot-e2e-%d", time.Now().UnixNano())
	snapshot := `cat /etc/machine-id; find /etc/kubernetes -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum; for f in ` + "/var/lib/kubeboot/stages/*/record.json" + `; do echo "$f $(sha256sum < "$f")"; done`
	before, err := vm.Check(ctx, "echo "+token+" > /etc/kubeboot-e2e && sync && "+snapshot, time.Minute)
	if err != nil {
		return err
	}
	pre, err := vm.Progress(ctx)
	if err != nil {
		return err
	}
	origin := time.Now()
	mark := vm.Reboot(ctx)
	b := s.newBoot(vm, "reboot", origin, mark)
	if err := s.awaitHost(ctx, b); err != nil {
		return err
	}
	p, err := vm.WaitBootstrapd(ctx, "")
	if err != nil {
		return err
	}
	b.DoneAt = b.since(time.Now())
	if err := s.finish(ctx, b); err != nil {
		return err
	}
	if err := s.checkSystem(ctx, vm, true); err != nil {
		return err
	}
	status := vm.Status(ctx)
	var reapplied []string
	for _, st := range p.Steps {
		if !st.Applies {
			continue
		}
		switch {
		case st.Kind == "once" && st.State != progress.DoneOnce:
			return fmt.Errorf("after the reboot the once stage %s is %q, want done (recorded, not run again):\n%s", st.Stage, st.State, status)
		case st.State == progress.Applied:
			reapplied = append(reapplied, st.Stage)
		}
	}
	after, err := vm.Check(ctx, snapshot, time.Minute)
	if err != nil {
		return err
	}
	if err := sameLasting(before, after, reapplied); err != nil {
		return fmt.Errorf("%w\nbootstrapd status:\n%s", err, status)
	}
	s.ok("ctl: bootstrapd after the reboot: once stages done, /etc/kubernetes and the records of the stages that did not re-apply unchanged; re-applied kernel state: %s (before the reboot: %d steps)", strings.Join(reapplied, ", "), len(pre.Steps))
	out, err := vm.Check(ctx, "cat /etc/kubeboot-e2e", time.Minute)
	if err != nil || out != token {
		return fmt.Errorf("/etc/kubeboot-e2e after the reboot: %q (%v), want %s", out, err, token)
	}
	s.ok("ctl: /etc changes and the machine id persist across the reboot")
	if err := s.checkNetwork(ctx, vm, n.cfg); err != nil {
		return err
	}
	if err := s.awaitReady(ctx, b, n); err != nil {
		return err
	}
	checks, err := vm.CheckFirewall(ctx, n.cfg, n.addr, 6443, false)
	if err != nil {
		return err
	}
	s.oks("ctl: after the reboot: ", checks)
	if _, err := s.kubeSystemRunning(ctx); err != nil {
		return err
	}
	if _, err := s.etcdMembers(ctx); err != nil {
		return err
	}
	if err := s.verify(ctx, n, b); err != nil {
		return err
	}
	return s.noSecretsLeaked(ctx, n)
}

// sameLasting compares the reboot snapshots: machine id, /etc/kubernetes,
// and the records of the stages that did not re-apply.
func sameLasting(before, after string, reapplied []string) error {
	b, a := strings.Split(before, "\n"), strings.Split(after, "\n")
	if len(b) < 2 || len(a) < 2 {
		return fmt.Errorf("snapshot too short: %q / %q", before, after)
	}
	if b[0] != a[0] {
		return fmt.Errorf("the machine id changed across the reboot: %s -> %s", b[0], a[0])
	}
	if b[1] != a[1] {
		return errors.New("/etc/kubernetes changed across the reboot")
	}
	records := func(lines []string) map[string]string {
		m := map[string]string{}
		for _, l := range lines[2:] {
			f, sum, _ := strings.Cut(l, " ")
			stage := filepath.Base(filepath.Dir(f))
			if !slices.Contains(reapplied, stage) {
				m[stage] = sum
			}
		}
		return m
	}
	rb, ra := records(b), records(a)
	for stage, sum := range rb {
		if ra[stage] != sum {
			return fmt.Errorf("stage %s's record changed across the reboot though the stage did not apply", stage)
		}
	}
	return nil
}

// ensureSecrets makes configs/secrets.yaml as the README says when it is
// missing, and keeps the bundle's secret values to look for in logs.
func (s *sc) ensureSecrets(ctx context.Context) error {
	path := filepath.Join(s.repo, secretsBundle)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		if err := run(ctx, s.lab.Kubeboot, "secrets", "gen", "-o", path); err != nil {
			return err
		}
		s.ok("made %s with kubeboot secrets gen (it was missing)", secretsBundle)
	}
	cfg, err := s.loadConfig(controllerConfig)
	if err != nil {
		return err
	}
	if cfg.Kubernetes.Credentials.Bundle == nil {
		return fmt.Errorf("%s names no secrets bundle", controllerConfig)
	}
	s.secrets = secrettest.For(cfg.Kubernetes.Credentials.Bundle)
	s.tokenID, _, _ = strings.Cut(cfg.Kubernetes.Credentials.Bundle.Token.Reveal(), ".")
	return nil
}

// addNode makes the VM of a cluster node: enp1s0 on the first network,
// enp2s0 on the second, MACs from the config; the lab's /etc/hosts learns
// the config's host entries and the node's name.
func (s *sc) addNode(ctx context.Context, name, config string) (*node, error) {
	cfg, err := s.loadConfig(config)
	if err != nil {
		return nil, err
	}
	nics, err := nicsOf(cfg, BridgeMgmt, BridgeData)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", config, err)
	}
	n := &node{cfg: cfg, config: config}
	for _, it := range cfg.Network.Interfaces {
		if it.Name == "enp1s0" && len(it.Addresses) > 0 {
			n.addr, _, _ = strings.Cut(it.Addresses[0], "/")
		}
	}
	if n.addr == "" {
		return nil, fmt.Errorf("%s: enp1s0 has no static address for the lab to reach", config)
	}
	for _, h := range cfg.Hosts {
		if err := s.lab.AddHosts(h.IP, h.Names...); err != nil {
			return nil, err
		}
	}
	if err := s.lab.AddHosts(n.addr, cfg.Hostname); err != nil {
		return nil, err
	}
	n.vm, err = s.lab.NewVM(ctx, VMSpec{Name: name, Image: s.image, Config: filepath.Join(s.repo, config), NICs: nics,
		Background: !cfg.Role.IsControlPlane()})
	if err != nil {
		return nil, err
	}
	s.nodes[name] = n
	return n, nil
}

// bootNode waits for a boot of a cluster node, checks the host, and waits
// for bootstrapd to finish both phases.
func (s *sc) bootNode(ctx context.Context, n *node, kind string, origin time.Time, mark int) (*boot, error) {
	b := s.newBoot(n.vm, kind, origin, mark)
	if err := s.awaitHost(ctx, b); err != nil {
		return b, err
	}
	if err := s.checkHostname(ctx, n.vm, n.cfg); err != nil {
		return b, err
	}
	if err := s.checkNetwork(ctx, n.vm, n.cfg); err != nil {
		return b, err
	}
	checks, err := n.vm.CheckOS(ctx)
	if err != nil {
		return b, err
	}
	s.oks(n.vm.Name+": ", checks)
	if _, err := n.vm.WaitBootstrapd(ctx, ""); err != nil {
		return b, err
	}
	b.DoneAt = b.since(time.Now())
	if err := s.checkSystem(ctx, n.vm, true); err != nil {
		return b, err
	}
	if err := s.finish(ctx, b); err != nil {
		return b, err
	}
	s.ok("%s: bootstrapd done at %.0f s (kubeadm %.0f s)", n.vm.Name, b.DoneAt, b.KubeadmSeconds)
	return b, nil
}

// copyKubeconfig copies the admin user's ~/.kube/config out of the
// controller (checking it is theirs, 0600 in a 0700 ~/.kube) for kubectl in
// the lab.
func (s *sc) copyKubeconfig(ctx context.Context, n *node) error {
	p, err := s.copyKubeconfigFrom(ctx, n)
	if err != nil {
		return err
	}
	s.kubeconfig = p
	return nil
}

// copyKubeconfigFrom checks the configured users' kubeconfigs on a control
// plane and copies the first one into the lab's work dir.
func (s *sc) copyKubeconfigFrom(ctx context.Context, n *node) (string, error) {
	if len(n.cfg.Users) == 0 {
		return "", fmt.Errorf("%s lists no users: nobody gets a kubeconfig", n.config)
	}
	user := n.cfg.Users[0].Name
	home := "/home/" + user
	out, err := n.vm.Check(ctx, fmt.Sprintf("stat -c '%%U %%a' %s/.kube %s/.kube/config", home, home), time.Minute)
	if err != nil {
		return "", err
	}
	if want := user + " 700\n" + user + " 600"; out != want {
		return "", fmt.Errorf("%s: %s/.kube and its config are %q, want %q (owner, mode)", n.vm.Name, home, out, want)
	}
	r, err := n.vm.Shell.RunSecret(ctx, "cat "+home+"/.kube/config", time.Minute)
	if err != nil || r.Code != 0 {
		return "", fmt.Errorf("%s: reading %s/.kube/config: exit %d, %v", n.vm.Name, home, r.Code, err)
	}
	p := filepath.Join(s.lab.Work, n.vm.Name+"-"+user+".kubeconfig")
	if err := os.WriteFile(p, r.Out, 0o600); err != nil {
		return "", err
	}
	s.ok("%s: %s/.kube/config is %s's, 0600 in a 0700 ~/.kube; copied out (%d bytes)", n.vm.Name, home, user, len(r.Out))
	return p, nil
}

// kubectl runs the pinned kubectl in the lab's namespace with the admin's
// kubeconfig.
func (s *sc) kubectl(ctx context.Context, args ...string) (string, error) {
	return s.lab.Exec(ctx, s.kubectlBin, append([]string{"--kubeconfig", s.kubeconfig, "--request-timeout=30s"}, args...)...)
}

// kubectlApply applies a manifest.
func (s *sc) kubectlApply(ctx context.Context, manifest string) error {
	cmd := s.lab.Command(ctx, s.kubectlBin, "--kubeconfig", s.kubeconfig, "--request-timeout=30s", "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(manifest)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("kubectl apply: %w: %s", err, out)
	}
	return nil
}

func (s *sc) getNodes(ctx context.Context) ([]corev1.Node, error) {
	out, err := s.kubectl(ctx, "get", "nodes", "-o", "json")
	if err != nil {
		return nil, err
	}
	var list corev1.NodeList
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, fmt.Errorf("kubectl get nodes: %w", err)
	}
	return list.Items, nil
}

func (s *sc) getNode(ctx context.Context, name string) (*corev1.Node, error) {
	out, err := s.kubectl(ctx, "get", "node", name, "-o", "json")
	if err != nil {
		return nil, err
	}
	var n corev1.Node
	if err := json.Unmarshal([]byte(out), &n); err != nil {
		return nil, fmt.Errorf("kubectl get node %s: %w", name, err)
	}
	return &n, nil
}

// readyCondition returns the Node's Ready condition.
func readyCondition(n corev1.Node) (bool, time.Time) {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue, c.LastTransitionTime.Time
		}
	}
	return false, time.Time{}
}

// members are the names of the nodes that joined (in an earlier scenario
// or this one: also) and whose VM runs: a node whose join failed is left
// out of what later scenarios expect.
func (s *sc) members(also *node, controlPlanesOnly bool) []string {
	var names []string
	for _, n := range s.nodes {
		if (n.member || n == also) && n.vm.Running() && (!controlPlanesOnly || n.cfg.Role.IsControlPlane()) {
			names = append(names, n.cfg.Hostname)
		}
	}
	slices.Sort(names)
	return names
}

// awaitReady waits until the cluster has exactly the running nodes, all
// Ready, and records when this node's Ready condition became true
// (the API server's clock; the guests' clocks follow the host's).
func (s *sc) awaitReady(ctx context.Context, b *boot, n *node) error {
	want := s.members(n, false)
	var last string
	for {
		nodes, err := s.getNodes(ctx)
		if err == nil {
			var names, notReady []string
			for _, nd := range nodes {
				names = append(names, nd.Name)
				ready, since := readyCondition(nd)
				if !ready {
					notReady = append(notReady, nd.Name)
				}
				if nd.Name == n.cfg.Hostname && ready && since.After(b.origin) {
					b.ReadyAt = b.since(since)
				}
			}
			slices.Sort(names)
			if slices.Equal(names, want) && len(notReady) == 0 {
				n.member = true
				out, _ := s.kubectl(ctx, "get", "nodes", "-o", "wide")
				s.ok("kubectl get nodes (in the lab, with the kubeconfig copied out of the controller): %s all Ready\n%s", strings.Join(names, ", "), out)
				return nil
			}
			last = fmt.Sprintf("nodes %v (want %v), not Ready: %v", names, want, notReady)
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for nodes %v Ready: %w; last: %s", want, ctx.Err(), last)
		case <-time.After(10 * time.Second):
		}
	}
}

// guestCPU keeps what the idle one-node cluster costs its guest: top's
// second sample, 20 s after the first, in cpu-idle-cluster.txt, and the
// load and the busiest processes in the report. Under TCG this decides
// whether another VM fits beside the control plane (docs/e2e.md).
func (s *sc) guestCPU(ctx context.Context, n *node) error {
	out, err := n.vm.Check(ctx, "top -b -n 2 -d 20 -w 200 | awk '/^top - /{k++} k==2' | head -n 22", 2*time.Minute)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(n.vm.LogDir, "cpu-idle-cluster.txt"), []byte(out+"\n"), 0o644); err != nil {
		return err
	}
	lines := strings.Split(out, "\n")
	var busiest []string
	for i, l := range lines {
		if f := strings.Fields(l); len(f) >= 12 && i > 6 && len(busiest) < 6 {
			busiest = append(busiest, f[11]+" "+f[8]+"%")
		}
	}
	load := ""
	if _, after, ok := strings.Cut(lines[0], "load average: "); ok {
		load = after
	}
	s.ok("%s: idle one-node cluster, guest load average %s; busiest (%% of one vCPU, 20 s): %s", n.vm.Name, load, strings.Join(busiest, ", "))
	return s.profiles(ctx, n)
}

// profiles keeps 30 s CPU profiles of the idle cluster's two busiest
// processes, the kubelet and the API server, taken together through the
// API (the kubelet's through the node proxy): `go tool pprof -top FILE`
// says where the guest's CPU goes.
func (s *sc) profiles(ctx context.Context, n *node) error {
	paths := map[string]string{
		"kube-apiserver": "/debug/pprof/profile?seconds=30",
		"kubelet":        "/api/v1/nodes/" + n.cfg.Hostname + "/proxy/debug/pprof/profile?seconds=30",
	}
	type result struct {
		name, file string
		size       int
		err        error
	}
	results := make(chan result, len(paths))
	for name, path := range paths {
		go func() {
			r := result{name: name, file: filepath.Join(n.vm.LogDir, name+".cpu.pprof")}
			cmd := s.lab.Command(ctx, s.kubectlBin, "--kubeconfig", s.kubeconfig, "--request-timeout=2m", "get", "--raw", path)
			out, err := cmd.Output()
			if err == nil {
				err = os.WriteFile(r.file, out, 0o644)
			}
			r.size, r.err = len(out), err
			results <- r
		}()
	}
	var errs []error
	for range paths {
		r := <-results
		if r.err != nil {
			errs = append(errs, fmt.Errorf("%s's CPU profile: %w", r.name, r.err))
			continue
		}
		s.ok("%s: %s's CPU profile of the idle cluster (30 s, %d bytes) in %s", n.vm.Name, r.name, r.size, r.file)
	}
	return errors.Join(errs...)
}

// initUp powers an init node on and waits for this boot (kind) of its
// one-node cluster: bootstrapd done, the admin's kubeconfig copied out for
// kubectl, the cluster up.
func (s *sc) initUp(ctx context.Context, n *node, kind string) (*boot, error) {
	if err := n.vm.Start(ctx); err != nil {
		return nil, err
	}
	b, err := s.bootNode(ctx, n, kind, n.vm.Started, 0)
	if err != nil {
		return nil, err
	}
	if err := s.copyKubeconfig(ctx, n); err != nil {
		return nil, err
	}
	return b, s.clusterUp(ctx, b, n)
}

// clusterUp waits for a one-node cluster's first boot: the node Ready and
// every kube-system pod running and Ready; it records when the last
// CoreDNS pod turned Ready.
func (s *sc) clusterUp(ctx context.Context, b *boot, n *node) error {
	if err := s.awaitReady(ctx, b, n); err != nil {
		return err
	}
	pods, err := s.kubeSystemRunning(ctx)
	if err != nil {
		return err
	}
	var last time.Time
	for _, p := range pods {
		if p.Labels["k8s-app"] != "kube-dns" {
			continue
		}
		if ready, since := podReady(p); ready && since.After(last) {
			last = since
		}
	}
	if last.IsZero() {
		return errors.New("kube-system has no CoreDNS pod (label k8s-app=kube-dns)")
	}
	b.CoreDNSReadyAt = b.since(last)
	return nil
}

// kubeSystemRunning waits until every pod in kube-system runs with its
// containers ready, and returns them.
func (s *sc) kubeSystemRunning(ctx context.Context) ([]corev1.Pod, error) {
	var last string
	for {
		out, err := s.kubectl(ctx, "get", "pods", "-n", "kube-system", "-o", "json")
		if err == nil {
			var list corev1.PodList
			if err := json.Unmarshal([]byte(out), &list); err != nil {
				return nil, err
			}
			var names, bad []string
			for _, p := range list.Items {
				names = append(names, p.Name)
				if ready, _ := podReady(p); p.Status.Phase != corev1.PodRunning || !ready {
					bad = append(bad, fmt.Sprintf("%s (%s)", p.Name, p.Status.Phase))
				}
			}
			if len(bad) == 0 && len(names) > 0 {
				s.ok("kube-system: %d pods Running and Ready: %s", len(names), strings.Join(names, ", "))
				return list.Items, nil
			}
			last = "not running: " + strings.Join(bad, ", ")
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for kube-system's pods: %w; last: %s", ctx.Err(), last)
		case <-time.After(10 * time.Second):
		}
	}
}

// podReady reports p's Ready condition and when it last changed.
func podReady(p corev1.Pod) (bool, time.Time) {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue, c.LastTransitionTime.Time
		}
	}
	return false, time.Time{}
}

// checkNodeIsMachine: the Node object of n reports the running machine's
// boot id and machine id (a stale object would report the old disk's).
func (s *sc) checkNodeIsMachine(ctx context.Context, n *node) (*corev1.Node, error) {
	ids, err := n.vm.Check(ctx, "cat /proc/sys/kernel/random/boot_id /etc/machine-id", time.Minute)
	if err != nil {
		return nil, err
	}
	f := strings.Fields(ids)
	nd, err := s.getNode(ctx, n.cfg.Hostname)
	if err != nil {
		return nil, err
	}
	if len(f) != 2 || nd.Status.NodeInfo.BootID != f[0] || nd.Status.NodeInfo.MachineID != f[1] {
		return nil, fmt.Errorf("Node %s reports boot id %s, machine id %s; the machine has %q: a stale Node object", nd.Name, nd.Status.NodeInfo.BootID, nd.Status.NodeInfo.MachineID, ids)
	}
	s.ok("Node %s reports the running machine's boot id and machine id", nd.Name)
	return nd, nil
}

// testImage is the small image baked as an extra for pods of the tests.
func (s *sc) testImage() (string, error) {
	sp, err := spec.Load(filepath.Join(s.repo, "configs/image.yaml"))
	if err != nil {
		return "", err
	}
	for _, e := range sp.Images.Extras {
		if strings.Contains(e.Ref, "busybox") {
			return e.Ref, nil
		}
	}
	return "", errors.New("configs/image.yaml bakes no busybox test image (images.extras)")
}

const podTemplate = `apiVersion: v1
kind: Pod
metadata:
  name: %[1]s
  namespace: default
  labels: {app: kubeboot-e2e}
spec:
  nodeSelector: {kubernetes.io/hostname: %[2]s}
  tolerations: [{operator: Exists}]
  terminationGracePeriodSeconds: 1
  containers:
    - name: main
      image: %[3]s
      imagePullPolicy: Never
      command: ["sh", "-c", %[4]q]
`

// podsAcrossNodes: an HTTP server pod on the controller and a client pod
// pinned to the worker; the client fetches from the server by pod IP and
// resolves kubernetes.default through the cluster DNS; both pod IPs are in
// the pod subnet.
func (s *sc) podsAcrossNodes(ctx context.Context) error {
	img, err := s.testImage()
	if err != nil {
		return err
	}
	ctl, wrk := s.nodes["ctl"], s.nodes["wrk"]
	for _, p := range []string{"e2e-server", "e2e-client"} {
		if _, err := s.kubectl(ctx, "delete", "pod", p, "--ignore-not-found", "--grace-period=0", "--force"); err != nil {
			return err
		}
	}
	server := fmt.Sprintf(podTemplate, "e2e-server", ctl.cfg.Hostname, img,
		"mkdir -p /tmp/www && echo kubeboot-e2e > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www")
	client := fmt.Sprintf(podTemplate, "e2e-client", wrk.cfg.Hostname, img, "exec sleep 36000")
	if err := s.kubectlApply(ctx, server+"---\n"+client); err != nil {
		return err
	}
	if _, err := s.kubectl(ctx, "wait", "--for=condition=Ready", "--timeout=15m", "pod/e2e-server", "pod/e2e-client"); err != nil {
		out, _ := s.kubectl(ctx, "describe", "pod", "e2e-server", "e2e-client")
		return fmt.Errorf("%w\n%s", err, out)
	}
	subnet, err := netip.ParsePrefix(ctl.cfg.Kubernetes.PodSubnet)
	if err != nil {
		return err
	}
	ips := map[string]string{}
	for _, p := range []string{"e2e-server", "e2e-client"} {
		out, err := s.kubectl(ctx, "get", "pod", p, "-o", "jsonpath={.spec.nodeName} {.status.podIP}")
		if err != nil {
			return err
		}
		node, ip, _ := strings.Cut(out, " ")
		a, err := netip.ParseAddr(ip)
		if err != nil || !subnet.Contains(a) {
			return fmt.Errorf("pod %s on %s has IP %q, want one in the pod subnet %s", p, node, ip, subnet)
		}
		ips[p] = ip
		s.ok("pod %s runs on %s with IP %s (in %s)", p, node, ip, subnet)
	}
	var out string
	for range 12 {
		out, err = s.kubectl(ctx, "exec", "e2e-client", "--", "wget", "-q", "-O", "-", "-T", "10", "http://"+ips["e2e-server"]+":8080/")
		if err == nil && strings.TrimSpace(out) == "kubeboot-e2e" {
			break
		}
		time.Sleep(5 * time.Second)
	}
	if err != nil || strings.TrimSpace(out) != "kubeboot-e2e" {
		return fmt.Errorf("the client pod on %s cannot fetch from the server pod on %s (%s): %v %s", wrk.cfg.Hostname, ctl.cfg.Hostname, ips["e2e-server"], err, out)
	}
	s.ok("e2e-client (%s) fetched http://%s:8080/ from e2e-server (%s) across nodes", wrk.cfg.Hostname, ips["e2e-server"], ctl.cfg.Hostname)
	svc, err := s.kubectl(ctx, "get", "service", "kubernetes", "-n", "default", "-o", "jsonpath={.spec.clusterIP}")
	if err != nil {
		return err
	}
	for range 12 {
		out, err = s.kubectl(ctx, "exec", "e2e-client", "--", "nslookup", "kubernetes.default")
		if err == nil && strings.Contains(out, svc) {
			break
		}
		time.Sleep(5 * time.Second)
	}
	if err != nil || !strings.Contains(out, svc) {
		return fmt.Errorf("nslookup kubernetes.default in the client pod does not give %s: %v\n%s", svc, err, out)
	}
	s.ok("e2e-client resolves kubernetes.default to %s through the cluster DNS:\n%s", svc, strings.TrimSpace(out))
	return nil
}

// etcdMembers lists etcd's members from the controller's etcd container
// (crictl in the guest: it works without the API server) and checks that
// they are exactly the running control planes, all healthy. It returns
// the member ids by name.
func (s *sc) etcdMembers(ctx context.Context) (map[string]uint64, error) {
	ctl := s.nodes["ctl"]
	want := s.members(nil, true)
	etcdctl := `id=$(crictl --runtime-endpoint unix:///run/containerd/containerd.sock ps -q --name '^etcd$' --state running | head -n 1); [ -n "$id" ] || { echo no running etcd container; exit 1; }; crictl --runtime-endpoint unix:///run/containerd/containerd.sock exec "$id" etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/kubernetes/pki/etcd/ca.crt --cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt --key=/etc/kubernetes/pki/etcd/healthcheck-client.key `
	var last string
	for {
		members, health, err := func() (map[string]uint64, string, error) {
			out, err := ctl.vm.Check(ctx, etcdctl+"member list -w json", 2*time.Minute)
			if err != nil {
				return nil, "", err
			}
			var list struct {
				Members []struct {
					ID        uint64 `json:"ID"`
					Name      string `json:"name"`
					IsLearner bool   `json:"isLearner"`
				} `json:"members"`
			}
			if err := json.Unmarshal([]byte(out), &list); err != nil {
				return nil, "", fmt.Errorf("etcdctl member list: %w: %s", err, out)
			}
			m := map[string]uint64{}
			for _, mb := range list.Members {
				if mb.IsLearner {
					return nil, "", fmt.Errorf("member %s (%x) is still a learner", mb.Name, mb.ID)
				}
				m[mb.Name] = mb.ID
			}
			names := slices.Sorted(maps.Keys(m))
			if !slices.Equal(names, want) {
				return nil, "", fmt.Errorf("etcd members %v, want exactly %v", names, want)
			}
			health, err := ctl.vm.Check(ctx, etcdctl+"endpoint health --cluster", 2*time.Minute)
			if err != nil {
				return nil, "", err
			}
			if strings.Count(health, "is healthy") != len(want) {
				return nil, "", fmt.Errorf("etcd endpoint health: %s", health)
			}
			return m, health, nil
		}()
		if err == nil {
			s.ok("etcd has exactly %d members, all healthy: %s\n%s", len(want), strings.Join(want, ", "), health)
			return members, nil
		}
		last = err.Error()
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("etcd's members: %w; last: %s", ctx.Err(), last)
		case <-time.After(15 * time.Second):
		}
	}
}

// verifySettle is how long bootstrapd verify may keep failing on a node
// that just became Ready while the cluster's status catches up (a
// DaemonSet's ready count, a pod's readiness); then its report fails the
// scenario.
const verifySettle = 3 * time.Minute

// verify runs `bootstrapd verify` on a cluster node, the reference's
// environment check automated, and fails the scenario unless it exits 0
// within verifySettle. The last report is kept as
// out/e2e/NODE/verify-BOOT.txt (the controller's goes into the closing
// note); the shell transcript has it too, and noSecretsLeaked scans both.
func (s *sc) verify(ctx context.Context, n *node, b *boot) error {
	deadline := time.Now().Add(verifySettle)
	for {
		r, err := n.vm.Run(ctx, "bootstrapd verify", 5*time.Minute)
		if err != nil {
			return err
		}
		p := filepath.Join(n.vm.LogDir, "verify-"+strings.ReplaceAll(b.Boot, " ", "-")+".txt")
		if err := os.WriteFile(p, r.Out, 0o644); err != nil {
			return err
		}
		lines := strings.Split(r.String(), "\n")
		summary := lines[len(lines)-1]
		if r.Code == 0 {
			s.ok("%s: bootstrapd verify exits 0 (%s): %s", n.vm.Name, p, summary)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: bootstrapd verify exited %d after %s of retries (%s):\n%s", n.vm.Name, r.Code, verifySettle, p, r.String())
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: bootstrapd verify: %w; last report (exit %d):\n%s", n.vm.Name, ctx.Err(), r.Code, r.String())
		case <-time.After(20 * time.Second):
		}
	}
}

// noSecretsLeaked looks for the bundle's secret values in the node's
// journal of this boot, its bootstrapd status and everything the lab wrote
// of it (serial consoles, shell transcripts): there must be none. The
// journal is scanned in memory, not kept.
func (s *sc) noSecretsLeaked(ctx context.Context, n *node) error {
	r, err := n.vm.Run(ctx, "journalctl -b --no-pager | gzip -1", 10*time.Minute)
	if err != nil || r.Code != 0 {
		return fmt.Errorf("%s: journalctl: exit %d, %v", n.vm.Name, r.Code, err)
	}
	journal, err := gunzip(r.Out)
	if err != nil {
		return err
	}
	texts := map[string][]byte{"journal": journal, "bootstrapd status": []byte(n.vm.Status(ctx))}
	files, _ := filepath.Glob(filepath.Join(n.vm.LogDir, "*"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		texts[filepath.Base(f)] = b
	}
	for where, text := range texts {
		if which, found := s.secrets.Find(text); found {
			return fmt.Errorf("%s: %s of %s appears in %s", n.vm.Name, which, secretsBundle, where)
		}
	}
	s.ok("%s: none of the bundle's secrets (token, certificate key, fragments of every private key) in its journal (%d KiB), bootstrapd status, consoles, shell transcripts", n.vm.Name, len(journal)>>10)
	return s.secretFilesPrivate(ctx, n)
}

// secretFilesScript lists the node's files that hold a private key, the
// bootstrap token (%[1]s is its id, which is not secret) or a certificate
// key, as "FILEMODE DIRMODE KIND PATH"; KIND is bundle for the token, the
// certificate key and the cluster CAs' keys, key for other private keys
// (the kubelet's, sshd's host keys). The script names no secret.
const secretFilesScript = `roots=; for r in /etc /var/lib/kubeboot /var/lib/kubelet /home /root /run/kubeboot; do [ -e $r ] && roots="$roots $r"; done
grep -rlIs -D skip --exclude-dir=pods -E -e '-----BEGIN [A-Z ]*PRIVATE KEY-----' -e '%[1]s\.[a-z0-9]{16}' -e 'certificateKey' $roots | sort -u | while read -r f; do
  kind=key
  if grep -qsE -e '%[1]s\.[a-z0-9]{16}' -e 'certificateKey' "$f"; then kind=bundle; fi
  case "$f" in /etc/kubernetes/pki/*ca.key|/etc/kubernetes/pki/sa.key) kind=bundle;; esac
  echo "$(stat -c %%a "$f") $(stat -c %%a "$(dirname "$f")") $kind $f"
done`

// secretFilesPrivate checks on the node that every file holding a private
// key, the token or the certificate key is its owner's only (0600 or
// 0400), and that those holding the bundle's secrets sit in 0700
// directories.
func (s *sc) secretFilesPrivate(ctx context.Context, n *node) error {
	out, err := n.vm.Check(ctx, fmt.Sprintf(secretFilesScript, s.tokenID), 5*time.Minute)
	if err != nil {
		return err
	}
	var files, bundle int
	var bad []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.SplitN(line, " ", 4)
		if len(f) != 4 {
			continue
		}
		files++
		if f[0] != "600" && f[0] != "400" {
			bad = append(bad, fmt.Sprintf("%s is %s", f[3], f[0]))
		}
		if f[2] == "bundle" {
			bundle++
			if f[1] != "700" {
				bad = append(bad, fmt.Sprintf("%s holds a secret of the bundle in a %s directory", f[3], f[1]))
			}
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("%s: files holding secrets that others may read: %s", n.vm.Name, strings.Join(bad, "; "))
	}
	// Every node has the kubelet's client key; a control plane has the CAs' keys.
	if files == 0 || (bundle == 0 && n.cfg.Role != machineconfig.RoleWorker) {
		return fmt.Errorf("%s: %d files hold a private key, the token or the certificate key, %d of them the bundle's: the search missed the kubelet's or the CAs' keys:\n%s", n.vm.Name, files, bundle, out)
	}
	s.ok("%s: %d files hold a private key, the token or the certificate key, all 0600 or 0400; the %d holding the bundle's secrets sit in 0700 directories", n.vm.Name, files, bundle)
	return nil
}
