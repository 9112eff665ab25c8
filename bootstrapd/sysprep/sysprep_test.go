package sysprep

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netns"

	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/machineconfig"
)

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// fakeKernel lays out the procfs and sysfs files sysprep reads, as a kernel
// with overlay built in (listed in /proc/filesystems), br_netfilter built in
// (its sysctls exist), nf_conntrack loaded and no swap would show them.
func fakeKernel(t *testing.T) (proc, sys string) {
	dir := t.TempDir()
	proc, sys = filepath.Join(dir, "proc"), filepath.Join(dir, "sys")
	write(t, filepath.Join(proc, "filesystems"), "nodev\tsysfs\nnodev\ttmpfs\nnodev\toverlay\n\text4\n")
	write(t, filepath.Join(proc, "modules"), "")
	write(t, filepath.Join(proc, "swaps"), "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n")
	write(t, filepath.Join(proc, "sys/net/ipv4/ip_forward"), "0\n")
	write(t, filepath.Join(proc, "sys/net/bridge/bridge-nf-call-iptables"), "0\n")
	write(t, filepath.Join(proc, "sys/net/bridge/bridge-nf-call-ip6tables"), "1\n")
	write(t, filepath.Join(proc, "sys/net/core/somaxconn"), "4096\n")
	write(t, filepath.Join(proc, "sys/net/ipv4/tcp_rmem"), "4096\t131072\t6291456\n")
	if err := os.MkdirAll(filepath.Join(sys, "module/nf_conntrack"), 0o755); err != nil {
		t.Fatal(err)
	}
	return proc, sys
}

func newEnv(t *testing.T, proc, sys string) *stage.Env {
	cfg := &machineconfig.MachineConfig{Hostname: "n1"}
	cfg.System.Modules = []string{"nf_conntrack", "overlay"}
	cfg.System.Sysctls = map[string]string{"net.core.somaxconn": "8192", "net.ipv4.tcp_rmem": "4096 131072  6291456"}
	return &stage.Env{Root: t.TempDir(), NetNS: netns.None(), Config: cfg, Log: slog.New(slog.DiscardHandler), Proc: proc, Sys: sys}
}

func TestFileEffects(t *testing.T) {
	proc, sys := fakeKernel(t)
	env := newEnv(t, proc, sys)
	s := New()
	ctx := context.Background()

	planned, err := s.Plan(ctx, env)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"write " + ModulesFile,
		"sysctl net.ipv4.ip_forward: 0 -> 1",
		"sysctl net.bridge.bridge-nf-call-iptables: 0 -> 1",
		"sysctl net.core.somaxconn: 4096 -> 8192",
		"write " + SysctlFile,
		"mask swap.target (" + SwapMask + " -> /dev/null) so swap stays off on later boots",
	}
	if got := fmt.Sprint(planned); got != fmt.Sprint(want) {
		t.Errorf("Plan =\n%v\nwant\n%v", got, want)
	}
	if got := read(t, filepath.Join(proc, "sys/net/ipv4/ip_forward")); got != "0\n" {
		t.Fatalf("Plan wrote ip_forward: %q", got)
	}

	changes, err := s.Apply(ctx, env)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(changes) != fmt.Sprint(want) {
		t.Errorf("Apply =\n%v\nwant\n%v", changes, want)
	}
	for key, v := range map[string]string{
		"net/ipv4/ip_forward": "1\n", "net/bridge/bridge-nf-call-iptables": "1\n", "net/bridge/bridge-nf-call-ip6tables": "1\n",
		"net/core/somaxconn": "8192\n", "net/ipv4/tcp_rmem": "4096\t131072\t6291456\n", // equal after normalising: untouched
	} {
		if got := read(t, filepath.Join(proc, "sys", key)); got != v {
			t.Errorf("/proc/sys/%s = %q, want %q", key, got, v)
		}
	}
	if got, want := read(t, env.Path(ModulesFile)), "# Written by bootstrapd: kernel modules Kubernetes needs, loaded at boot.\noverlay\nbr_netfilter\nnf_conntrack\n"; got != want {
		t.Errorf("%s =\n%s", ModulesFile, got)
	}
	wantSysctl := "# Written by bootstrapd: kernel settings Kubernetes needs, applied at boot by systemd-sysctl.\n" +
		"net.ipv4.ip_forward = 1\nnet.bridge.bridge-nf-call-iptables = 1\nnet.bridge.bridge-nf-call-ip6tables = 1\n" +
		"net.core.somaxconn = 8192\nnet.ipv4.tcp_rmem = 4096 131072  6291456\n"
	if got := read(t, env.Path(SysctlFile)); got != wantSysctl {
		t.Errorf("%s =\n%s\nwant\n%s", SysctlFile, got, wantSysctl)
	}
	if target, err := os.Readlink(env.Path(SwapMask)); err != nil || target != "/dev/null" {
		t.Errorf("swap.target mask: %q %v", target, err)
	}

	again, err := s.Apply(ctx, env)
	if err != nil || len(again) != 0 {
		t.Errorf("second Apply = %v, %v; want no changes", again, err)
	}
}

func TestIPv6ClusterForwards(t *testing.T) {
	proc, sys := fakeKernel(t)
	write(t, filepath.Join(proc, "sys/net/ipv6/conf/all/forwarding"), "0\n")
	write(t, filepath.Join(proc, "sys/net/ipv6/conf/default/forwarding"), "0\n")
	env := newEnv(t, proc, sys)
	env.Config.Kubernetes.PodSubnet = "fd00:10::/56"
	if _, err := New().Apply(context.Background(), env); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(proc, "sys/net/ipv6/conf/default/forwarding")); got != "1\n" {
		t.Errorf("ipv6 default forwarding = %q (kubeadm preflight checks it for IPv6 clusters)", got)
	}
}

func TestModulesThatCannotBeLoaded(t *testing.T) {
	proc, sys := fakeKernel(t)
	env := newEnv(t, proc, sys)
	env.Config.System.Modules = []string{"kubeboot_no_such_module"}
	if err := os.Remove(filepath.Join(proc, "modules")); err != nil {
		t.Fatal(err)
	}
	_, err := New().Apply(context.Background(), env)
	if err == nil || !strings.Contains(err.Error(), "kubeboot_no_such_module: not built in, and this kernel cannot load modules") {
		t.Errorf("kernel without module support: err = %v", err)
	}

	write(t, filepath.Join(proc, "modules"), "")
	_, err = New().Apply(context.Background(), env)
	if err == nil || !strings.Contains(err.Error(), "modprobe kubeboot_no_such_module") {
		t.Errorf("missing module: err = %v", err)
	}
}

func TestUnescapeOctal(t *testing.T) {
	if got := unescapeOctal(`/var/swap\040file\134x`); got != `/var/swap file\x` {
		t.Errorf("got %q", got)
	}
}

// TestRealKernelInNetworkNamespace applies sysprep to the running kernel
// inside a network namespace the test makes: net.ipv4.ip_forward and the
// bridge sysctls are per namespace, so the host's own are not touched.
func TestRealKernelInNetworkNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace")
	}
	swaps, err := os.ReadFile("/proc/swaps")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(strings.TrimSpace(string(swaps)), "\n") > 0 {
		t.Skip("this host has active swap; sysprep would turn it off for the whole machine")
	}
	hostForward := read(t, "/proc/sys/net/ipv4/ip_forward")

	name := fmt.Sprintf("kbtest-sysprep-%d", os.Getpid())
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	ns, err := netns.NewNamed(name) // also moves this thread into it
	if serr := netns.Set(orig); serr != nil {
		t.Fatal(serr)
	}
	runtime.UnlockOSThread()
	if err != nil {
		t.Fatalf("create netns: %v", err)
	}
	t.Cleanup(func() {
		ns.Close()
		orig.Close()
		netns.DeleteNamed(name)
	})

	// A swap file of the test's own, for sysprep to turn off (the host has none).
	swapFile := filepath.Join(t.TempDir(), "swap file")
	if err := makeSwap(swapFile); err != nil {
		t.Logf("no swap file to turn off, checking sysctls only: %v", err)
		swapFile = ""
	} else {
		t.Cleanup(func() { swapoff(swapFile) })
	}

	env := &stage.Env{Root: t.TempDir(), NetNS: ns, Config: &machineconfig.MachineConfig{Hostname: "n1"}, Log: slog.New(slog.DiscardHandler)}
	s := New()
	changes, err := s.Apply(context.Background(), env)
	if err != nil {
		t.Fatal(err)
	}
	if swapFile != "" {
		if !slices.Contains(changes, stage.Change("swap off "+swapFile)) {
			t.Errorf("changes %q lack turning off %s", changes, swapFile)
		}
		if swaps := read(t, "/proc/swaps"); strings.Contains(swaps, filepath.Base(filepath.Dir(swapFile))) {
			t.Errorf("swap still on:\n%s", swaps)
		}
	}
	for _, key := range []string{"net/ipv4/ip_forward", "net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables"} {
		out, err := exec.Command("ip", "netns", "exec", name, "cat", "/proc/sys/"+key).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "1" {
			t.Errorf("%s in the namespace = %q, %v; want 1", key, out, err)
		}
	}
	if got := read(t, "/proc/sys/net/ipv4/ip_forward"); got != hostForward {
		t.Errorf("the host's ip_forward changed from %q to %q", hostForward, got)
	}
	if again, err := s.Apply(context.Background(), env); err != nil || len(again) != 0 {
		t.Errorf("second Apply = %v, %v; want no changes", again, err)
	}
}

// makeSwap makes and enables a 16 MiB swap file; file systems that cannot
// hold swap (tmpfs, overlay) make it fail, and the caller goes on without.
func makeSwap(p string) error {
	if _, err := exec.LookPath("mkswap"); err != nil {
		return err
	}
	if err := os.WriteFile(p, make([]byte, 16<<20), 0o600); err != nil {
		return err
	}
	if out, err := exec.Command("mkswap", p).CombinedOutput(); err != nil {
		return fmt.Errorf("mkswap: %v: %s", err, out)
	}
	if out, err := exec.Command("swapon", p).CombinedOutput(); err != nil {
		return fmt.Errorf("swapon: %v: %s", err, out)
	}
	return nil
}
