package machineconfig

import (
	"strings"
	"testing"
)

// Regressions of the hostile-config catalog (cmd/bootstrapd/testdata/hostile):
// inputs the validator let through, or whose errors showed what they must not.

const hostileWorker = "apiVersion: kubeboot.dev/v1alpha1\nkind: MachineConfig\nrole: worker\nhostname: w.example.com\n" +
	"kubernetes:\n  version: v1.37.2\n  controlPlaneEndpoint: a.example.com:6443\n  credentials:\n" +
	"    token: &t abcdef.0123456789abcdef\n" +
	"    caCertHashes: [\"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"]\n"

// An anchor on the token let an alias copy it into users[0].name, whose
// error quoted it; the same through a mapping key and a kubeadm patch.
func TestAliasesOfSecretsAreRefused(t *testing.T) {
	for name, tc := range map[string]struct{ tail, want string }{
		"user name":   {"users:\n  - name: *t\n", "c.yaml:12:11: users[0].name: an alias of a secret"},
		"mapping key": {"system:\n  sysctls:\n    *t : \"1\"\n", "c.yaml:13:5: system.sysctls: an alias of a secret"},
		"patch value": {"  kubeadmPatches:\n    - kind: JoinConfiguration\n      patch: {nodeRegistration: {name: *t}}\n", "c.yaml:13:40: kubernetes.kubeadmPatches[0].patch.nodeRegistration.name: an alias of a secret"},
	} {
		_, err := Parse("c.yaml", []byte(hostileWorker+tc.tail))
		if err == nil || !strings.Contains(err.Error(), "c.yaml:9:12: kubernetes.credentials.token: a secret cannot be an anchor") ||
			!strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "0123456789abcdef\"") || strings.Contains(err.Error(), "abcdef.0123") {
			t.Errorf("%s: err = %v, want %q and no token", name, err, tc.want)
		}
	}
	aliased := strings.Replace(hostileWorker, "token: &t abcdef.0123456789abcdef", "token: *h", 1)
	aliased = strings.Replace(aliased, "hostname: w.example.com", "hostname: &h w.example.com", 1)
	if _, err := Parse("c.yaml", []byte(aliased)); err == nil || !strings.Contains(err.Error(), "c.yaml:9:12: kubernetes.credentials.token: a secret cannot be an anchor (&) or an alias (*)") {
		t.Errorf("token as an alias: err = %v", err)
	}
}

// A secretsBundle naming /etc/shadow printed every line of it as an
// unknown key; a bundle's keys are shown only when they misspell one.
func TestBundleErrorsQuoteNoContent(t *testing.T) {
	shadow := "root:$y$j9T$secrethash:20228:0:99999:7:::\ndaemon:*:20228:0:99999:7:::\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC: x\n"
	_, err := ParseBundle("s.yaml", []byte(shadow))
	if err == nil || !strings.Contains(err.Error(), "s.yaml:1:1: unknown key (not shown") {
		t.Fatalf("err = %v", err)
	}
	for _, s := range []string{"secrethash", "root:", "daemon", "MIIEvQ"} {
		if strings.Contains(err.Error(), s) {
			t.Errorf("the errors quote %q:\n%v", s, err)
		}
	}
	dup := "apiVersion: kubeboot.dev/v1alpha1\nkind: ClusterSecrets\nMIIEvQIBADANBgk: a\nMIIEvQIBADANBgk: b\n"
	if _, err := ParseBundle("s.yaml", []byte(dup)); err == nil || !strings.Contains(err.Error(), "s.yaml:4:1: duplicate key (first at line 3") || strings.Contains(err.Error(), "MIIE") {
		t.Errorf("duplicate key: err = %v", err)
	}
	broken := "apiVersion: kubeboot.dev/v1alpha1\nkind: ClusterSecrets\nMIIEvQIBADANBgk: a\n\tx: [\n"
	if _, err := ParseBundle("s.yaml", []byte(broken)); err == nil || strings.Contains(err.Error(), "MIIE") {
		t.Errorf("syntax error: err = %v", err)
	}
}

// A home of /etc passed, and the users stage makes a home 0700 and its
// user's: the config's user would have owned /etc.
func TestHomesStayOutOfTheSystem(t *testing.T) {
	for home, want := range map[string]bool{
		"/home/ops": true, "/home/ops/x": true, "/var/home/ops": true, "/var/lib/ops": true, "/var/opt/ops": true,
		"/etc": false, "/home": false, "/var": false, "/var/lib": false, "/usr/local/ops": false, "/root": false, "/root/ops": false,
		"/var/lib/kubeboot": false, "/var/lib/kubelet/pods": false, "/var/lib/containerd": false, "/var/log/ops": false, "/var/roothome": false,
	} {
		_, err := Parse("u.yaml", []byte(boundsHead+"users:\n  - name: ops\n    home: "+home+"\n"))
		if got := err == nil; got != want {
			t.Errorf("home %s: err = %v, want accepted=%v", home, err, want)
		} else if !want && !strings.Contains(err.Error(), "u.yaml:10:11: users[0].home: home \""+home+"\" must be below /home") {
			t.Errorf("home %s: err = %v", home, err)
		}
	}
	if _, err := Parse("u.yaml", []byte(boundsHead+"users:\n  - name: root\n    home: /var/lib/ops\n")); err == nil || !strings.Contains(err.Error(), "users[0].home: root's home is /root") {
		t.Errorf("root elsewhere: err = %v", err)
	}
}

// Link names and firewalld zones took shell metacharacters.
func TestNamesWithShellCharacters(t *testing.T) {
	for _, name := range []string{"e0;reboot", "e$(id)", "e`id`", "e|x", "e&", "e>x", "e\\x", "e!"} {
		_, err := Parse("n.yaml", []byte(boundsHead+"network:\n  interfaces:\n    - name: \""+strings.ReplaceAll(name, "\\", "\\\\")+"\"\n      dhcp4: true\n"))
		if err == nil || !strings.Contains(err.Error(), "n.yaml:10:13: network.interfaces[0].name: link name") {
			t.Errorf("link %q: err = %v", name, err)
		}
	}
	for _, name := range []string{"enp1s0", "bond0.100", "br-ex", "eth_1"} {
		if _, err := Parse("n.yaml", []byte(boundsHead+"network:\n  interfaces:\n    - name: "+name+"\n      dhcp4: true\n")); err != nil {
			t.Errorf("link %q: %v", name, err)
		}
	}
	for zone, ok := range map[string]bool{"public": true, "nm-shared": true, "kube_zone": true, "public;reboot": false, "../zones/x": false, "a-zone-name-of-18c": false} {
		_, err := Parse("z.yaml", []byte(boundsHead+"firewall:\n  backend: firewalld\n  zone: \""+zone+"\"\n"))
		if (err == nil) != ok || !ok && !strings.Contains(err.Error(), "z.yaml:10:9: firewall.zone: zone") {
			t.Errorf("zone %q: err = %v", zone, err)
		}
	}
}
