package machineconfig

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"reflect"
	"strings"
	"testing"
	"time"
)

const mirrorsHead = "apiVersion: kubeboot.dev/v1alpha1\nkind: MachineConfig\nrole: init\nhostname: a.example.com\n" +
	"kubernetes:\n  version: v1.37.2\n  controlPlaneEndpoint: a.example.com:6443\n"

// testCAPEM is a self-signed CA certificate made for the test.
func testCAPEM(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mirror CA"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// pemBlock puts every line of s under a YAML literal block at n spaces.
func pemBlock(s string, n int) string {
	pad := strings.Repeat(" ", n)
	return pad + strings.ReplaceAll(strings.TrimSuffix(s, "\n"), "\n", "\n"+pad) + "\n"
}

func TestMirrorsDecodeWithDefaults(t *testing.T) {
	ca := testCAPEM(t)
	cfg, err := Parse("t.yaml", []byte(mirrorsHead+"containerd:\n  mirrors:\n"+
		"    - registry: docker.io\n      endpoints:\n        - url: https://mirror.home.local:5000\n          caCert: |\n"+pemBlock(ca, 12)+
		"        - url: http://10.0.0.5\n          capabilities: [pull]\n"+
		"    - registry: \"[fd00::5]:5000\"\n      endpoints:\n        - url: https://[fd00::6]\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []RegistryMirror{
		{Registry: "docker.io", Endpoints: []MirrorEndpoint{
			{URL: "https://mirror.home.local:5000", CACert: ca, Capabilities: []string{"pull", "resolve"}},
			{URL: "http://10.0.0.5", Capabilities: []string{"pull"}},
		}},
		{Registry: "[fd00::5]:5000", Endpoints: []MirrorEndpoint{{URL: "https://[fd00::6]", Capabilities: []string{"pull", "resolve"}}}},
	}
	if !reflect.DeepEqual(cfg.Containerd.Mirrors, want) {
		t.Errorf("mirrors = %+v\nwant %+v", cfg.Containerd.Mirrors, want)
	}
}

// Every mirror rule, one row each, at its exact position in the file.
func TestMirrorErrors(t *testing.T) {
	ca := testCAPEM(t)
	// mirrorsHead is 7 lines; "containerd:" and "mirrors:" are 8 and 9,
	// the row's text starts at line 10.
	one := func(registry, endpoint string) string {
		return "    - registry: " + registry + "\n      endpoints:\n" + endpoint
	}
	url := func(u string) string { return "        - url: " + u + "\n" }
	rows := []struct {
		name      string
		text      string
		line, col int
		path, msg string
	}{
		{"registry missing", "    - endpoints:\n" + url("https://m.example"), 10, 7, "containerd.mirrors[0].registry", "registry is required"},
		{"registry is a URL", one("https://docker.io", url("https://m.example")), 10, 17, "containerd.mirrors[0].registry", "not a URL or path"},
		{"registry upper case", one("Docker.io", url("https://m.example")), 10, 17, "containerd.mirrors[0].registry", "must be lower case"},
		{"registry Docker Hub alias", one("index.docker.io", url("https://m.example")), 10, 17, "containerd.mirrors[0].registry", "write registry: docker.io"},
		{"registry of the baked Kubernetes images", one("registry.k8s.io", url("https://m.example")), 10, 17, "containerd.mirrors[0].registry", "never pulled, so it takes no mirror"},
		{"registry port out of range", one("r.example:70000", url("https://m.example")), 10, 17, "containerd.mirrors[0].registry", `port "70000" is out of range`},
		{"registry bad name", one("r_x.example", url("https://m.example")), 10, 17, "containerd.mirrors[0].registry", "not a valid RFC 1123 host name"},
		{"registry IPv6 without brackets", one("\"fd00::5\"", url("https://m.example")), 10, 17, "containerd.mirrors[0].registry", "an IPv6 address is written in brackets, [fd00::5]"},
		{"registry twice", one("quay.io", url("https://m.example")) + one("quay.io", url("https://n.example")), 13, 17, "containerd.mirrors[1].registry", "already has mirrors at containerd.mirrors[0]"},
		{"no endpoints", "    - registry: quay.io\n", 10, 7, "containerd.mirrors[0].endpoints", "at least one endpoint"},
		{"url missing", one("quay.io", "        - capabilities: [pull]\n"), 12, 11, "containerd.mirrors[0].endpoints[0].url", "url is required"},
		{"url scheme", one("quay.io", url("ftp://m.example")), 12, 16, "containerd.mirrors[0].endpoints[0].url", "scheme must be https, or http"},
		{"url without scheme", one("quay.io", url("m.example:5000")), 12, 16, "containerd.mirrors[0].endpoints[0].url", "must be https://host[:port]"},
		{"url with credentials", one("quay.io", url("https://user:hunter2@m.example")), 12, 16, "containerd.mirrors[0].endpoints[0].url", "must not carry a user name or password"},
		{"url with a path", one("quay.io", url("https://m.example/v2/quay")), 12, 16, "containerd.mirrors[0].endpoints[0].url", "containerd adds the registry API path /v2"},
		{"url port", one("quay.io", url("https://m.example:0")), 12, 16, "containerd.mirrors[0].endpoints[0].url", `port "0" is out of range`},
		{"url twice", one("quay.io", url("https://m.example")+url("https://M.example/")), 13, 16, "containerd.mirrors[0].endpoints[1].url", "already listed at containerd.mirrors[0].endpoints[0]"},
		{"caCert on http", one("quay.io", url("http://m.example")+"          caCert: |\n"+pemBlock(ca, 12)), 13, 19, "containerd.mirrors[0].endpoints[0].caCert", "caCert needs an https url"},
		{"caCert not PEM", one("quay.io", url("https://m.example")+"          caCert: hello\n"), 13, 19, "containerd.mirrors[0].endpoints[0].caCert", "caCert must be PEM"},
		{"caCert a private key", one("quay.io", url("https://m.example")+"          caCert: |\n"+pemBlock("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", 12)), 13, 19, "containerd.mirrors[0].endpoints[0].caCert", "never a private key"},
		{"caCert bad DER", one("quay.io", url("https://m.example")+"          caCert: |\n"+pemBlock("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", 12)), 13, 19, "containerd.mirrors[0].endpoints[0].caCert", "caCert certificate 1:"},
		{"caCert trailing text", one("quay.io", url("https://m.example")+"          caCert: |\n"+pemBlock(ca+"junk\n", 12)), 13, 19, "containerd.mirrors[0].endpoints[0].caCert", "text after certificate 1"},
		{"capabilities empty", one("quay.io", url("https://m.example")+"          capabilities: []\n"), 13, 25, "containerd.mirrors[0].endpoints[0].capabilities", "at least one capability"},
		{"capability push", one("quay.io", url("https://m.example")+"          capabilities: [push]\n"), 13, 26, "containerd.mirrors[0].endpoints[0].capabilities[0]", "a node only pulls"},
		{"capability typo", one("quay.io", url("https://m.example")+"          capabilities: [pul]\n"), 13, 26, "containerd.mirrors[0].endpoints[0].capabilities[0]", `did you mean "pull"?`},
		{"capability twice", one("quay.io", url("https://m.example")+"          capabilities: [pull, pull]\n"), 13, 32, "containerd.mirrors[0].endpoints[0].capabilities[1]", "listed twice"},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(mirrorsHead+"containerd:\n  mirrors:\n"+r.text))
			if e, ok := errorAt(t, err, r.path, r.msg, r.line, r.col); ok && strings.Contains(e.Error(), "hunter2") {
				t.Errorf("the error shows the password: %v", e)
			}
		})
	}
}

// errorAt finds in err (an ErrorList from Parse of t.yaml) the problem at
// path whose message contains msg, and checks it is at line:col.
func errorAt(t *testing.T, err error, path, msg string, line, col int) (Error, bool) {
	t.Helper()
	list, ok := err.(ErrorList)
	if !ok {
		t.Fatalf("err = %v, want an ErrorList", err)
	}
	for _, e := range list {
		if e.Path == path && strings.Contains(e.Message, msg) {
			if e.Line != line || e.Column != col || e.File != "t.yaml" {
				t.Errorf("at %s:%d:%d, want t.yaml:%d:%d (%v)", e.File, e.Line, e.Column, line, col, e)
			}
			return e, true
		}
	}
	t.Errorf("no error at %s containing %q; got:\n%v", path, msg, err)
	return Error{}, false
}
