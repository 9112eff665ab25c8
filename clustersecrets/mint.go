package clustersecrets

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"time"

	"go.yaml.in/yaml/v3"

	"kubeboot.dev/kubeboot/machineconfig"
)

// Identities of the client certificates bootstrapd mints for itself when a
// control plane is rebuilt (only control planes hold the CA keys).
//
// A reflashed worker cannot mint: it has no CA key. It does not need to
// delete its stale Node either. kubeadm join refuses only a Node of the
// same name whose Ready condition is True (kubelet-start phase,
// k8s.io/kubernetes v1.37.2 cmd/kubeadm/app/cmd/phases/join/kubelet.go),
// and it checks with the bootstrap token, which kubeadm init allows to get
// Nodes (ClusterRole kubeadm:get-nodes for system:bootstrappers:kubeadm:
// default-node-token). The node lifecycle controller marks a Node whose
// kubelet stopped posting status Unknown after node-monitor-grace-period
// (50 s by default), so a worker's join stage waits, with its token, until
// the stale Node is not Ready and then joins; the new kubelet takes the
// existing Node object over (NodeRestriction lets it update its own Node).
const (
	// EtcdClientName is the CN of the etcd client certificate used to
	// remove a stale etcd member. kubeadm's etcd trusts any client
	// certificate its CA signed (no etcd auth), so the name serves audit.
	EtcdClientName = "kubeboot-etcd-client"
	// NodeRebuildUser is the API user of the client certificate used to
	// find the control planes and delete this node's stale Node object. It
	// has no groups: NodeRebuildRBAC grants it get, list and delete on
	// Nodes and nothing else, where system:masters would grant everything
	// to a certificate that only needs this.
	NodeRebuildUser = "kubeboot:node-rebuild"
)

// NodeRebuildRBAC is the ClusterRole and ClusterRoleBinding the init node
// applies after kubeadm init so that NodeRebuildUser can do its one job:
// list Nodes (the control planes' addresses, to reach etcd) and get and
// delete the stale Node of the node being rebuilt.
const NodeRebuildRBAC = `apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: ` + NodeRebuildUser + `
rules:
  - apiGroups: [""]
    resources: [nodes]
    verbs: [get, list, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: ` + NodeRebuildUser + `
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: ` + NodeRebuildUser + `
subjects:
  - apiGroup: rbac.authorization.k8s.io
    kind: User
    name: ` + NodeRebuildUser + `
`

// ClientCredentials are a short-lived client certificate with its key and
// the CA that signed it (which also signed the server it is for).
type ClientCredentials struct {
	CertPEM  []byte
	KeyPEM   machineconfig.Secret
	CAPEM    []byte
	NotAfter time.Time
}

// MintEtcdClient makes an etcd client certificate (EtcdClientName) from
// the etcd CA, valid for ttl.
func MintEtcdClient(s *machineconfig.ClusterSecrets, ttl time.Duration) (*ClientCredentials, error) {
	return mint(s.EtcdCA, "etcd CA", pkix.Name{CommonName: EtcdClientName}, ttl)
}

// MintEtcdPeer makes a certificate from the etcd CA that an etcd member
// named name serves its peer and client ports with, for a while: the
// stand-in a reflashed control plane runs to restore etcd's quorum
// (bootstrapd/rejoin). Like kubeadm's etcd/peer it is for both server and
// client authentication, with the member's addresses as SANs.
func MintEtcdPeer(s *machineconfig.ClusterSecrets, name string, ips []net.IP, ttl time.Duration) (*ClientCredentials, error) {
	return mint(s.EtcdCA, "etcd CA", pkix.Name{CommonName: name}, ttl, func(c *x509.Certificate) {
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		c.KeyUsage |= x509.KeyUsageKeyEncipherment
		c.DNSNames = []string{name, "localhost"}
		c.IPAddresses = ips
	})
}

// MintNodeRebuildClient makes an API client certificate for
// NodeRebuildUser from the cluster CA, valid for ttl.
func MintNodeRebuildClient(s *machineconfig.ClusterSecrets, ttl time.Duration) (*ClientCredentials, error) {
	return mint(s.CA, "cluster CA", pkix.Name{CommonName: NodeRebuildUser}, ttl)
}

// mint signs an ECDSA P-256 client certificate (fast to make even on a
// slow node; it lives minutes) backdated like kubeadm's certificates; a
// server certificate when extend says so.
func mint(ca machineconfig.CertAndKey, what string, subject pkix.Name, ttl time.Duration, extend ...func(*x509.Certificate)) (*ClientCredentials, error) {
	if ttl <= 0 {
		return nil, errors.New("mint a client certificate: the lifetime must be positive")
	}
	if ca.Key == "" {
		return nil, fmt.Errorf("mint a client certificate: no %s key (only control planes hold it)", what)
	}
	sig, err := parseCA(ca, what)
	if err != nil {
		return nil, fmt.Errorf("mint a client certificate: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	notAfter := now.Add(ttl)
	if notAfter.After(sig.cert.NotAfter) {
		notAfter = sig.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               subject,
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	for _, e := range extend {
		e(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, sig.cert, key.Public(), sig.key)
	if err != nil {
		return nil, fmt.Errorf("mint a client certificate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &ClientCredentials{
		CertPEM:  []byte(pemString("CERTIFICATE", der)),
		KeyPEM:   machineconfig.Secret(pemString("EC PRIVATE KEY", keyDER)),
		CAPEM:    []byte(ca.Cert),
		NotAfter: notAfter,
	}, nil
}

// TLSConfig presents the certificate and trusts only the CA: for etcd's
// clientv3 or an HTTPS client of the API server.
func (c *ClientCredentials) TLSConfig() (*tls.Config, error) {
	pair, err := tls.X509KeyPair(c.CertPEM, []byte(c.KeyPEM.Reveal()))
	if err != nil {
		return nil, errors.New("client certificate: the certificate and key do not form a pair")
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(c.CAPEM) {
		return nil, errors.New("client certificate: no CA certificate")
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// Kubeconfig is a kubeconfig for server (https://host:port) with the
// certificate embedded, for client-go. It holds the key: keep it in memory
// or in a 0600 file.
func (c *ClientCredentials) Kubeconfig(server string) []byte {
	b64 := base64.StdEncoding.EncodeToString
	doc := map[string]any{
		"apiVersion": "v1",
		"kind":       "Config",
		"clusters": []any{map[string]any{"name": "kubernetes", "cluster": map[string]any{
			"server": server, "certificate-authority-data": b64(c.CAPEM),
		}}},
		"users": []any{map[string]any{"name": "kubeboot", "user": map[string]any{
			"client-certificate-data": b64(c.CertPEM), "client-key-data": b64([]byte(c.KeyPEM.Reveal())),
		}}},
		"contexts":        []any{map[string]any{"name": "kubeboot", "context": map[string]any{"cluster": "kubernetes", "user": "kubeboot"}}},
		"current-context": "kubeboot",
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		panic("clustersecrets: marshal kubeconfig: " + err.Error())
	}
	return out
}
