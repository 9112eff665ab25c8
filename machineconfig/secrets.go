package machineconfig

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"time"

	"go.yaml.in/yaml/v3"
)

// BundleKind is the kind of a cluster secrets bundle document.
const BundleKind = "ClusterSecrets"

// MaxBundleSize bounds a bundle file; a generated one is about 10 KiB.
const MaxBundleSize = 1 << 20

// Bundle is a cluster secrets bundle file, as kubeboot secrets gen writes
// it: the header and the ClusterSecrets body.
type Bundle struct {
	APIVersion     string `yaml:"apiVersion"`
	Kind           string `yaml:"kind"`
	ClusterSecrets `yaml:",inline"`
}

// ClusterSecrets are what every node of one cluster shares: the CAs that
// kubeadm would otherwise make on the init node, the service-account key
// pair and the join credentials. A full set has every CA key; a worker's
// set has only the CA certificate and the token.
type ClusterSecrets struct {
	Token          Secret     `yaml:"token"`                    // bootstrap token, [a-z0-9]{6}.[a-z0-9]{16}
	CertificateKey Secret     `yaml:"certificateKey,omitempty"` // 64 hex, kubeadm's --certificate-key
	CA             CertAndKey `yaml:"ca"`                       // cluster CA (ca.crt, ca.key), CN kubernetes
	FrontProxyCA   CertAndKey `yaml:"frontProxyCA,omitempty"`   // front-proxy-ca.crt, .key
	EtcdCA         CertAndKey `yaml:"etcdCA,omitempty"`         // etcd/ca.crt, .key
	ServiceAccount KeyPair    `yaml:"serviceAccount,omitempty"` // sa.key, sa.pub
}

// CertAndKey is a CA certificate and its private key, both PEM.
type CertAndKey struct {
	Cert string `yaml:"cert,omitempty"`
	Key  Secret `yaml:"key,omitempty"`
}

// KeyPair is a private key and its public key, both PEM.
type KeyPair struct {
	Key    Secret `yaml:"key,omitempty"`
	Public string `yaml:"pub,omitempty"`
}

// HasPrivateKeys reports whether any private key or the certificate key is
// present: such secrets belong on control planes only.
func (s *ClusterSecrets) HasPrivateKeys() bool {
	return s.CA.Key != "" || s.FrontProxyCA.Key != "" || s.EtcdCA.Key != "" || s.ServiceAccount.Key != "" || s.CertificateKey != ""
}

// ForRole returns the part of the secrets a node of role r needs: all of
// them on control planes; the CA certificate and the token on a worker,
// never a private key.
func (s *ClusterSecrets) ForRole(r Role) *ClusterSecrets {
	if r.IsControlPlane() {
		c := *s
		return &c
	}
	return &ClusterSecrets{Token: s.Token, CA: CertAndKey{Cert: s.CA.Cert}}
}

// CACertHash is "sha256:" and the hex SHA-256 of the cluster CA
// certificate's DER SubjectPublicKeyInfo: kubeadm's
// --discovery-token-ca-cert-hash.
func (s *ClusterSecrets) CACertHash() (string, error) {
	cert, msg := parseCertPEM(s.CA.Cert)
	if msg != "" {
		return "", errors.New("cluster CA certificate: " + msg)
	}
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}

// Certificate parses the certificate.
func (p CertAndKey) Certificate() (*x509.Certificate, error) {
	cert, msg := parseCertPEM(p.Cert)
	if msg != "" {
		return nil, errors.New(msg)
	}
	return cert, nil
}

// Signer parses the private key.
func (p CertAndKey) Signer() (crypto.Signer, error) {
	key, msg := parsePrivateKeyPEM(p.Key.Reveal())
	if msg != "" {
		return nil, errors.New(msg)
	}
	return key, nil
}

// ClusterSecrets returns the secrets the config carries, inline or read
// from its bundle by ParseWithFiles, or nil.
func (c *Credentials) ClusterSecrets() *ClusterSecrets {
	if c.Secrets != nil {
		return c.Secrets
	}
	return c.Bundle
}

// JoinToken is the bootstrap token: credentials.token when set, else the
// token of the cluster secrets.
func (c *Credentials) JoinToken() Secret {
	if c.Token != "" {
		return c.Token
	}
	if s := c.ClusterSecrets(); s != nil {
		return s.Token
	}
	return ""
}

// DiscoveryHashes are the CA hashes a joining node trusts: caCertHashes
// and the hash of the cluster secrets' CA.
func (c *Credentials) DiscoveryHashes() []string {
	out := slices.Clone(c.CACertHashes)
	if s := c.ClusterSecrets(); s != nil {
		if h, err := s.CACertHash(); err == nil && !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	return out
}

// TokenLifetime is TokenTTL as a duration; 0 means the token never expires.
func (c *Credentials) TokenLifetime() time.Duration {
	d, _ := time.ParseDuration(c.TokenTTL)
	return d
}

// ParseBundle decodes a cluster secrets bundle strictly and validates it;
// errors carry file, line, column and field, and never a secret.
func ParseBundle(filename string, data []byte) (*Bundle, error) {
	d := newDecoder(filename)
	d.secretFile = true
	root := d.parseDocument(data, MaxBundleSize, "a cluster secrets bundle (kind: "+BundleKind+")")
	if root == nil {
		return nil, d.errs.errOrNil()
	}
	if k := mappingValue(root, "kind"); k != nil && k.Kind == yaml.ScalarNode && k.Value == Kind {
		d.fail("kind", pos(k), "this file is a %s, not a %s bundle (kubeboot secrets gen makes one)", Kind, BundleKind)
		return nil, d.errs.errOrNil()
	}
	b := &Bundle{}
	d.where[""] = located{value: pos(root), key: pos(root)}
	d.decode(root, reflect.ValueOf(b).Elem(), "")
	if root.Kind != yaml.MappingNode || d.nodes >= maxNodes {
		return nil, d.errs.errOrNil()
	}
	var c checker
	c.header(b.APIVersion, b.Kind, BundleKind)
	c.clusterSecrets(&b.ClusterSecrets, "")
	d.report(c.probs)
	if err := d.errs.errOrNil(); err != nil {
		return nil, err
	}
	return b, nil
}

// LoadBundle reads (at most MaxBundleSize bytes) and parses a bundle file.
func LoadBundle(path string) (*Bundle, error) {
	data, err := readLimited(path, MaxBundleSize)
	if err != nil {
		return nil, fmt.Errorf("cluster secrets bundle: %w", err)
	}
	return ParseBundle(path, data)
}

// Files reads a file a config names (credentials.secretsBundle), given the
// name as written in the config. The caller decides where names resolve:
// next to the config, on a NoCloud volume, under a node's root.
type Files func(name string) ([]byte, error)

// FilesFrom reads relative names from dir and absolute names under root
// ("" for this machine's /), at most MaxBundleSize bytes each.
func FilesFrom(root, dir string) Files {
	return func(name string) ([]byte, error) {
		p := filepath.Join(dir, name)
		if filepath.IsAbs(name) {
			p = filepath.Join(root, name)
		}
		return readLimited(p, MaxBundleSize)
	}
}

// Carrier reads the files a config names for a tool that carries them to
// the node beside the config (kubeboot cidata, image build
// --machine-config), so that a config the tool accepts never fails on the
// node for a missing file. Only a file name next to the config can be
// carried: an absolute path names a file already on the node, which the
// tool can neither check nor supply. Refusals become errors at the field,
// with file:line:col.
type Carrier struct {
	Dir      string   // the config's directory
	Tool     string   // the command, for messages
	Reserved []string // names the tool itself puts beside the config
	Names    []string // the names read, cleaned, to carry
}

// Read is a Files.
func (c *Carrier) Read(name string) ([]byte, error) {
	clean := filepath.Clean(name)
	switch {
	case filepath.IsAbs(name):
		return nil, fmt.Errorf("%s carries the files a config names to the node, and an absolute path names a file already there; name a file next to the config (e.g. secrets.yaml) or put the secrets inline (kubeboot config gen)", c.Tool)
	case clean != filepath.Base(clean) || clean == "." || clean == "..":
		return nil, fmt.Errorf("%s puts the file beside the config on the node, so it must be a file name next to the config, without directories", c.Tool)
	case slices.Contains(c.Reserved, clean):
		return nil, fmt.Errorf("%s already puts its own %s beside the config; rename the file", c.Tool, clean)
	}
	data, err := FilesFrom("", c.Dir)(clean)
	if err == nil && !slices.Contains(c.Names, clean) {
		c.Names = append(c.Names, clean)
	}
	return data, err
}

// readLimited reads a regular file of at most max bytes; a device or a
// larger file is an error, so a hostile path cannot exhaust memory.
func readLimited(path string, max int64) ([]byte, error) {
	data, err := readAtMost(path, max, true)
	if errors.Is(err, errTooLarge) {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, max)
	}
	return data, err
}

// errTooLarge says a file holds more than readAtMost may read.
var errTooLarge = errors.New("too large")

// readAtMost reads path, or fails with errTooLarge once it has read more
// than max bytes: a huge file or a device such as /dev/zero fails at once.
// regularOnly refuses anything but a regular file.
func readAtMost(path string, max int64, regularOnly bool) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil {
		return nil, err
	} else if regularOnly && !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > max {
		return nil, errTooLarge
	}
	return data, nil
}

// header checks apiVersion and kind of a document.
func (c *checker) header(apiVersion, kind, want string) {
	switch apiVersion {
	case APIVersion:
	case "":
		c.add("apiVersion", "apiVersion is required: %s", APIVersion)
	default:
		c.add("apiVersion", "unsupported apiVersion %q; expected %s", apiVersion, APIVersion)
	}
	switch kind {
	case want:
	case "":
		c.add("kind", "kind is required: %s", want)
	default:
		c.add("kind", "unsupported kind %q; expected %s%s", kind, want, didYouMean(kind, []string{want}))
	}
}

// clusterSecrets checks a bundle body at base. It is full when ca.key is
// set (everything is then required) and a worker's otherwise (ca.cert and
// token only). Messages never contain the values.
func (c *checker) clusterSecrets(s *ClusterSecrets, base string) {
	if s.Token == "" {
		c.add(join(base, "token"), "token is required: the bootstrap token nodes join with")
	} else if !tokenRE.MatchString(s.Token.Reveal()) {
		c.add(join(base, "token"), `token is not a bootstrap token: expected 6 and 16 characters of [a-z0-9] joined by "." (the value is not shown)`)
	}
	if s.CertificateKey != "" && !certKeyRE.MatchString(s.CertificateKey.Reveal()) {
		c.add(join(base, "certificateKey"), "certificate key must be 64 hex digits (the value is not shown)")
	}
	c.ca(s.CA, join(base, "ca"), "cluster CA")
	if s.CA.Key == "" {
		for _, f := range []struct {
			name string
			set  bool
		}{
			{"certificateKey", s.CertificateKey != ""},
			{"frontProxyCA", s.FrontProxyCA != CertAndKey{}},
			{"etcdCA", s.EtcdCA != CertAndKey{}},
			{"serviceAccount", s.ServiceAccount != KeyPair{}},
		} {
			if f.set {
				c.add(join(base, f.name), "only a full bundle (one with ca.key) holds %s; without ca.key the secrets are a worker's: ca.cert and token", f.name)
			}
		}
		return
	}
	for _, ca := range []struct {
		field, what string
		pair        CertAndKey
	}{{"frontProxyCA", "front-proxy CA", s.FrontProxyCA}, {"etcdCA", "etcd CA", s.EtcdCA}} {
		p := join(base, ca.field)
		if ca.pair == (CertAndKey{}) {
			c.add(p, "%s is required in a full bundle (one with ca.key): the %s", ca.field, ca.what)
			continue
		}
		c.ca(ca.pair, p, ca.what)
		if ca.pair.Key == "" {
			c.add(p+".key", "key is required in a full bundle: the %s private key", ca.what)
		}
	}
	c.serviceAccount(s.ServiceAccount, join(base, "serviceAccount"))
}

// ca checks a CA certificate as kubeadm uses it (it refuses a certificate
// that is not a CA) and, when present, that the key is its key.
func (c *checker) ca(p CertAndKey, path, what string) {
	if p.Cert == "" {
		c.add(path+".cert", "cert is required: the %s certificate (PEM)", what)
		return
	}
	cert, msg := parseCertPEM(p.Cert)
	if msg != "" {
		c.add(path+".cert", "%s certificate: %s", what, msg)
		return
	}
	switch {
	case !cert.BasicConstraintsValid || !cert.IsCA:
		c.add(path+".cert", "the %s certificate is not a CA (basic constraints CA:TRUE are missing)", what)
	case cert.KeyUsage&x509.KeyUsageCertSign == 0:
		c.add(path+".cert", "the %s certificate may not sign certificates (key usage keyCertSign is missing)", what)
	case time.Now().After(cert.NotAfter):
		c.add(path+".cert", "the %s certificate expired on %s", what, cert.NotAfter.UTC().Format(time.DateOnly))
	}
	if msg := checkPublicKey(cert.PublicKey); msg != "" {
		c.add(path+".cert", "the %s certificate's %s", what, msg)
	}
	if p.Key == "" {
		return
	}
	key, msg := parsePrivateKeyPEM(p.Key.Reveal())
	if msg != "" {
		c.add(path+".key", "%s key: %s (the value is not shown)", what, msg)
		return
	}
	if !publicKeysEqual(key.Public(), cert.PublicKey) {
		c.add(path+".key", "the %s key is not the key of %s.cert", what, path)
	}
}

func (c *checker) serviceAccount(p KeyPair, path string) {
	if p.Key == "" {
		c.add(path+".key", "key is required in a full bundle: the service-account signing key (sa.key, PEM)")
	}
	if p.Public == "" {
		c.add(path+".pub", "pub is required in a full bundle: the service-account public key (sa.pub, PEM)")
	}
	if p.Key == "" || p.Public == "" {
		return
	}
	key, msg := parsePrivateKeyPEM(p.Key.Reveal())
	if msg != "" {
		c.add(path+".key", "service-account key: %s (the value is not shown)", msg)
		return
	}
	pub, msg := parsePublicKeyPEM(p.Public)
	if msg != "" {
		c.add(path+".pub", "service-account public key: %s", msg)
		return
	}
	if msg := checkPublicKey(pub); msg != "" {
		c.add(path+".pub", "the service-account %s", msg)
	} else if !publicKeysEqual(key.Public(), pub) {
		c.add(path+".pub", "pub is not the public key of %s.key", path)
	}
}

// singlePEM decodes exactly one PEM block of one of the given types.
func singlePEM(s string, types ...string) (*pem.Block, string) {
	block, rest := pem.Decode([]byte(s))
	if block == nil {
		return nil, "not PEM: expected a -----BEGIN " + types[0] + "----- block"
	}
	if !slices.Contains(types, block.Type) {
		return nil, fmt.Sprintf("a PEM %q block where %s was expected", block.Type, joinOr(types))
	}
	if len(block.Headers) > 0 {
		return nil, "PEM headers (an encrypted key?) are not supported"
	}
	if next, _ := pem.Decode(rest); next != nil {
		return nil, "more than one PEM block; expected exactly one"
	}
	return block, ""
}

func joinOr(types []string) string {
	s := ""
	for i, t := range types {
		switch {
		case i == 0:
		case i == len(types)-1:
			s += " or "
		default:
			s += ", "
		}
		s += t
	}
	return s
}

func parseCertPEM(s string) (*x509.Certificate, string) {
	block, msg := singlePEM(s, "CERTIFICATE")
	if msg != "" {
		return nil, msg
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, "the certificate does not parse (" + err.Error() + ")"
	}
	return cert, ""
}

// parsePrivateKeyPEM accepts what kubeadm reads: RSA (PKCS#1 or #8) and
// ECDSA (SEC 1 or PKCS#8) keys. Parser errors are not passed on: they
// could quote key material.
func parsePrivateKeyPEM(s string) (crypto.Signer, string) {
	block, msg := singlePEM(s, "RSA PRIVATE KEY", "EC PRIVATE KEY", "PRIVATE KEY")
	if msg != "" {
		return nil, msg
	}
	var key any
	var err error
	switch block.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	}
	if err != nil {
		return nil, "the " + block.Type + " does not parse"
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, "unsupported key type"
	}
	if msg := checkPublicKey(signer.Public()); msg != "" {
		return nil, msg
	}
	return signer, ""
}

func parsePublicKeyPEM(s string) (crypto.PublicKey, string) {
	block, msg := singlePEM(s, "PUBLIC KEY")
	if msg != "" {
		return nil, msg
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, "the public key does not parse (" + err.Error() + ")"
	}
	return pub, ""
}

// checkPublicKey allows the algorithms of kubeadm's encryptionAlgorithm:
// RSA of at least 2048 bits, ECDSA P-256 and P-384.
func checkPublicKey(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Sprintf("RSA key has %d bits; kubeadm uses at least 2048", k.N.BitLen())
		}
		return ""
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return "ECDSA key is not on P-256 or P-384 (the curves kubeadm supports)"
		}
		return ""
	}
	return fmt.Sprintf("key type %T is not RSA or ECDSA (what kubeadm supports)", pub)
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	eq, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(b)
}
