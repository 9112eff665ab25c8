package machineconfig

import (
	"strings"
	"testing"
)

// Decoding problems, one row each, with the exact position.
func TestDecodeErrors(t *testing.T) {
	const head = "apiVersion: kubeboot.dev/v1alpha1\nkind: MachineConfig\nrole: init\nhostname: a.example.com\n" +
		"kubernetes:\n  version: v1.37.2\n  controlPlaneEndpoint: a.example.com:6443\n"
	// head is 7 lines; rows' text starts at line 8.
	rows := []struct {
		name      string
		text      string
		line, col int
		path, msg string
	}{
		{"unknown top key", "hostnam: x\n", 8, 1, "hostnam", `unknown key "hostnam"; did you mean "hostname"?`},
		{"unknown key, no suggestion", "network:\n  zzz: 1\n", 9, 3, "network.zzz", "valid keys: interfaces, vlans, bonds, nameservers"},
		{"case only", "firewall:\n  SSHPort: 22\n", 9, 3, "firewall.SSHPort", `did you mean "sshPort"?`},
		{"netplan key without version", "network:\n  ethernets: {}\n", 9, 3, "network.ethernets", `add "version: 2"`},
		{"list expected", "users:\n  name: a\n", 9, 3, "users", "expected a list, found a mapping"},
		{"mapping expected", "network:\n  - a\n", 9, 3, "network", "expected a mapping, found a list"},
		{"string expected", "hosts:\n  - ip: {a: 1}\n", 9, 9, "hosts[0].ip", "expected a string, found a mapping"},
		{"integer expected", "firewall:\n  sshPort: \"22\"\n", 9, 12, "firewall.sshPort", "expected an integer, found a string"},
		{"boolean expected", "firewall:\n  kubernetesPorts: 1\n", 9, 20, "firewall.kubernetesPorts", "expected a boolean (true or false), found an integer"},
		{"yes is not a boolean", "firewall:\n  kubernetesPorts: yes\n", 9, 20, "firewall.kubernetesPorts", `found the string "yes"; write true or false`},
		{"boolean into string", "system:\n  sysctls:\n    net.ipv4.ip_forward: true\n", 10, 26, `system.sysctls["net.ipv4.ip_forward"]`, "quote it"},
		{"duplicate key", "users:\n  - name: a\n    name: b\n", 10, 5, "users[0].name", `duplicate key "name" (first at line 9)`},
		{"non-string key", "system:\n  sysctls:\n    [a]: b\n", 10, 5, "system.sysctls", "mapping keys must be plain strings"},
		{"merge key", "firewall:\n  <<: {backend: auto}\n", 9, 3, "firewall", "merge keys (<<) are not supported"},
		{"integer out of range", "firewall:\n  sshPort: 0x7fffffffffffffffff\n", 9, 12, "firewall.sshPort", ""},
		{"netplan version", "network:\n  version: 1\n", 9, 12, "network.version", "only network-config version 2"},
		{"netplan unknown", "network:\n  version: 2\n  ethernets:\n    eth0:\n      adresses: []\n", 12, 7, "network.ethernets.eth0.adresses", `did you mean "addresses"?`},
		{"netplan unsupported", "network:\n  version: 2\n  ethernets:\n    eth0:\n      routing-policy: []\n", 12, 7, "network.ethernets.eth0.routing-policy", `netplan key "routing-policy" is not supported`},
		{"netplan devices not a mapping", "network:\n  version: 2\n  ethernets: [eth0]\n", 10, 14, "network.ethernets", "expected a mapping of device IDs"},
		{"netplan set-name without match", "network:\n  version: 2\n  ethernets:\n    eth0:\n      set-name: lan\n", 12, 7, "network.ethernets.eth0.set-name", "set-name needs a match"},
		{"netplan gateway4 unreachable", "network:\n  version: 2\n  ethernets:\n    eth0:\n      addresses: [10.0.0.2/24]\n      gateway4: 10.1.0.1\n", 13, 17, "network.ethernets.eth0.gateway4", "gateway 10.1.0.1 is not reachable"},
		{"netplan glob", "network:\n  version: 2\n  ethernets:\n    eth0:\n      match: {name: \"en*\"}\n", 12, 21, "network.ethernets.eth0.match.name", "glob characters"},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(head+r.text))
			errorAt(t, err, r.path, r.msg, r.line, r.col)
		})
	}
}

func TestSyntaxErrorPositions(t *testing.T) {
	rows := []struct {
		name, text string
		line, col  int
		msg        string
	}{
		{"dedent in list item", "a:\n  b:\n    - name: x\n      addresses:\n        - 1.2.3.4/24\n     routeMetric: 100\n", 6, 6, "check the indentation"},
		{"over-indented key", "a:\n  b: 1\n   c: 2\n", 3, 4, "mapping values are not allowed"},
		{"under-indented key", "a:\n  b: 1\n c: 2\n", 3, 2, "did not find expected key"},
		{"tab", "a:\n\tb: 1\n", 2, 2, "tabs"},
		{"unclosed flow list", "a: [1, 2\nb: 3\n", 1, 1, "did not find expected ',' or ']'"},
		{"second document", "a: 1\n---\nb: 2\n", 2, 1, "more than one YAML document"},
		{"unknown anchor", "a: 1\nb: *nope\n", 2, 1, "unknown anchor"},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			_, err := Parse("s.yaml", []byte(r.text))
			list, ok := err.(ErrorList)
			if !ok || len(list) != 1 {
				t.Fatalf("want one syntax error, got %v", err)
			}
			e := list[0]
			if e.Line != r.line || e.Column != r.col || !strings.Contains(e.Message, r.msg) || !strings.HasPrefix(e.Message, "YAML syntax error: ") {
				t.Errorf("got %v, want s.yaml:%d:%d: YAML syntax error: ...%s...", e, r.line, r.col, r.msg)
			}
		})
	}
}

func TestEmptyDocument(t *testing.T) {
	for _, text := range []string{"", "# only a comment\n", "~\n"} {
		_, err := Parse("e.yaml", []byte(text))
		if err == nil || !strings.Contains(err.Error(), "e.yaml:1:1: the document is empty") {
			t.Errorf("Parse(%q) = %v, want an empty-document error", text, err)
		}
	}
}

// Anchors and aliases work; an alias bomb is cut off with an error.
func TestAliases(t *testing.T) {
	text := "apiVersion: kubeboot.dev/v1alpha1\nkind: MachineConfig\nrole: init\nhostname: &h a.example.com\n" +
		"hosts: [{ip: 10.0.0.1, names: [*h]}]\nkubernetes:\n  version: v1.37.2\n  controlPlaneEndpoint: a.example.com:6443\n"
	cfg, err := Parse("a.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Hosts[0].Names[0] != "a.example.com" {
		t.Errorf("alias not resolved: %v", cfg.Hosts[0].Names)
	}
	var b strings.Builder
	b.WriteString("kubernetes:\n  kubeadmPatches:\n    - kind: KubeletConfiguration\n      patch:\n        a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n")
	for i := 1; i < 9; i++ {
		b.WriteString("        a" + string(rune('0'+i)) + ": &a" + string(rune('0'+i)) + " [")
		for j := range 10 {
			if j > 0 {
				b.WriteString(", ")
			}
			b.WriteString("*a" + string(rune('0'+i-1)))
		}
		b.WriteString("]\n")
	}
	_, err = Parse("bomb.yaml", []byte(b.String()))
	if err == nil || !strings.Contains(err.Error(), "too complex") {
		t.Errorf("alias bomb: got %v", err)
	}
	// A self-referencing alias in a free-form patch terminates too.
	_, err = Parse("loop.yaml", []byte("kubernetes:\n  kubeadmPatches:\n    - kind: KubeletConfiguration\n      patch: &p {a: *p}\n"))
	if err == nil {
		t.Error("self-referencing alias: want an error")
	}
}

func TestErrorFormat(t *testing.T) {
	rows := []struct {
		e    Error
		want string
	}{
		{Error{File: "f.yaml", Line: 3, Column: 7, Path: "role", Message: "m"}, "f.yaml:3:7: role: m"},
		{Error{File: "f.yaml", Line: 3, Column: 1, Message: "YAML syntax error: x"}, "f.yaml:3:1: YAML syntax error: x"},
		{Error{Path: "role", Message: "m"}, "role: m"},
		{Error{Line: 2, Column: 3, Path: "role", Message: "m"}, "2:3: role: m"},
	}
	for _, r := range rows {
		if got := r.e.Error(); got != r.want {
			t.Errorf("got %q, want %q", got, r.want)
		}
	}
	l := ErrorList{{File: "f", Line: 9, Column: 1, Message: "b"}, {File: "f", Line: 2, Column: 5, Message: "a"}}
	l.sort()
	if got := l.Error(); got != "f:2:5: a\nf:9:1: b" {
		t.Errorf("list = %q", got)
	}
}

func TestSuggest(t *testing.T) {
	rows := []struct{ word, want string }{
		{"adresses", "addresses"},
		{"hostnmae", "hostname"},
		{"macaddress", "macAddress"},
		{"routeMetrc", "routeMetric"},
		{"foo", ""},
		{"xyz", ""},
		{"colour", ""},
	}
	cands := []string{"addresses", "hostname", "macAddress", "routeMetric", "mtu", "name"}
	for _, r := range rows {
		if got := suggest(r.word, cands); got != r.want {
			t.Errorf("suggest(%q) = %q, want %q", r.word, got, r.want)
		}
	}
}
