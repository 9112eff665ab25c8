package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"kubeboot.dev/kubeboot/machineconfig"
)

// config gen --ssh-key gives every --user the keys of a .pub file made by
// OpenSSH's ssh-keygen, --time-server the NTP servers; a private key, or
// keys without a user, are refused and nothing is written.
func TestConfigGenSSHKeyAndTimeServers(t *testing.T) {
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		t.Skip("ssh-keygen not installed (openssh-client)")
	}
	dir := t.TempDir()
	mustKB(t, nil, dir, "secrets", "gen", "-o", "secrets.yaml")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "you@laptop", "-f", filepath.Join(dir, "id")).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	pub, _ := os.ReadFile(filepath.Join(dir, "id.pub"))
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("my key is on the laptop\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec, _ := filepath.Abs(examplePath("image.yaml"))
	base := []string{"config", "gen", "--secrets", "secrets.yaml", "--spec", spec, "--role", "worker", "--hostname", "w1.home.local",
		"--endpoint", "controller.home.local:6443", "--address", "172.16.0.22/24", "--gateway", "172.16.0.254"}

	mustKB(t, nil, dir, append(base, "-o", "w1.yaml", "--user", "admin", "--ssh-key", "id.pub", "--time-server", "172.16.0.254", "--time-server", "ntp.home.local")...)
	cfg, err := machineconfig.Load(filepath.Join(dir, "w1.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Users[0].SSHAuthorizedKeys; len(got) != 1 || got[0] != strings.TrimSpace(string(pub)) {
		t.Errorf("admin's keys = %q, want the .pub's line", got)
	}
	if !slices.Equal(cfg.Time.Servers, []string{"172.16.0.254", "ntp.home.local"}) {
		t.Errorf("time servers = %q", cfg.Time.Servers)
	}

	for _, tc := range []struct {
		flags      []string
		code       int
		msg        string
		noSecretOf string
	}{
		{[]string{"--user", "admin", "--ssh-key", "id"}, exitFail, "--ssh-key id is a private key: give its public half (id.pub)", "id"},
		{[]string{"--ssh-key", "id.pub"}, exitUsage, "--ssh-key needs a --user", ""},
		{[]string{"--user", "admin", "--ssh-key", "secrets.yaml"}, exitFail, "--ssh-key secrets.yaml is a private key", "secrets.yaml"},
		{[]string{"--user", "admin", "--ssh-key", "notes.txt"}, exitFail, "users[0].sshAuthorizedKeys[0]: not an SSH public key", ""},
		{[]string{"--user", "admin", "--time-server", "ntp..home"}, exitFail, `time.servers[0]: NTP server: "ntp..home" is not a valid RFC 1123 host name`, ""},
	} {
		code, _, stderr := kb(t, nil, dir, append(base, append([]string{"-o", "bad.yaml"}, tc.flags...)...)...)
		if code != tc.code || !strings.Contains(stderr, tc.msg) {
			t.Errorf("%q: exit %d, %s; want %d and %q", tc.flags, code, stderr, tc.code, tc.msg)
		}
		if tc.noSecretOf != "" {
			secret, _ := os.ReadFile(filepath.Join(dir, tc.noSecretOf))
			for _, line := range strings.Split(string(secret), "\n") {
				if len(line) > 20 && strings.Contains(stderr, line) {
					t.Errorf("%q: stderr quotes %s: %s", tc.flags, tc.noSecretOf, stderr)
				}
			}
		}
		if _, err := os.Stat(filepath.Join(dir, "bad.yaml")); err == nil {
			t.Errorf("%q: a refused config was written", tc.flags)
		}
	}
}
