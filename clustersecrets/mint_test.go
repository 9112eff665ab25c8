package clustersecrets

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"kubeboot.dev/kubeboot/machineconfig"
)

// tlsServer serves HTTPS on loopback with a serving certificate signed by
// ca (as kubeadm signs the API server's and etcd's) and requires client
// certificates signed by ca; it answers with the client's common name.
func tlsServer(t *testing.T, ca machineconfig.CertAndKey) *httptest.Server {
	t.Helper()
	sig, err := parseCA(ca, "test CA")
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ := newSerial()
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "server"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, sig.cert, key.Public(), sig.key)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(sig.cert)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.TLS.PeerCertificates[0].Subject.CommonName)
	}))
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, cfg *tls.Config, url string) (string, error) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func TestMintedClientsAuthenticate(t *testing.T) {
	s := secrets(t)
	for _, tc := range []struct {
		name string
		ca   machineconfig.CertAndKey
		mint func(*machineconfig.ClusterSecrets, time.Duration) (*ClientCredentials, error)
		cn   string
	}{
		{"etcd", s.EtcdCA, MintEtcdClient, EtcdClientName},
		{"node rebuild", s.CA, MintNodeRebuildClient, NodeRebuildUser},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := tlsServer(t, tc.ca)
			creds, err := tc.mint(s, 10*time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := creds.TLSConfig()
			if err != nil {
				t.Fatal(err)
			}
			if got, err := get(t, cfg, srv.URL); err != nil || got != tc.cn {
				t.Errorf("server saw %q (%v), want %q", got, err, tc.cn)
			}
			block, _ := pem.Decode(creds.CertPEM)
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			if len(cert.Subject.Organization) != 0 {
				t.Errorf("groups %v: the identity must carry none (no system:masters)", cert.Subject.Organization)
			}
			if cert.IsCA || len(cert.ExtKeyUsage) != 1 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
				t.Errorf("not a client-only certificate: CA %v, usages %v", cert.IsCA, cert.ExtKeyUsage)
			}
			if life := time.Until(cert.NotAfter); life > 10*time.Minute || life < 9*time.Minute {
				t.Errorf("valid for %v more, want 10 minutes", life)
			}
			// A certificate from the other CA is refused: the right CA signs.
			other := s.CA
			if tc.ca == s.CA {
				other = s.EtcdCA
			}
			if _, err := get(t, cfg, tlsServer(t, other).URL); err == nil {
				t.Error("a server of another CA accepted the certificate")
			}
		})
	}
}

// The kubeconfig is what client-go reads: the server, its CA and the
// client certificate, all embedded.
func TestNodeRebuildKubeconfig(t *testing.T) {
	s := secrets(t)
	srv := tlsServer(t, s.CA)
	creds, err := MintNodeRebuildClient(s, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var kc struct {
		Clusters []struct {
			Cluster struct {
				Server string `yaml:"server"`
				CA     string `yaml:"certificate-authority-data"`
			} `yaml:"cluster"`
		} `yaml:"clusters"`
		Users []struct {
			User struct {
				Cert string `yaml:"client-certificate-data"`
				Key  string `yaml:"client-key-data"`
			} `yaml:"user"`
		} `yaml:"users"`
		Current string `yaml:"current-context"`
	}
	if err := yaml.Unmarshal(creds.Kubeconfig(srv.URL), &kc); err != nil || len(kc.Clusters) != 1 || len(kc.Users) != 1 || kc.Current == "" {
		t.Fatalf("kubeconfig: %v %+v", err, kc)
	}
	dec := func(s string) []byte {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	pair, err := tls.X509KeyPair(dec(kc.Users[0].User.Cert), dec(kc.Users[0].User.Key))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(dec(kc.Clusters[0].Cluster.CA))
	got, err := get(t, &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool}, kc.Clusters[0].Cluster.Server)
	if err != nil || got != NodeRebuildUser {
		t.Errorf("with the kubeconfig the server saw %q (%v)", got, err)
	}
}

func TestMintNeedsTheCAKey(t *testing.T) {
	w := secrets(t).ForRole(machineconfig.RoleWorker)
	if _, err := MintNodeRebuildClient(w, time.Minute); err == nil || !strings.Contains(err.Error(), "only control planes") {
		t.Errorf("minting from a worker's secrets: %v", err)
	}
	if _, err := MintEtcdClient(secrets(t), 0); err == nil {
		t.Error("a zero lifetime was accepted")
	}
}

// NodeRebuildRBAC grants exactly the Node verbs to exactly NodeRebuildUser.
func TestNodeRebuildRBAC(t *testing.T) {
	dec := yaml.NewDecoder(strings.NewReader(NodeRebuildRBAC))
	var role struct {
		Kind     string
		Metadata struct{ Name string }
		Rules    []struct {
			APIGroups []string `yaml:"apiGroups"`
			Resources []string
			Verbs     []string
		}
	}
	var binding struct {
		Kind    string
		RoleRef struct{ Kind, Name string }   `yaml:"roleRef"`
		Subj    []struct{ Kind, Name string } `yaml:"subjects"`
	}
	if err := dec.Decode(&role); err != nil {
		t.Fatal(err)
	}
	if err := dec.Decode(&binding); err != nil {
		t.Fatal(err)
	}
	if role.Kind != "ClusterRole" || len(role.Rules) != 1 || strings.Join(role.Rules[0].Resources, ",") != "nodes" ||
		strings.Join(role.Rules[0].Verbs, ",") != "get,list,delete" || strings.Join(role.Rules[0].APIGroups, ",") != "" {
		t.Errorf("role %+v", role)
	}
	if binding.Kind != "ClusterRoleBinding" || binding.RoleRef.Name != role.Metadata.Name || len(binding.Subj) != 1 ||
		binding.Subj[0].Kind != "User" || binding.Subj[0].Name != NodeRebuildUser {
		t.Errorf("binding %+v", binding)
	}
}
