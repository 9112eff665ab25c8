package hostname

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/machineconfig"
)

func TestReplaceBlock(t *testing.T) {
	block := "172.16.0.11\tcontroller.home.local controller\n"
	managed := BlockBegin + "\n" + block + BlockEnd + "\n"
	for _, tc := range []struct{ name, in, want string }{
		{"empty", "", managed},
		{"appended, other lines kept", "127.0.0.1 localhost\n# mine\n10.1.1.1 nas", "127.0.0.1 localhost\n# mine\n10.1.1.1 nas\n" + managed},
		{"replaced in place", "127.0.0.1 localhost\n" + BlockBegin + "\n1.2.3.4 old\n" + BlockEnd + "\n10.1.1.1 nas\n",
			"127.0.0.1 localhost\n" + managed + "10.1.1.1 nas\n"},
		{"begin without end keeps the lines after it", "127.0.0.1 localhost\n" + BlockBegin + "\n10.1.1.1 nas\n",
			"127.0.0.1 localhost\n10.1.1.1 nas\n" + managed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := string(ReplaceBlock([]byte(tc.in), block))
			if got != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
			if again := string(ReplaceBlock([]byte(got), block)); again != got {
				t.Errorf("not idempotent:\n%s", again)
			}
		})
	}
}

func TestBlock(t *testing.T) {
	cfg := &machineconfig.MachineConfig{Hostname: "controller.home.local"}
	cfg.Kubernetes.AdvertiseAddress = "172.16.0.11"
	cfg.Hosts = []machineconfig.HostEntry{{IP: "172.16.0.12", Names: []string{"cp2.home.local", "cp2"}}}
	if got, want := Block(cfg), "172.16.0.11\tcontroller.home.local controller\n172.16.0.12\tcp2.home.local cp2\n"; got != want {
		t.Errorf("Block = %q, want %q", got, want)
	}
	// The config's own hosts entry for the node replaces the generated one.
	cfg.Hosts = []machineconfig.HostEntry{{IP: "172.16.0.11", Names: []string{"controller.home.local"}}}
	if got, want := Block(cfg), "172.16.0.11\tcontroller.home.local\n"; got != want {
		t.Errorf("Block = %q, want %q", got, want)
	}
	// DHCP only: no address to name.
	if got := Block(&machineconfig.MachineConfig{Hostname: "n"}); got != "" {
		t.Errorf("Block = %q, want none", got)
	}
}

// TestStageInUTSNamespace runs the stage against the real kernel hostname
// in a UTS namespace of this test's own thread, and a temporary root.
func TestStageInUTSNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a UTS namespace")
	}
	// The thread stays locked: it dies with the test goroutine, and with it
	// the namespace, so the host's hostname is never touched.
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWUTS); err != nil {
		t.Fatalf("unshare UTS: %v", err)
	}
	if err := unix.Sethostname([]byte("vm")); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	hosts := "127.0.0.1\tlocalhost\n127.0.1.1\tvm\n# kept\n"
	if err := os.WriteFile(filepath.Join(root, "etc/hosts"), []byte(hosts), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc/hostname"), []byte("vm\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := &machineconfig.MachineConfig{Hostname: "controller.home.local"}
	cfg.Kubernetes.AdvertiseAddress = "172.16.0.11"
	env := &stage.Env{Root: root, NetNS: netns.None(), Config: cfg, Log: slog.New(slog.DiscardHandler)}
	s := New()
	ctx := context.Background()

	planned, err := s.Plan(ctx, env)
	if err != nil || len(planned) != 3 {
		t.Fatalf("Plan = %v, %v; want 3 changes", planned, err)
	}
	if name := kernelHostname(t); name != "vm" {
		t.Fatalf("Plan changed the hostname to %q", name)
	}
	changes, err := s.Apply(ctx, env)
	if err != nil || len(changes) != 3 {
		t.Fatalf("Apply = %v, %v", changes, err)
	}
	if name := kernelHostname(t); name != "controller.home.local" {
		t.Errorf("kernel hostname = %q", name)
	}
	if data, _ := os.ReadFile(filepath.Join(root, "etc/hostname")); string(data) != "controller.home.local\n" {
		t.Errorf("/etc/hostname = %q", data)
	}
	wantHosts := hosts + BlockBegin + "\n172.16.0.11\tcontroller.home.local controller\n" + BlockEnd + "\n"
	if data, _ := os.ReadFile(filepath.Join(root, "etc/hosts")); string(data) != wantHosts {
		t.Errorf("/etc/hosts =\n%s\nwant\n%s", data, wantHosts)
	}
	if info, _ := os.Stat(filepath.Join(root, "etc/hosts")); info == nil || info.Mode().Perm() != 0o644 {
		t.Errorf("/etc/hosts mode = %v", info)
	}

	again, err := s.Apply(ctx, env)
	if err != nil || len(again) != 0 {
		t.Errorf("second Apply = %v, %v; want no changes", again, err)
	}
	if v, ok := s.(stage.Validator); !ok || v.Validate(ctx, env) != nil {
		t.Error("Validate rejects a config with a hostname")
	}
	env.Config = &machineconfig.MachineConfig{}
	if err := s.(stage.Validator).Validate(ctx, env); err == nil || !strings.Contains(err.Error(), "local-hostname") {
		t.Errorf("Validate without a hostname: %v", err)
	}
}

func kernelHostname(t *testing.T) string {
	t.Helper()
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		t.Fatal(err)
	}
	return unix.ByteSliceToString(uts.Nodename[:])
}
