// Package clustersecrets makes and uses a cluster's shared secrets (the
// schema, decoder and rules are machineconfig's ClusterSecrets and Bundle):
// Generate makes them as kubeadm would, Marshal and Save write a bundle
// file, InstallPKI puts them where kubeadm finds them, and MintClient makes
// short-lived client certificates for bootstrapd's own calls to etcd and
// the API server when a node is rebuilt.
//
// Every control plane gets the same CAs before kubeadm runs, so a node can
// be reflashed at any time and joining nodes know the CA hash in advance;
// nobody runs kubeadm's upload-certs.
package clustersecrets

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math"
	"math/big"
	"time"

	"kubeboot.dev/kubeboot/machineconfig"
)

// Common names of the CAs, as kubeadm names its own.
const (
	CACommonName           = "kubernetes"
	FrontProxyCACommonName = "front-proxy-ca"
	EtcdCACommonName       = "etcd-ca"
)

// kubeadm's constants (cmd/kubeadm/app/constants): a CA is valid for ten
// years and backdated five minutes to allow small clock jumps.
const (
	caValidity  = 10 * 365 * 24 * time.Hour
	backdate    = 5 * time.Minute
	rsaKeyBits  = 2048 // kubeadm's default encryptionAlgorithm RSA-2048
	tokenLetter = "abcdefghijklmnopqrstuvwxyz0123456789"
)

// Generate makes a full set of cluster secrets: three CAs, the
// service-account key pair, a bootstrap token and a certificate key.
func Generate() (*machineconfig.ClusterSecrets, error) {
	s := &machineconfig.ClusterSecrets{}
	var err error
	for _, ca := range []struct {
		cn   string
		into *machineconfig.CertAndKey
	}{{CACommonName, &s.CA}, {FrontProxyCACommonName, &s.FrontProxyCA}, {EtcdCACommonName, &s.EtcdCA}} {
		if *ca.into, err = newCA(ca.cn, time.Now()); err != nil {
			return nil, fmt.Errorf("generate the %s CA: %w", ca.cn, err)
		}
	}
	sa, err := rsa.GenerateKey(rand.Reader, rsaKeyBits)
	if err != nil {
		return nil, fmt.Errorf("generate the service-account key: %w", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&sa.PublicKey)
	if err != nil {
		return nil, err
	}
	s.ServiceAccount = machineconfig.KeyPair{
		Key:    machineconfig.Secret(pemString("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(sa))),
		Public: pemString("PUBLIC KEY", pub),
	}
	if s.Token, err = newToken(); err != nil {
		return nil, err
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	s.CertificateKey = machineconfig.Secret(hex.EncodeToString(key))
	return s, nil
}

// newCA makes a self-signed CA the way kubeadm's pkiutil.NewSelfSignedCACert
// does: RSA-2048, random serial, CN as the one DNS name, key usages
// digitalSignature, keyEncipherment and keyCertSign, CA:TRUE.
func newCA(cn string, now time.Time) (machineconfig.CertAndKey, error) {
	key, err := rsa.GenerateKey(rand.Reader, rsaKeyBits)
	if err != nil {
		return machineconfig.CertAndKey{}, err
	}
	serial, err := newSerial()
	if err != nil {
		return machineconfig.CertAndKey{}, err
	}
	notBefore := now.UTC().Add(-backdate)
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		DNSNames:              []string{cn},
		NotBefore:             notBefore,
		NotAfter:              notBefore.Add(caValidity),
		KeyUsage:              x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return machineconfig.CertAndKey{}, err
	}
	return machineconfig.CertAndKey{
		Cert: pemString("CERTIFICATE", der),
		Key:  machineconfig.Secret(pemString("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key))),
	}, nil
}

// newSerial is uniform in [1, MaxInt64), as kubeadm's serials.
func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, big.NewInt(math.MaxInt64-1))
	if err != nil {
		return nil, err
	}
	return n.Add(n, big.NewInt(1)), nil
}

// newToken makes a bootstrap token, [a-z0-9]{6}.[a-z0-9]{16}, each
// character uniform over the 36 letters (as kubeadm token generate).
func newToken() (machineconfig.Secret, error) {
	b := make([]byte, 0, 23)
	for i := range 22 {
		if i == 6 {
			b = append(b, '.')
		}
		n, err := rand.Int(rand.Reader, big.NewInt(int64(len(tokenLetter))))
		if err != nil {
			return "", err
		}
		b = append(b, tokenLetter[n.Int64()])
	}
	return machineconfig.Secret(b), nil
}

func pemString(typ string, der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
}

// Marshal encodes secrets as a bundle document that machineconfig.ParseBundle
// reads back. The result holds the secrets: write it 0600 (Save).
func Marshal(s *machineconfig.ClusterSecrets) []byte {
	doc := machineconfig.Bundle{APIVersion: machineconfig.APIVersion, Kind: machineconfig.BundleKind, ClusterSecrets: *s}
	return append([]byte(header), doc.Marshal()...)
}

const header = "# kubeboot cluster secrets: CA keys and join credentials of one cluster.\n" +
	"# Keep this file private (mode 0600); never commit it.\n"

// signer is a parsed CA.
type signer struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func parseCA(p machineconfig.CertAndKey, what string) (signer, error) {
	cert, err := p.Certificate()
	if err != nil {
		return signer{}, fmt.Errorf("%s certificate: %w", what, err)
	}
	key, err := p.Signer()
	if err != nil {
		return signer{}, fmt.Errorf("%s key: %w", what, err)
	}
	return signer{cert, key}, nil
}
