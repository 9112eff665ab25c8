package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"kubeboot.dev/kubeboot/image/oci"
	"kubeboot.dev/kubeboot/internal/nspawntest"
	"kubeboot.dev/kubeboot/machineconfig"
)

// The access scenario's nodes: accessConfig with a name, address and MAC
// per machine; the lab's NTP server is chronyd at the first network's
// gateway, its registry (the nodes' mirror of docker.io) listens there too.
const (
	accessConfig = "e2e/testdata/access.yaml"
	ntpServer    = "172.16.0.254"
	registryAddr = "172.16.0.254:5443"
	// clockOffset is how far ahead the machines' clocks start.
	clockOffset = time.Hour
)

// access: two machines from the same image, their clocks an hour ahead, a
// user with the lab's SSH key, the lab's registry as their mirror of
// docker.io. acc1 is a qcow2 overlay with a CIDATA volume; acc2's disk is
// what `kubeboot flash --config` wrote onto a loop device, booted as is.
// Each syncs its clock from chronyd in the lab before the Kubernetes stages
// go on; the lab logs in over SSH with the key, another key is refused (and
// no password method is offered), sshd refuses passwords and root;
// firewalld opens 22; a pod's image comes through the mirror; the two
// machines' host keys differ.
func (s *sc) access(ctx context.Context) error {
	for _, vm := range s.lab.VMs() { // the cluster's CPU goes to these two
		if err := vm.Kill(); err != nil {
			return err
		}
	}
	if err := s.startNTPServer(ctx); err != nil {
		return err
	}
	dir := filepath.Join(s.lab.Work, "access")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	good, goodPub, err := sshKeyPair(ctx, dir, "lab")
	if err != nil {
		return err
	}
	wrong, _, err := sshKeyPair(ctx, dir, "stranger")
	if err != nil {
		return err
	}
	reg, err := s.lab.StartRegistry(registryAddr)
	if err != nil {
		return err
	}
	image, token, err := pushMirrorImage(ctx, reg, dir)
	if err != nil {
		return err
	}
	s.ok("lab: a registry at %s (its own CA) holds the only copy of %s", registryAddr, image)

	type machine struct {
		vm   *VM
		cfg  *machineconfig.MachineConfig
		addr string
	}
	var ms []machine
	for i := 1; i <= 2; i++ {
		cfg, path, err := s.accessNode(dir, i, goodPub, reg)
		if err != nil {
			return err
		}
		nics, err := nicsOf(cfg, BridgeMgmt)
		if err != nil {
			return err
		}
		spec := VMSpec{Name: fmt.Sprintf("acc%d", i), Image: s.image, Config: path, NICs: nics, ClockOffset: clockOffset}
		if i == 2 {
			if spec.Disk, err = s.flashDisk(ctx, dir, path); err != nil {
				return err
			}
			spec.Config = ""
		}
		vm, err := s.lab.NewVM(ctx, spec)
		if err != nil {
			return err
		}
		if err := vm.Start(ctx); err != nil {
			return err
		}
		addr, _, _ := strings.Cut(cfg.Network.Interfaces[0].Addresses[0], "/")
		ms = append(ms, machine{vm, cfg, addr})
	}
	hostKeys := map[string]string{}
	for _, m := range ms {
		b := s.newBoot(m.vm, "first boot, clock 1 h ahead", m.vm.Started, 0)
		if err := s.awaitHost(ctx, b); err != nil {
			return err
		}
		if err := s.checkNetwork(ctx, m.vm, m.cfg); err != nil {
			return err
		}
		if err := s.checkClock(ctx, m.vm); err != nil {
			return err
		}
		if err := s.checkSSH(ctx, m.vm, m.addr, good, wrong); err != nil {
			return err
		}
		checks, err := m.vm.CheckFirewall(ctx, m.cfg, m.addr, 22, false)
		if err != nil {
			return err
		}
		s.oks(m.vm.Name+": ", checks)
		if err := s.checkMirror(ctx, m.vm, m.addr, reg, image, token); err != nil {
			return err
		}
		// stdout only: ssh-keyscan's comments go to stderr.
		key, err := s.lab.Command(ctx, "ssh-keyscan", "-T", "10", "-t", "ed25519", m.addr).Output()
		if err != nil {
			return fmt.Errorf("ssh-keyscan %s: %w", m.addr, err)
		}
		if host, k, _ := strings.Cut(strings.TrimSpace(string(key)), " "); host == m.addr {
			hostKeys[m.vm.Name] = k
		}
		if err := s.finish(ctx, b); err != nil {
			return err
		}
	}
	if hostKeys["acc1"] == "" || hostKeys["acc1"] == hostKeys["acc2"] {
		return fmt.Errorf("host keys of acc1 and acc2 from one image: %q and %q, want two different keys", hostKeys["acc1"], hostKeys["acc2"])
	}
	s.ok("acc1 and acc2, flashed from one image, have different host keys (%s / %s)", hostKeys["acc1"], hostKeys["acc2"])
	for _, m := range ms {
		if err := m.vm.Poweroff(ctx); err != nil {
			return err
		}
	}
	return nil
}

// accessNode writes machine i's config (0600, in the lab's work dir):
// accessConfig with its own name, address, MAC, admin's key and the lab's
// registry as its mirror of docker.io.
func (s *sc) accessNode(dir string, i int, pub string, reg *Registry) (*machineconfig.MachineConfig, string, error) {
	cfg, err := s.loadConfig(accessConfig)
	if err != nil {
		return nil, "", err
	}
	addr := fmt.Sprintf("172.16.0.%d", 40+i)
	cfg.Hostname = fmt.Sprintf("access%d.home.local", i)
	cfg.Kubernetes.NodeName = cfg.Hostname
	cfg.Kubernetes.AdvertiseAddress = addr
	cfg.Network.Interfaces[0].Match.MACAddress = fmt.Sprintf("52:54:00:aa:00:%02x", i)
	cfg.Network.Interfaces[0].Addresses = []string{addr + "/24"}
	cfg.Users[0].SSHAuthorizedKeys = []string{pub}
	cfg.Containerd.Mirrors = []machineconfig.RegistryMirror{{Registry: "docker.io",
		Endpoints: []machineconfig.MirrorEndpoint{{URL: "https://" + reg.Addr, CACert: string(reg.CA)}}}}
	path := filepath.Join(dir, fmt.Sprintf("access%d.yaml", i))
	if err := os.WriteFile(path, cfg.Marshal(), 0o600); err != nil {
		return nil, "", err
	}
	cfg, err = machineconfig.Load(path)
	return cfg, path, err
}

// startNTPServer runs Debian's chronyd in a systemd-nspawn container that
// shares the lab's namespace, so it answers at the gateway's address. It
// serves its clock, the host's (local stratum 8), and never sets it: -x,
// and the container has no CAP_SYS_TIME. The container stops with the test.
func (s *sc) startNTPServer(ctx context.Context) error {
	dir := filepath.Join(s.lab.Work, "ntp")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	conf := "local stratum 8\nallow 172.16.0.0/24\ncmdport 0\nbindcmdaddress /\npidfile /run/kb-chronyd.pid\n"
	if err := os.WriteFile(filepath.Join(dir, "chrony.conf"), []byte(conf), 0o644); err != nil {
		return err
	}
	rootfs := nspawntest.Rootfs(s.t, "trixie", []string{"systemd", "systemd-sysv", "dbus", "chrony"})
	c := nspawntest.Boot(s.t, rootfs, s.lab.NS, dir)
	// The test's cleanup powers it off; a torn-down lab (a signal) kills it.
	s.lab.onClose("the NTP server's container", func() error { c.Kill(); return nil })
	c.WaitSystem(s.t)
	if c.CanSetClock(s.t) {
		return fmt.Errorf("the NTP server's container %s may set the host's clock: not starting chronyd in it", c.Name)
	}
	c.MustExec(s.t, "systemd-run", "--unit=kb-chronyd", "/usr/sbin/chronyd", "-x", "-d", "-f", nspawntest.BindDir+"/chrony.conf")
	s.ok("lab: chronyd (Debian's chrony, -x) serves NTP at %s", ntpServer)
	return nil
}

// checkClock waits for bootstrapd's time stage and checks the clock: the
// boot's journal shows it stepped back by about clockOffset (each entry's
// wall clock less its monotonic clock is the boot's start as the clock
// saw it), timesyncd's server is the lab's, and the guest now agrees
// with the host.
func (s *sc) checkClock(ctx context.Context, vm *VM) error {
	if err := vm.WaitStep(ctx, "time"); err != nil {
		return err
	}
	bootStart := func(script string) (float64, error) {
		out, err := vm.Check(ctx, script, time.Minute)
		if err != nil {
			return 0, err
		}
		var e struct {
			Realtime  string `json:"__REALTIME_TIMESTAMP"`
			Monotonic string `json:"__MONOTONIC_TIMESTAMP"`
		}
		if err := json.Unmarshal([]byte(out), &e); err != nil {
			return 0, fmt.Errorf("%s: journal entry %q: %w", vm.Name, out, err)
		}
		rt, err1 := strconv.ParseFloat(e.Realtime, 64)
		mono, err2 := strconv.ParseFloat(e.Monotonic, 64)
		if err1 != nil || err2 != nil {
			return 0, fmt.Errorf("%s: journal entry %q", vm.Name, out)
		}
		return (rt - mono) / 1e6, nil
	}
	first, err := bootStart("journalctl -b -o json -n +1")
	if err != nil {
		return err
	}
	last, err := bootStart("journalctl -b -o json -n 1")
	if err != nil {
		return err
	}
	if step := first - last; math.Abs(step-clockOffset.Seconds()) > 120 {
		return fmt.Errorf("%s: the clock moved by %.0f s during the boot, want about -%.0f s (it started %s ahead)", vm.Name, -step, clockOffset.Seconds(), clockOffset)
	}
	server, err := vm.Check(ctx, "timedatectl show-timesync -p ServerAddress --value", time.Minute)
	if err != nil || server != ntpServer {
		return fmt.Errorf("%s: timesyncd's server is %q (%v), want the lab's %s", vm.Name, server, err, ntpServer)
	}
	out, err := vm.Check(ctx, "date +%s", time.Minute)
	if err != nil {
		return err
	}
	guest, err := strconv.ParseInt(out, 10, 64)
	if err != nil {
		return fmt.Errorf("%s: date +%%s: %q", vm.Name, out)
	}
	if d := time.Since(time.Unix(guest, 0)); d.Abs() > 30*time.Second {
		return fmt.Errorf("%s: the guest's clock is %s off the host's after the time stage", vm.Name, d.Round(time.Second))
	}
	s.ok("%s: clock started %s ahead, stepped back by the time stage's sync from %s; now within 30 s of the host's", vm.Name, clockOffset, ntpServer)
	return nil
}

// checkSSH logs in from the lab with the configured key, is refused with
// another (publickey the only method offered), and reads sshd's effective
// settings.
func (s *sc) checkSSH(ctx context.Context, vm *VM, addr, good, wrong string) error {
	ssh := func(key string) (string, error) {
		return s.lab.Exec(ctx, "ssh", "-F", "/dev/null", "-i", key, "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR",
			"-o", "ConnectTimeout=20", "-o", "StrictHostKeyChecking=accept-new",
			"-o", "UserKnownHostsFile="+filepath.Join(filepath.Dir(good), "known_hosts"), "admin@"+addr, "id -un")
	}
	if out, err := ssh(good); err != nil || strings.TrimSpace(out) != "admin" {
		return fmt.Errorf("%s: ssh admin@%s with the configured key: %v: %s", vm.Name, addr, err, out)
	}
	if out, err := ssh(wrong); err == nil || !strings.Contains(out, "Permission denied (publickey).") {
		return fmt.Errorf("%s: ssh admin@%s with another key: %v: %q, want Permission denied (publickey)", vm.Name, addr, err, out)
	}
	// sshd -T prints in its own order, which changes between releases.
	eff, err := vm.Check(ctx, "sshd -T | grep -E '^(passwordauthentication|kbdinteractiveauthentication|permitrootlogin) ' | sort", time.Minute)
	if err != nil {
		return err
	}
	if want := "kbdinteractiveauthentication no\npasswordauthentication no\npermitrootlogin no"; eff != want {
		return fmt.Errorf("%s: sshd -T: %q, want %q", vm.Name, eff, want)
	}
	s.ok("%s: ssh admin@%s from the lab with the configured key; another key refused (publickey only); sshd: no passwords, no root", vm.Name, addr)
	return nil
}

// sshKeyPair makes an ed25519 key pair in dir with ssh-keygen.
func sshKeyPair(ctx context.Context, dir, name string) (key, pub string, err error) {
	key = filepath.Join(dir, name)
	if out, err := exec.CommandContext(ctx, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name+"@kubeboot-lab", "-f", key).CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("ssh-keygen: %v: %s", err, out)
	}
	b, err := os.ReadFile(key + ".pub")
	return key, strings.TrimSpace(string(b)), err
}

// flashDisk writes out/node.raw.zst and config onto a loop device over a
// sparse 10 GiB file with `kubeboot flash --yes`, as docs/flash.md shows,
// and returns the file: the disk of a machine a person flashed.
func (s *sc) flashDisk(ctx context.Context, dir, config string) (string, error) {
	disk := filepath.Join(dir, "flashed.img")
	f, err := os.OpenFile(disk, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return "", err
	}
	err = f.Truncate(10 << 30)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", err
	}
	out, err := exec.CommandContext(ctx, "losetup", "--find", "--show", disk).Output()
	if err != nil {
		return "", fmt.Errorf("losetup %s: %w", disk, err)
	}
	dev := strings.TrimSpace(string(out))
	// Detached here, or by the lab's teardown when Ctrl-C ends the run
	// first (the signal handler exits without running defers); once, so
	// the number is not taken from whoever gets it next.
	detach := sync.OnceValue(func() error { return exec.Command("losetup", "--detach", dev).Run() })
	s.lab.onClose("detach "+dev, detach)
	defer detach()
	zst := filepath.Join(s.repo, "out/node.raw.zst")
	start := time.Now()
	out, err = exec.CommandContext(ctx, s.lab.Kubeboot, "flash", "--image", zst, "--device", dev, "--config", config, "--yes").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("kubeboot flash --image %s --device %s --config %s: %w: %s", zst, dev, config, err, tail(string(out), 15))
	}
	s.ok("acc2: kubeboot flash --config wrote its disk through %s in %.1f s: %s", dev, time.Since(start).Seconds(), tail(string(out), 1))
	return disk, nil
}

// pushMirrorImage pushes a one-layer image to the lab's registry: the
// host's static BusyBox (scripts/setup-host.sh installs busybox-static)
// and a token made for this run, which the image's entrypoint prints. It
// returns the docker.io name the nodes pull it by, and the token.
func pushMirrorImage(ctx context.Context, reg *Registry, dir string) (ref, token string, err error) {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		return "", "", err
	}
	token = "kubeboot-e2e-" + hex.EncodeToString(b)
	img, err := oci.Build(dir, oci.Config{Entrypoint: []string{"/bin/busybox", "cat", "/token"}},
		[]oci.Entry{{Path: "/bin/busybox", Source: "/bin/busybox", Mode: 0o755}, {Path: "/token", Data: []byte(token + "\n")}})
	if err != nil {
		return "", "", err
	}
	defer img.Close()
	repoTag := "kubeboot-e2e/mirror:" + token
	if err := reg.Push(ctx, repoTag, img); err != nil {
		return "", "", err
	}
	return "docker.io/" + repoTag, token, nil
}

// mirrorPod runs a pod of image %[1]s through the CRI as the kubelet would
// (the access scenario's nodes have no control plane), in the host's
// network namespace so that no pod network is needed. The container prints
// its image's token and exits; the script prints the container's log.
const mirrorPod = `set -e
d=/run/kubeboot-e2e-mirror
mkdir -p $d/logs
cat > $d/pod.json <<'END'
{"metadata": {"name": "e2e-mirror", "namespace": "default", "uid": "e2e-mirror"},
 "log_directory": "/run/kubeboot-e2e-mirror/logs",
 "linux": {"cgroup_parent": "system.slice", "security_context": {"namespace_options": {"network": 2}}}}
END
cat > $d/main.json <<'END'
{"metadata": {"name": "main"}, "image": {"image": "%[1]s"}, "log_path": "main.log"}
END
cri() { crictl --timeout 2m "$@"; } # TCG: slower than crictl.yaml's 10 s
cri pull %[1]s >/dev/null
pod=$(cri runp $d/pod.json)
c=$(cri create $pod $d/main.json $d/pod.json)
cri start $c >/dev/null
for i in $(seq 120); do cri ps -a --id $c -o json | grep -q CONTAINER_EXITED && break; sleep 1; done
cri logs $c 2>/dev/null
cri stopp $pod >/dev/null
cri rmp $pod >/dev/null`

// checkMirror runs a pod of image, a docker.io name that only the lab's
// registry holds (the lab has no route out): the node's containerd.mirrors
// sends the pull there, TLS checked against the config's caCert. The pod
// must print the image's token, and the registry must have served the node
// the image's manifest and blobs.
func (s *sc) checkMirror(ctx context.Context, vm *VM, addr string, reg *Registry, image, token string) error {
	out, err := vm.Check(ctx, fmt.Sprintf(mirrorPod, image), 5*time.Minute)
	if err != nil {
		return fmt.Errorf("%s: a pod of %s through the mirror: %w", vm.Name, image, err)
	}
	if out != token {
		return fmt.Errorf("%s: the pod of %s printed %q, want the image's token %q", vm.Name, image, out, token)
	}
	var manifests, blobs int
	for _, p := range reg.Fetched(addr) {
		switch {
		case strings.Contains(p, "/manifests/"):
			manifests++
		case strings.Contains(p, "/blobs/"):
			blobs++
		}
	}
	if manifests == 0 || blobs == 0 {
		return fmt.Errorf("%s: the pod ran, but the lab's registry served %s %d manifests and %d blobs: the image did not come through the mirror", vm.Name, addr, manifests, blobs)
	}
	s.ok("%s: a pod of %s ran and printed the image's token; the lab's registry (the node's docker.io mirror, with its own CA) served %s %d manifest and %d blob requests", vm.Name, image, addr, manifests, blobs)
	return nil
}
