package machineconfig

import (
	"crypto/dsa"
	"crypto/ed25519"
	"crypto/rsa"
	"math/big"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

const accessBase = "apiVersion: kubeboot.dev/v1alpha1\nkind: MachineConfig\nrole: worker\nhostname: w1\n" +
	"kubernetes:\n  version: v1.37.2\n  controlPlaneEndpoint: cp:6443\n" +
	"  credentials: {token: abcdef.0123456789abcdef, caCertHashes: [\"sha256:" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"]}\n"

// authorizedKey returns a real public key line of a new ed25519 key.
func authorizedKey(t *testing.T, comment string) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k))) + " " + comment
}

func TestSSHAuthorizedKeys(t *testing.T) {
	good := authorizedKey(t, "admin@laptop")
	withOptions := `from="172.16.0.0/24",no-agent-forwarding ` + authorizedKey(t, "ops@bastion")
	cfg, err := Parse("users.yaml", []byte(accessBase+"users:\n  - name: admin\n    sshAuthorizedKeys:\n      - "+good+"\n      - '"+withOptions+"'\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Users[0].SSHAuthorizedKeys; len(got) != 2 || got[1] != withOptions {
		t.Errorf("keys = %q", got)
	}
	if !cfg.SSHEnabled() {
		t.Error("SSHEnabled() = false with a key")
	}
	if cfg2, err := Parse("users.yaml", []byte(accessBase+"users:\n  - name: admin\n")); err != nil || cfg2.SSHEnabled() {
		t.Errorf("no keys: SSHEnabled() = %v, %v", cfg2 != nil && cfg2.SSHEnabled(), err)
	}

	small := &rsa.PublicKey{N: new(big.Int).Lsh(big.NewInt(1), 767), E: 65537}
	small.N.SetBit(small.N, 0, 1)
	smallKey, err := ssh.NewPublicKey(small)
	if err != nil {
		t.Fatal(err)
	}
	var dsaKey dsa.PublicKey
	dsaKey.P, dsaKey.Q, dsaKey.G, dsaKey.Y = big.NewInt(23), big.NewInt(11), big.NewInt(4), big.NewInt(8)
	dsaPub, err := ssh.NewPublicKey(&dsaKey)
	if err != nil {
		t.Fatal(err)
	}
	line := func(k ssh.PublicKey) string { return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k))) }

	doc := accessBase + "users:\n" +
		"  - name: admin\n" + // line 10
		"    sshAuthorizedKeys:\n" +
		"      - " + good + "\n" + // 12: fine
		"      - ssh-ed25519 AAAAnotbase64!! admin@laptop\n" + // 13
		"      - " + line(smallKey) + " old\n" + // 13
		"      - " + line(dsaPub) + " older\n" + // 14
		"      - " + good + "\n" + // 15: the same key again
		"      - \"" + good + "\\n" + good + "\"\n" + // 16: two lines
		"      - ''\n" + // 17
		"  - name: root\n" + // 18
		"    sshAuthorizedKeys: [" + authorizedKey(t, "x") + "]\n" + // 19
		"firewall: {sshPort: 0}\n" + // 20
		"sshAuthorizedKeys: []\n" // 21: at the top level, where it does not belong
	_, err = Parse("users.yaml", []byte(doc))
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		`users.yaml:13:9: users[0].sshAuthorizedKeys[1]: not an SSH public key in authorized_keys format`,
		`users.yaml:14:9: users[0].sshAuthorizedKeys[2]: an RSA key of 768 bits is refused by sshd (at least 1024)`,
		`users.yaml:15:9: users[0].sshAuthorizedKeys[3]: DSA keys are not supported by OpenSSH 10`,
		`users.yaml:16:9: users[0].sshAuthorizedKeys[4]: duplicate key SHA256:`,
		`(also users[0].sshAuthorizedKeys[0])`,
		`users.yaml:17:9: users[0].sshAuthorizedKeys[5]: one key per list item: an authorized key is one line`,
		`users.yaml:18:9: users[0].sshAuthorizedKeys[6]: not an SSH public key`,
		`users.yaml:20:24: users[1].sshAuthorizedKeys: root cannot log in over SSH`,
		`users.yaml:21:21: firewall.sshPort: sshPort 0 closes SSH, but users have sshAuthorizedKeys`,
		`users.yaml:22:1: sshAuthorizedKeys: unknown key "sshAuthorizedKeys"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "users.yaml:12:") {
		t.Errorf("the good key was refused:\n%v", err)
	}
}

// cloud-init's spelling gets a hint: the user-data of kubeboot is a
// machine config, not cloud-config.
func TestCloudInitKeySpelling(t *testing.T) {
	_, err := Parse("users.yaml", []byte(accessBase+"users:\n  - name: admin\n    ssh_authorized_keys: ["+authorizedKey(t, "a")+"]\n"))
	if err == nil || !strings.Contains(err.Error(), `users.yaml:11:5: users[0].ssh_authorized_keys: unknown key "ssh_authorized_keys"; did you mean "sshAuthorizedKeys"?`) {
		t.Errorf("got %v", err)
	}
}

func TestTimeServers(t *testing.T) {
	cfg, err := Parse("t.yaml", []byte(accessBase+"time:\n  servers: [172.16.0.254, ntp.home.local, \"fd00::1\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cfg.Time.Servers, " "); got != "172.16.0.254 ntp.home.local fd00::1" {
		t.Errorf("servers = %q", got)
	}
	_, err = Parse("t.yaml", []byte(accessBase+"time:\n  servers:\n    - ntp..home\n    - 224.0.0.1\n    - \"fe80::1%enp1s0\"\n    - NTP.home.local\n    - ntp.home.local\n    - 0.0.0.0\n"))
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		`t.yaml:11:7: time.servers[0]: NTP server: "ntp..home" is not a valid RFC 1123 host name`,
		`t.yaml:12:7: time.servers[1]: NTP server "224.0.0.1" must be a unicast address`,
		`t.yaml:13:7: time.servers[2]: NTP server "fe80::1%enp1s0" must be a unicast address without a zone`,
		`t.yaml:15:7: time.servers[4]: duplicate NTP server "ntp.home.local" (also time.servers[3])`,
		`t.yaml:16:7: time.servers[5]: NTP server "0.0.0.0" must be a unicast address`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
	_, err = Parse("t.yaml", []byte(accessBase+"time:\n  server: ntp.home.local\n"))
	if want := `t.yaml:10:3: time.server: unknown key "server"; did you mean "servers"?`; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("got %v, want %s", err, want)
	}
}
