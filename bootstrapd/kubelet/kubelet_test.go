package kubelet

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/internal/netnstest"
	"kubeboot.dev/kubeboot/internal/nspawntest"
)

// The test runs this test binary inside a booted Debian container, where
// it talks to the container's systemd; innerEnv carries the operation.
const innerEnv = "KUBEBOOT_KUBELET_INNER"

func TestMain(m *testing.M) { nspawntest.Main(m, innerEnv, runInner) }

func runInner(op string) ([]stage.Change, error) {
	env := &stage.Env{Root: "/", NetNS: netns.None(), Log: slog.New(slog.NewTextHandler(os.Stderr, nil)), Data: &stage.RunData{}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	switch op {
	case "plan":
		return New().Plan(ctx, env)
	case "apply":
		return New().Apply(ctx, env)
	}
	return nil, fmt.Errorf("unknown op %q", op)
}

// TestKubeletUnitThroughSystemd runs the stage against a real systemd
// (Debian trixie in systemd-nspawn) holding the image's kubelet.service.
// The unit's ExecStart is replaced by `sleep infinity` in a drop-in: the
// real kubelet needs a cluster, and what is tested here is systemd's side
// (enabling, the start condition, starting, noticing it stopped).
func TestKubeletUnitThroughSystemd(t *testing.T) {
	nspawntest.Require(t)
	rootfs := nspawntest.Rootfs(t, "trixie", []string{"systemd", "systemd-sysv", "dbus", "firewalld", "nftables", "iproute2"})
	ns := fmt.Sprintf("kbkl%d", os.Getpid()%100000)
	netnstest.New(t, ns)
	bind := t.TempDir()
	nspawntest.CopySelf(t, bind, "kubelet.test")
	unit, err := os.ReadFile("../../overlays/usr/lib/systemd/system/kubelet.service")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bind, Unit), unit, 0o644); err != nil {
		t.Fatal(err)
	}
	c := nspawntest.Boot(t, rootfs, ns, bind)
	c.WaitSystem(t)
	c.MustExec(t, "mkdir", "-p", "/etc/systemd/system/kubelet.service.d")
	c.MustExec(t, "cp", nspawntest.BindDir+"/"+Unit, "/usr/lib/systemd/system/"+Unit) // where the image has it
	c.MustExec(t, "sh", "-c", `printf '[Service]\nExecStart=\nExecStart=/bin/sleep infinity\n' > /etc/systemd/system/kubelet.service.d/stand-in.conf`)
	c.MustExec(t, "systemctl", "daemon-reload")

	run := func(op string) nspawntest.Result {
		t.Helper()
		res := c.Inner(t, "kubelet.test", innerEnv, op)
		if res.Error != "" {
			t.Fatalf("%s in the container: %s", op, res.Error)
		}
		return res
	}
	want := func(what string, got []stage.Change, want ...stage.Change) {
		t.Helper()
		if !slices.Equal(got, want) {
			t.Errorf("%s: %q, want %q", what, got, want)
		}
	}

	// Before kubeadm: enabled is all that is wanted.
	want("plan, disabled", run("plan").Changes, "enable "+Unit)
	want("apply, disabled", run("apply").Changes, "enable "+Unit)
	if got := c.MustExec(t, "systemctl", "is-enabled", Unit); got != "enabled" {
		t.Errorf("is-enabled = %q", got)
	}
	want("apply again", run("apply").Changes)
	if got, _ := c.Exec(t, nil, "systemctl", "is-active", Unit); got != "inactive\n" {
		t.Errorf("kubelet %q before kubeadm wrote its config; want inactive (idle)", got)
	}

	// kubeadm wrote the configuration: it must run.
	c.MustExec(t, "mkdir", "-p", "/var/lib/kubelet")
	c.MustExec(t, "touch", ConfigPath)
	want("plan, configured", run("plan").Changes, "start "+Unit)
	want("apply, configured", run("apply").Changes, "start "+Unit)
	if got := c.MustExec(t, "systemctl", "is-active", Unit); got != "active" {
		t.Errorf("is-active = %q after apply", got)
	}
	want("plan, running", run("plan").Changes)

	// Stopped behind our back (or not started on a boot): started again.
	c.MustExec(t, "systemctl", "stop", Unit)
	want("plan, stopped", run("plan").Changes, "start "+Unit)
	run("apply")
	if got := c.MustExec(t, "systemctl", "is-active", Unit); got != "active" {
		t.Errorf("is-active = %q after the second start", got)
	}

	// A masked unit is a clear error, not a retry loop.
	c.MustExec(t, "systemctl", "mask", Unit)
	if res := c.Inner(t, "kubelet.test", innerEnv, "plan"); !strings.Contains(res.Error, "is masked: unmask it") {
		t.Errorf("masked: %+v; want the error saying so", res)
	}
}
