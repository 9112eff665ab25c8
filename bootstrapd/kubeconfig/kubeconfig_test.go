package kubeconfig

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/vishvananda/netns"

	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/bootstrapd/users"
	"kubeboot.dev/kubeboot/machineconfig"
	"kubeboot.dev/kubeboot/nodepath"
)

const adminConf = `apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: Q0EK
    server: https://controller.home.local:6443
  name: kubernetes
users:
- name: kubernetes-admin
  user:
    client-certificate-data: %s
    client-key-data: S0VZCg==
`

// node makes a root laid out like the image (/home -> var/home), runs the
// real users stage on it for cfg, and writes admin.conf as kubeadm would.
func node(t *testing.T, cfg *machineconfig.MachineConfig) *stage.Env {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: useradd and chown")
	}
	if _, err := exec.LookPath("useradd"); err != nil {
		t.Skip("useradd not installed (Debian package passwd)")
	}
	root := t.TempDir()
	files := map[string]string{
		"etc/passwd":  "root:x:0:0:root:/root:/bin/bash\n",
		"etc/group":   "root:x:0:\n",
		"etc/shadow":  "root:*:20000:0:99999:7:::\n",
		"etc/gshadow": "root:*::\n",
	}
	for p, content := range files {
		mkfile(t, filepath.Join(root, p), content, 0o640)
	}
	os.MkdirAll(filepath.Join(root, "var/home"), 0o755)
	os.Symlink("var/home", filepath.Join(root, "home"))
	env := &stage.Env{Root: root, NetNS: netns.None(), Config: cfg, Log: slog.New(slog.DiscardHandler)}
	if _, err := users.New().Apply(context.Background(), env); err != nil {
		t.Fatal(err)
	}
	return env
}

func mkfile(t *testing.T, p, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

func config(t *testing.T, role string) *machineconfig.MachineConfig {
	t.Helper()
	y := "apiVersion: kubeboot.dev/v1alpha1\nkind: MachineConfig\nrole: " + role + "\nhostname: n1\n" +
		"kubernetes:\n  version: v1.37.2\n  controlPlaneEndpoint: n1:6443\n  podSubnet: 172.17.0.0/16\n" +
		"users:\n  - name: admin\n  - name: ops\n    home: /var/lib/ops\n"
	cfg, err := machineconfig.Parse("c.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestInstallsAdminConfForEveryUserAndConverges: the copies are 0600 in
// 0700 directories owned by each user; a second run changes nothing; a
// rotated admin.conf and a chmod by hand are put right on the next run,
// and Plan sees both first.
func TestInstallsAdminConfForEveryUserAndConverges(t *testing.T) {
	env := node(t, config(t, "init"))
	s := New()
	ctx := context.Background()
	if _, err := s.Plan(ctx, env); err == nil || !strings.Contains(err.Error(), "/etc/kubernetes/admin.conf does not exist: kubeadm init or join --control-plane writes it") {
		t.Errorf("plan before kubeadm: %v", err)
	}
	first := fmt.Sprintf(adminConf, "Q0VSVDEK")
	mkfile(t, env.Path(nodepath.AdminConf), first, 0o600)

	changes, err := s.Apply(ctx, env)
	if err != nil {
		t.Fatal(err)
	}
	want := "[admin: create /home/admin/.kube (0700) admin: install /home/admin/.kube/config (0600) ops: create /var/lib/ops/.kube (0700) ops: install /var/lib/ops/.kube/config (0600)]"
	if fmt.Sprint(changes) != want {
		t.Errorf("changes:\n got %q\nwant %s", changes, want)
	}
	for _, home := range []string{"var/home/admin", "var/lib/ops"} {
		check(t, env, filepath.Base(home), filepath.Join(env.Root, home), first)
	}
	if c, err := s.Plan(ctx, env); err != nil || len(c) != 0 {
		t.Errorf("plan after apply: %q, %v", c, err)
	}

	rotated := fmt.Sprintf(adminConf, "Q0VSVDIK")
	mkfile(t, env.Path(nodepath.AdminConf), rotated, 0o600)
	os.Chmod(filepath.Join(env.Root, "var/lib/ops/.kube/config"), 0o644)
	planned, err := s.Plan(ctx, env)
	if err != nil {
		t.Fatal(err)
	}
	want = "[admin: install /home/admin/.kube/config (0600) ops: install /var/lib/ops/.kube/config (0600)]"
	if fmt.Sprint(planned) != want {
		t.Errorf("plan after rotation:\n got %q\nwant %s", planned, want)
	}
	if _, err := s.Apply(ctx, env); err != nil {
		t.Fatal(err)
	}
	check(t, env, "admin", filepath.Join(env.Root, "var/home/admin"), rotated)
	check(t, env, "ops", filepath.Join(env.Root, "var/lib/ops"), rotated)

	// Same content, owner changed by hand: only the owner is put back.
	os.Chown(filepath.Join(env.Root, "var/home/admin/.kube/config"), 0, 0)
	planned, _ = s.Plan(ctx, env)
	if len(planned) != 1 || !strings.HasPrefix(string(planned[0]), "admin: /home/admin/.kube/config owner 0:0 -> ") {
		t.Errorf("plan after chown: %q", planned)
	}
	for _, c := range planned {
		if strings.Contains(string(c), "Q0VSVD") {
			t.Errorf("a change quotes the kubeconfig: %q", c)
		}
	}
}

func check(t *testing.T, env *stage.Env, user, home, want string) {
	t.Helper()
	acct, err := users.Lookup(env, user)
	if err != nil || acct == nil {
		t.Fatalf("lookup %s: %v", user, err)
	}
	for p, mode := range map[string]os.FileMode{home + "/.kube": 0o700, home + "/.kube/config": 0o600} {
		info, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		st := info.Sys().(*syscall.Stat_t)
		if info.Mode().Perm() != mode || int(st.Uid) != acct.UID || int(st.Gid) != acct.GID {
			t.Errorf("%s: mode %v owner %d:%d, want %v %d:%d", p, info.Mode(), st.Uid, st.Gid, mode, acct.UID, acct.GID)
		}
	}
	if got, _ := os.ReadFile(home + "/.kube/config"); string(got) != want {
		t.Errorf("%s/.kube/config is not admin.conf", home)
	}
}

func TestPaths(t *testing.T) {
	cfg := config(t, "init")
	if got := fmt.Sprint(Paths(cfg)); got != "[/etc/kubernetes/admin.conf /home/admin/.kube/config /var/lib/ops/.kube/config]" {
		t.Errorf("init: %s", got)
	}
	cfg.Role = machineconfig.RoleWorker
	if got := Paths(cfg); got != nil {
		t.Errorf("worker: %v", got)
	}
}
