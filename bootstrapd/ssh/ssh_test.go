package ssh

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/bootstrapd/users"
	"kubeboot.dev/kubeboot/internal/netnstest"
	"kubeboot.dev/kubeboot/internal/nspawntest"
	"kubeboot.dev/kubeboot/machineconfig"
)

// The test runs this test binary inside a booted Debian container: the
// users stage, then this one, on the config file innerEnv names.
const innerEnv = "KUBEBOOT_SSH_INNER_CONFIG"

func TestMain(m *testing.M) { nspawntest.Main(m, innerEnv, runInner) }

func runInner(path string) ([]stage.Change, error) {
	cfg, err := machineconfig.Load(path)
	if err != nil {
		return nil, err
	}
	env := &stage.Env{Root: "/", NetNS: netns.None(), Config: cfg, Log: slog.New(slog.NewTextHandler(os.Stderr, nil)), Data: &stage.RunData{}}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := users.New().Apply(ctx, env); err != nil {
		return nil, err
	}
	if err := New().(stage.Validator).Validate(ctx, env); err != nil {
		return nil, err
	}
	return New().Apply(ctx, env)
}

const (
	nodeIP   = "10.124.0.2"
	clientIP = "10.124.0.1"
)

// TestSSHLoginWithTheConfiguredKey runs the users and ssh stages against a
// real systemd and OpenSSH (Debian trixie in systemd-nspawn) prepared like
// the image: no host keys, the image's sshd_config.d and ssh.service
// drop-ins. From a second network namespace, the host's ssh client logs in
// with the configured key, a wrong key and passwords are refused; a new
// port and the keys' removal follow.
func TestSSHLoginWithTheConfiguredKey(t *testing.T) {
	nspawntest.Require(t)
	if _, err := exec.LookPath("ssh"); err != nil {
		t.Skip("ssh client not installed (openssh-client, scripts/setup-host.sh)")
	}
	rootfs := nspawntest.Rootfs(t, "trixie", []string{"systemd", "systemd-sysv", "dbus", "openssh-server"})
	id := fmt.Sprintf("kbsh%d", os.Getpid()%100000)
	netnstest.New(t, id+"n")
	netnstest.New(t, id+"c")
	netnstest.Veth(t, id+"n", id+"c", "eth0", nodeIP+"/24", clientIP+"/24")
	bind := t.TempDir()
	nspawntest.CopySelf(t, bind, "ssh.test")
	for src, dst := range map[string]string{
		"../../overlays/etc/ssh/sshd_config.d/50-kubeboot.conf":                "sshd.conf",
		"../../overlays/usr/lib/systemd/system/ssh.service.d/50-kubeboot.conf": "unit.conf",
	} {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(bind, dst), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	good, goodPub := keyPair(t, bind, "good")
	wrong, _ := keyPair(t, bind, "wrong")
	config := func(name, users string) string {
		doc := "apiVersion: kubeboot.dev/v1alpha1\nkind: MachineConfig\nrole: worker\nhostname: n1\n" +
			"kubernetes:\n  version: v1.37.2\n  controlPlaneEndpoint: cp:6443\n" +
			"  credentials: {token: abcdef.0123456789abcdef, caCertHashes: [\"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"]}\n" + users
		if err := os.WriteFile(filepath.Join(bind, name), []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		return nspawntest.BindDir + "/" + name
	}

	c := nspawntest.Boot(t, rootfs, id+"n", bind)
	c.WaitSystem(t)
	// As in the image: no host keys, the image's drop-ins. (Debian's
	// sshd-keygen.service would make keys on a first boot; the container's
	// is not one, so the stage makes them.)
	c.MustExec(t, "systemctl", "stop", Unit)
	c.MustExec(t, "sh", "-c", "rm -f /etc/ssh/ssh_host_* && mkdir -p /etc/systemd/system/"+Unit+".d && "+
		"cp "+nspawntest.BindDir+"/sshd.conf /etc/ssh/sshd_config.d/50-kubeboot.conf && "+
		"cp "+nspawntest.BindDir+"/unit.conf /etc/systemd/system/"+Unit+".d/50-kubeboot.conf && systemctl daemon-reload")
	c.MustExec(t, "systemctl", "start", Unit)
	if st, _ := c.Exec(t, nil, "systemctl", "is-active", Unit); strings.TrimSpace(st) != "inactive" {
		t.Errorf("ssh.service before the stage is %q, want inactive (skipped by its condition, not failed)", st)
	}

	run := func(cfg string) nspawntest.Result {
		t.Helper()
		res := c.Inner(t, "ssh.test", innerEnv, cfg)
		if res.Error != "" {
			t.Fatalf("in the container: %s\n%s", res.Error, c.MustExec(t, "journalctl", "-u", Unit, "--no-pager"))
		}
		return res
	}
	want := func(what string, got nspawntest.Result, changes ...stage.Change) {
		t.Helper()
		if !slices.Equal(got.Changes, changes) {
			t.Errorf("%s: %q, want %q", what, got.Changes, changes)
		}
	}
	ssh := func(key string, port int, cmd string) (string, error) {
		out, err := exec.Command("ip", "netns", "exec", id+"c", "ssh", "-F", "/dev/null", "-i", key, "-p", fmt.Sprint(port),
			"-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10",
			"-o", "StrictHostKeyChecking=accept-new", "-o", "UserKnownHostsFile="+filepath.Join(bind, "known_hosts"),
			"admin@"+nodeIP, cmd).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}

	withKey := config("key.yaml", "users:\n  - name: admin\n    sshAuthorizedKeys: ['"+goodPub+"']\n")
	want("first apply", run(withKey), "make SSH host keys (3 missing)", "write "+PortConfig+" (port 22)", "start "+Unit)
	if out, err := ssh(good, 22, "id -un"); err != nil || out != "admin" {
		t.Fatalf("login with the configured key: %v: %s", err, out)
	}
	if out, err := ssh(wrong, 22, "id -un"); err == nil || !strings.HasSuffix(out, "Permission denied (publickey).") {
		t.Errorf("login with another key: %v: %q, want Permission denied (publickey) (no password method offered)", err, out)
	}
	eff := c.MustExec(t, "/usr/sbin/sshd", "-T")
	for _, line := range []string{"passwordauthentication no", "kbdinteractiveauthentication no", "permitrootlogin no", "port 22"} {
		if !slices.Contains(strings.Split(eff, "\n"), line) {
			t.Errorf("sshd -T lacks %q", line)
		}
	}
	hostKey := c.MustExec(t, "ssh-keygen", "-l", "-f", "/etc/ssh/ssh_host_ed25519_key.pub")
	want("second apply", run(withKey))

	// Another port: the drop-in changes and sshd restarts on it; the host keys stay.
	onPort := config("port.yaml", "firewall: {sshPort: 2222}\nusers:\n  - name: admin\n    sshAuthorizedKeys: ['"+goodPub+"']\n")
	want("sshPort 2222", run(onPort), "write "+PortConfig+" (port 2222)", "restart "+Unit)
	if out, err := ssh(good, 2222, "true"); err != nil {
		t.Errorf("login on port 2222: %v: %s", err, out)
	}
	if got := c.MustExec(t, "ssh-keygen", "-l", "-f", "/etc/ssh/ssh_host_ed25519_key.pub"); got != hostKey {
		t.Errorf("host key changed from %s to %s", hostKey, got)
	}

	// No keys: sshd off, nobody gets in.
	none := config("none.yaml", "users:\n  - name: admin\n")
	want("no keys", run(none), "remove "+PortConfig, "disable "+Unit+" (no user has an SSH key)", "stop "+Unit)
	c.MustExec(t, "systemctl", "start", Unit) // by hand: its condition keeps it off
	if st, _ := c.Exec(t, nil, "systemctl", "is-active", Unit); strings.TrimSpace(st) != "inactive" {
		t.Errorf("ssh.service started by hand with no key configured is %q, want inactive", st)
	}
	if out, err := ssh(good, 2222, "true"); err == nil || !strings.Contains(out, "Connection refused") {
		t.Errorf("login with sshd off: %v: %s", err, out)
	}
	want("no keys, again", run(none))
}

// keyPair makes an ed25519 key pair with ssh-keygen in dir; it returns the
// private key's path and the public line.
func keyPair(t *testing.T, dir, name string) (string, string) {
	t.Helper()
	f := filepath.Join(dir, name)
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", f).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	pub, err := os.ReadFile(f + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	return f, strings.TrimSpace(string(pub))
}
