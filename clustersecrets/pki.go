package clustersecrets

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"kubeboot.dev/kubeboot/atomicfile"
	"kubeboot.dev/kubeboot/machineconfig"
)

// pkiFile is one file of kubeadm's certificatesDir that the secrets fill.
type pkiFile struct {
	name string // relative to the certificates directory
	data string
	perm fs.FileMode
}

// pkiFiles lists the files in the order they are written: each key before
// its certificate, so a certificate on disk always has its key beside it
// (kubeadm looks for the certificate first).
func pkiFiles(s *machineconfig.ClusterSecrets) []pkiFile {
	return []pkiFile{
		{"ca.key", s.CA.Key.Reveal(), 0o600},
		{"ca.crt", s.CA.Cert, 0o644},
		{"front-proxy-ca.key", s.FrontProxyCA.Key.Reveal(), 0o600},
		{"front-proxy-ca.crt", s.FrontProxyCA.Cert, 0o644},
		{"etcd/ca.key", s.EtcdCA.Key.Reveal(), 0o600},
		{"etcd/ca.crt", s.EtcdCA.Cert, 0o644},
		// kubeadm writes the service-account public key 0600 as well.
		{"sa.key", s.ServiceAccount.Key.Reveal(), 0o600},
		{"sa.pub", s.ServiceAccount.Public, 0o600},
	}
}

// InstallPKI writes the CAs and the service-account key pair into dir
// (kubeadm's certificatesDir; nodepath.PKIDir on a node) under kubeadm's names, so
// that kubeadm init and kubeadm join --control-plane use them instead of
// making their own: ca.crt/.key, front-proxy-ca.crt/.key, etcd/ca.crt/.key,
// sa.key/.pub. Keys are 0600, certificates 0644, dir and dir/etcd 0700.
// A file that already holds the same bytes and mode is left alone; others
// are replaced atomically. It returns the names it wrote (relative to dir).
//
// Call it before kubeadm runs and again after kubeadm reset. When it
// replaces a CA, certificates kubeadm signed with the old one are still in
// dir: kubeadm refuses them, so reset before installing different CAs.
func InstallPKI(dir string, s *machineconfig.ClusterSecrets) ([]string, error) {
	if s == nil || !s.HasPrivateKeys() {
		return nil, errors.New("install the cluster PKI: these secrets hold no CA keys (a worker's); a control plane needs the full bundle")
	}
	// Check everything before writing anything.
	for _, ca := range []struct {
		what string
		pair machineconfig.CertAndKey
	}{{"cluster CA", s.CA}, {"front-proxy CA", s.FrontProxyCA}, {"etcd CA", s.EtcdCA}} {
		if _, err := parseCA(ca.pair, ca.what); err != nil {
			return nil, fmt.Errorf("install the cluster PKI: %w", err)
		}
	}
	if s.ServiceAccount.Key == "" || s.ServiceAccount.Public == "" {
		return nil, errors.New("install the cluster PKI: the service-account key pair is missing")
	}
	var changed []string
	for _, d := range []string{dir, filepath.Join(dir, "etcd")} {
		if err := privateDir(d); err != nil {
			return changed, fmt.Errorf("install the cluster PKI: %w", err)
		}
	}
	for _, f := range pkiFiles(s) {
		wrote, err := writePrivate(filepath.Join(dir, f.name), []byte(f.data), f.perm)
		if err != nil {
			return changed, fmt.Errorf("install the cluster PKI: %s: %w", f.name, err)
		}
		if wrote {
			changed = append(changed, f.name)
		}
	}
	return changed, nil
}

// privateDir makes dir (and its parents) and sets dir itself to 0700.
func privateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	st, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if st.Mode().Perm() != 0o700 {
		return os.Chmod(dir, 0o700)
	}
	return nil
}

// writePrivate writes data to path with perm unless the file already has
// both; it reports whether it changed anything.
func writePrivate(path string, data []byte, perm fs.FileMode) (bool, error) {
	if st, err := os.Lstat(path); err == nil && st.Mode().IsRegular() {
		if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
			if st.Mode().Perm() == perm {
				return false, nil
			}
			return true, os.Chmod(path, perm)
		}
	}
	return true, atomicfile.Write(path, data, perm, 0o700)
}

// WriteBundle keeps secrets at path (0600, the directory 0700), as bootstrapd
// keeps a node's own copy; nothing is written when the file already holds
// them. It reports whether it wrote.
func WriteBundle(path string, s *machineconfig.ClusterSecrets) (bool, error) {
	if err := privateDir(filepath.Dir(path)); err != nil {
		return false, err
	}
	return writePrivate(path, Marshal(s), 0o600)
}
