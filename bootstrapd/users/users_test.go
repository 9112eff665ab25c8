package users

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/vishvananda/netns"

	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/machineconfig"
)

// nodeRoot makes a root laid out like the image: /home -> var/home and
// /root -> var/roothome (relative links, so they resolve under the temp
// root), Debian's account files and login.defs, and /etc/skel.
func nodeRoot(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: useradd and chown")
	}
	if _, err := exec.LookPath("useradd"); err != nil {
		t.Skip("useradd not installed (Debian package passwd)")
	}
	root := t.TempDir()
	for p, content := range map[string]string{
		"etc/passwd":       "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
		"etc/group":        "root:x:0:\ndaemon:x:1:\nops:x:2000:\nnogroup:x:65534:\n",
		"etc/shadow":       "root:*:20000:0:99999:7:::\ndaemon:*:20000:0:99999:7:::\nnobody:*:20000:0:99999:7:::\n",
		"etc/gshadow":      "root:*::\ndaemon:*::\nops:!::\nnogroup:*::\n",
		"etc/skel/.bashrc": "# skel\n",
	} {
		write(t, filepath.Join(root, p), content, 0o644)
	}
	os.Chmod(filepath.Join(root, "etc/shadow"), 0o640)
	os.Chmod(filepath.Join(root, "etc/gshadow"), 0o640)
	defs, err := os.ReadFile("/etc/login.defs")
	if err != nil {
		t.Skipf("no /etc/login.defs to give useradd: %v", err)
	}
	write(t, filepath.Join(root, "etc/login.defs"), string(defs), 0o644)
	for _, d := range []string{"var/home", "var/roothome"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for link, target := range map[string]string{"home": "var/home", "root": "var/roothome"} {
		if err := os.Symlink(target, filepath.Join(root, link)); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func write(t *testing.T, p, content string, mode fs.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

func parse(t *testing.T, yaml string) *machineconfig.MachineConfig {
	t.Helper()
	cfg, err := machineconfig.Parse("users.yaml", []byte("apiVersion: kubeboot.dev/v1alpha1\nkind: MachineConfig\nrole: init\nhostname: n1\n"+
		"kubernetes:\n  version: v1.37.2\n  controlPlaneEndpoint: n1:6443\n  podSubnet: 172.17.0.0/16\n"+yaml))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func envFor(root string, cfg *machineconfig.MachineConfig) *stage.Env {
	return &stage.Env{Root: root, NetNS: netns.None(), Config: cfg, Log: slog.New(slog.DiscardHandler)}
}

func stat(t *testing.T, p string) (fs.FileMode, int, int) {
	t.Helper()
	info, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	st := info.Sys().(*syscall.Stat_t)
	return info.Mode(), int(st.Uid), int(st.Gid)
}

// TestCreatesUsersWithPrivateHomesOnState runs the real useradd against a
// root laid out like the image: homes land under var/home (STATE) through
// the /home link, 0700 and owned by the user; root's home is var/roothome;
// a second run changes nothing.
func TestCreatesUsersWithPrivateHomesOnState(t *testing.T) {
	root := nodeRoot(t)
	cfg := parse(t, "users:\n  - name: admin\n  - name: ops\n    uid: 2000\n  - name: root\n  - name: svc\n    home: /var/lib/svc\n")
	env := envFor(root, cfg)
	s := New()
	ctx := context.Background()
	if err := s.(stage.Validator).Validate(ctx, env); err != nil {
		t.Fatal(err)
	}
	planned, err := s.Plan(ctx, env)
	if err != nil {
		t.Fatal(err)
	}
	want := []stage.Change{
		"create user admin (next free uid, home /home/admin)",
		"create user ops (uid 2000, home /home/ops)",
		"root: home /root mode 0755 -> 0700",
		"create user svc (next free uid, home /var/lib/svc)",
	}
	if fmt.Sprint(planned) != fmt.Sprint(want) {
		t.Errorf("plan:\n got %q\nwant %q", planned, want)
	}
	applied, err := s.Apply(ctx, env)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range want {
		if !slices.Contains(applied, c) {
			t.Errorf("apply did not report %q: %q", c, applied)
		}
	}

	for _, u := range []struct {
		name, home string
		uid        int // 0: any uid other than root's
	}{{"admin", "var/home/admin", 0}, {"ops", "var/home/ops", 2000}, {"root", "var/roothome", -1}, {"svc", "var/lib/svc", 0}} {
		acct, err := Lookup(env, u.name)
		if err != nil || acct == nil {
			t.Fatalf("lookup %s: %v %v", u.name, acct, err)
		}
		mode, uid, gid := stat(t, filepath.Join(root, u.home))
		if !mode.IsDir() || mode.Perm() != HomeMode || uid != acct.UID || gid != acct.GID {
			t.Errorf("%s: home %s mode %v owner %d:%d, account %d:%d", u.name, u.home, mode, uid, gid, acct.UID, acct.GID)
		}
		switch {
		case u.uid == -1 && acct.UID != 0, u.uid > 0 && acct.UID != u.uid, u.uid == 0 && acct.UID < 1000:
			t.Errorf("%s has uid %d", u.name, acct.UID)
		}
	}
	// ops's group existed (gid 2000): the account joins it instead of failing.
	if acct, _ := Lookup(env, "ops"); acct.GID != 2000 {
		t.Errorf("ops gid %d, want the existing group's 2000", acct.GID)
	}
	if _, err := os.Stat(filepath.Join(root, "var/home/admin/.bashrc")); err != nil {
		t.Errorf("admin's home was not filled from /etc/skel: %v", err)
	}

	again, err := s.Apply(ctx, env)
	if err != nil || len(again) != 0 {
		t.Errorf("second apply: %q, %v", again, err)
	}
	if p, err := s.Plan(ctx, env); err != nil || len(p) != 0 {
		t.Errorf("plan after apply: %q, %v", p, err)
	}

	// A home whose mode or owner drifted is put back.
	os.Chmod(filepath.Join(root, "var/home/admin"), 0o755)
	os.Chown(filepath.Join(root, "var/home/admin"), 0, 0)
	drift, err := s.Apply(ctx, env)
	if err != nil || len(drift) != 2 || !strings.Contains(string(drift[0]), "admin: home /home/admin owner 0:0 -> ") {
		t.Errorf("apply after drift: %q, %v", drift, err)
	}
}

// TestConflictsAreErrorsNamingTheUser: an account that exists with another
// uid or home, or a uid taken by another account, fails validation before
// anything changes, naming the user.
func TestConflictsAreErrorsNamingTheUser(t *testing.T) {
	root := nodeRoot(t)
	s := New()
	ctx := context.Background()
	for _, tc := range []struct{ yaml, want string }{
		{"users:\n  - name: daemon\n    uid: 5\n", "users[0] (daemon): the account exists on the node with uid 1, the config says uid 5"},
		{"users:\n  - name: daemon\n", "users[0] (daemon): the account exists on the node with home /usr/sbin, the config says /home/daemon"},
		{"users:\n  - name: admin\n  - name: backup\n    uid: 65533\n  - name: web\n    uid: 1\n", "users[2] (web): uid 1 belongs to the account daemon on the node"},
	} {
		env := envFor(root, parse(t, tc.yaml))
		err := s.(stage.Validator).Validate(ctx, env)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: validate = %v, want %q", tc.yaml, err, tc.want)
		}
		if _, err := s.Apply(ctx, env); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: apply = %v, want %q", tc.yaml, err, tc.want)
		}
	}
	if acct, _ := Lookup(envFor(root, parse(t, "")), "admin"); acct != nil {
		t.Errorf("a config with a conflict created admin before failing: %+v", acct)
	}
}

// TestHomeOnTheReadOnlyImageIsRefused mounts a read-only file system under
// /var (the config's rules keep homes out of the image's /srv, /opt and
// /usr already): a home there fails validation with advice.
func TestHomeOnTheReadOnlyImageIsRefused(t *testing.T) {
	root := nodeRoot(t)
	ro := filepath.Join(root, "var/opt")
	if err := os.MkdirAll(ro, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", ro, "tmpfs", syscall.MS_RDONLY, "size=1m"); err != nil {
		t.Skipf("cannot mount a read-only tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(ro, 0) })
	env := envFor(root, parse(t, "users:\n  - name: ops\n    home: /var/opt/ops\n"))
	err := New().(stage.Validator).Validate(context.Background(), env)
	if err == nil || !strings.Contains(err.Error(), "users[0] (ops): home /var/opt/ops: /var/opt is on a read-only file system") {
		t.Errorf("validate = %v", err)
	}
}

// TestSyncFileNeverFollowsTheUsersLinks installs a file into a home where
// the user replaced ~/.kube with a link to a root-owned directory and,
// another time, the file with a link to a root-owned file: the first is
// refused, the second replaced, and the link targets stay as they were.
func TestSyncFileNeverFollowsTheUsersLinks(t *testing.T) {
	root := nodeRoot(t)
	env := envFor(root, parse(t, "users:\n  - name: admin\n"))
	if _, err := New().Apply(context.Background(), env); err != nil {
		t.Fatal(err)
	}
	acct, _ := Lookup(env, "admin")
	home := filepath.Join(root, "var/home/admin")
	secretDir := filepath.Join(root, "etc/kubernetes")
	write(t, filepath.Join(secretDir, "admin.conf"), "root only\n", 0o600)

	data := []byte("kubeconfig\n")
	planned, err := SyncFile(env, *acct, ".kube/config", data, false)
	if err != nil || fmt.Sprint(planned) != "[admin: create /home/admin/.kube (0700) admin: install /home/admin/.kube/config (0600)]" {
		t.Errorf("plan: %q, %v", planned, err)
	}
	if _, err := SyncFile(env, *acct, ".kube/config", data, true); err != nil {
		t.Fatal(err)
	}
	mode, uid, gid := stat(t, filepath.Join(home, ".kube/config"))
	got, _ := os.ReadFile(filepath.Join(home, ".kube/config"))
	if string(got) != string(data) || mode.Perm() != FileMode || uid != acct.UID || gid != acct.GID {
		t.Errorf("config %q mode %v owner %d:%d", got, mode, uid, gid)
	}
	if mode, uid, _ := stat(t, filepath.Join(home, ".kube")); mode.Perm() != DirMode || uid != acct.UID {
		t.Errorf(".kube mode %v owner %d", mode, uid)
	}
	if c, err := SyncFile(env, *acct, ".kube/config", data, true); err != nil || len(c) != 0 {
		t.Errorf("second sync: %q, %v", c, err)
	}

	// The file replaced by a link to a root-owned file: replaced, target untouched.
	os.Remove(filepath.Join(home, ".kube/config"))
	os.Symlink("../../../../etc/kubernetes/admin.conf", filepath.Join(home, ".kube/config"))
	if _, err := SyncFile(env, *acct, ".kube/config", data, true); err != nil {
		t.Fatal(err)
	}
	if info, _ := os.Lstat(filepath.Join(home, ".kube/config")); !info.Mode().IsRegular() {
		t.Errorf(".kube/config is still a %v", info.Mode().Type())
	}
	if mode, uid, _ := stat(t, filepath.Join(secretDir, "admin.conf")); mode.Perm() != 0o600 || uid != 0 {
		t.Errorf("the link target was changed: mode %v owner %d", mode, uid)
	}

	// The directory replaced by a link to a root-owned directory: refused.
	os.RemoveAll(filepath.Join(home, ".kube"))
	os.Symlink(secretDir, filepath.Join(home, ".kube"))
	if _, err := SyncFile(env, *acct, ".kube/config", data, true); err == nil || !strings.Contains(err.Error(), "/home/admin/.kube is not a directory") {
		t.Errorf("sync through a linked ~/.kube: %v", err)
	}
	if _, err := os.Stat(filepath.Join(secretDir, "config")); err == nil {
		t.Error("a file was written through the user's link")
	}
	if mode, uid, _ := stat(t, secretDir); mode.Perm() != 0o755 || uid != 0 {
		t.Errorf("the linked directory was changed: mode %v owner %d", mode, uid)
	}
}

// TestAuthorizedKeys: the stage writes each keyed user's
// ~/.ssh/authorized_keys (0600 in a 0700 ~/.ssh, owned by the user) on a
// root laid out like the image, OpenSSH's ssh-keygen reads every key back,
// a second run changes nothing, a changed list replaces the file, a user
// without keys keeps a file of their own, and a linked ~/.ssh is refused.
func TestAuthorizedKeys(t *testing.T) {
	root := nodeRoot(t)
	keyA := sshKey(t, "admin@laptop")
	keyB := `from="172.16.0.0/24" ` + sshKey(t, "admin@bastion")
	cfg := parse(t, "users:\n  - name: admin\n    sshAuthorizedKeys:\n      - "+keyA+"\n      - '"+keyB+"'\n  - name: ops\n")
	env := envFor(root, cfg)
	s := New()
	ctx := context.Background()
	write(t, filepath.Join(root, "var/home/ops/.ssh/authorized_keys"), "ops's own\n", 0o644)
	if _, err := s.Apply(ctx, env); err != nil {
		t.Fatal(err)
	}
	acct, _ := Lookup(env, "admin")
	file := filepath.Join(root, "var/home/admin/.ssh/authorized_keys")
	got, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	want := "# users[0].sshAuthorizedKeys of the machine config, written by bootstrapd: edits here are replaced\n" + keyA + "\n" + keyB + "\n"
	if string(got) != want {
		t.Errorf("authorized_keys:\n%s\nwant:\n%s", got, want)
	}
	if mode, uid, gid := stat(t, file); mode.Perm() != FileMode || uid != acct.UID || gid != acct.GID {
		t.Errorf("authorized_keys mode %v owner %d:%d, want 0600 %d:%d", mode, uid, gid, acct.UID, acct.GID)
	}
	if mode, uid, _ := stat(t, filepath.Dir(file)); mode.Perm() != DirMode || uid != acct.UID {
		t.Errorf(".ssh mode %v owner %d", mode, uid)
	}
	if out, err := exec.Command("ssh-keygen", "-l", "-f", file).CombinedOutput(); err != nil || strings.Count(string(out), "SHA256:") != 2 {
		t.Errorf("ssh-keygen -l -f authorized_keys: %v\n%s", err, out)
	}
	if own, _ := os.ReadFile(filepath.Join(root, "var/home/ops/.ssh/authorized_keys")); string(own) != "ops's own\n" {
		t.Errorf("ops has no keys in the config, yet their file became %q", own)
	}
	if c, err := s.Apply(ctx, env); err != nil || len(c) != 0 {
		t.Errorf("second apply: %q, %v", c, err)
	}

	// One key dropped: the file is replaced, never edited in place.
	env.Config.Users[0].SSHAuthorizedKeys = []string{keyA}
	if c, err := s.Plan(ctx, env); err != nil || fmt.Sprint(c) != "[admin: install /home/admin/.ssh/authorized_keys (0600)]" {
		t.Errorf("plan after dropping a key: %q, %v", c, err)
	}
	if _, err := s.Apply(ctx, env); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(file); strings.Contains(string(got), "bastion") {
		t.Errorf("the dropped key is still there:\n%s", got)
	}

	// ~/.ssh replaced by a link to root's directory: refused, nothing written there.
	rootSSH := filepath.Join(root, "var/roothome/.ssh")
	if err := os.MkdirAll(rootSSH, 0o700); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(filepath.Dir(file))
	os.Symlink("../../roothome/.ssh", filepath.Dir(file))
	if _, err := s.Apply(ctx, env); err == nil || !strings.Contains(err.Error(), "users[0] (admin): /home/admin/.ssh is not a directory") {
		t.Errorf("apply through a linked ~/.ssh: %v", err)
	}
	if entries, _ := os.ReadDir(rootSSH); len(entries) != 0 {
		t.Errorf("written through the link into root's .ssh: %v", entries)
	}
}

// sshKey makes a real key pair with OpenSSH's ssh-keygen and returns the
// public line with comment.
func sshKey(t *testing.T, comment string) string {
	t.Helper()
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		t.Skip("ssh-keygen not installed (openssh-client)")
	}
	f := filepath.Join(t.TempDir(), "key")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", f).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	pub, err := os.ReadFile(f + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(pub))
}
