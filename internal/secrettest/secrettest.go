// Package secrettest finds a cluster's secrets in what a command or a
// stage printed, or in a directory tree (journal exports, console logs,
// out/e2e), for tests that check nothing leaks.
package secrettest

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"kubeboot.dev/kubeboot/machineconfig"
)

// Scanner knows every secret of a bundle: the token and its secret half,
// the certificate key, and every private key's PEM body in overlapping
// 16-character base64 fragments (a key cut into pieces still counts).
type Scanner []string

// For returns the scanner of the secrets s.
func For(s *machineconfig.ClusterSecrets) Scanner {
	token := s.Token.Reveal()
	l := Scanner{token, s.CertificateKey.Reveal()}
	if _, secret, ok := strings.Cut(token, "."); ok {
		l = append(l, secret)
	}
	for _, k := range []machineconfig.Secret{s.CA.Key, s.FrontProxyCA.Key, s.EtcdCA.Key, s.ServiceAccount.Key} {
		var body strings.Builder
		for _, line := range strings.Split(k.Reveal(), "\n") {
			if line != "" && !strings.HasPrefix(line, "-----") {
				body.WriteString(line)
			}
		}
		b := body.String()
		for i := 0; i+16 <= len(b); i += 8 {
			l = append(l, b[i:i+16])
		}
	}
	return l
}

// Check fails the test when data holds one of the secrets; where names
// the output in the message (which never quotes the secret).
func (l Scanner) Check(tb testing.TB, where string, data []byte) {
	tb.Helper()
	if which, found := l.Find(data); found {
		tb.Errorf("%s holds %s", where, which)
	}
}

// Find says which kind of secret of the bundle data holds first (never
// the value), for callers that report errors rather than fail a test.
func (l Scanner) Find(data []byte) (which string, found bool) {
	for _, s := range l {
		if s != "" && bytes.Contains(data, []byte(s)) {
			return kind(s), true
		}
	}
	return "", false
}

// Hit is a secret found in a file of a tree: where, and which kind of
// secret (never the value).
type Hit struct {
	Path   string
	Offset int64 // of the first occurrence of this secret in the file
	Which  string
	Mode   fs.FileMode // lets a caller tell a leak from a 0600 holder
}

func (h Hit) String() string {
	return fmt.Sprintf("%s (%v): %s at byte %d", h.Path, h.Mode.Perm(), h.Which, h.Offset)
}

// chunk is how much of a file ScanTree holds at once.
const chunk = 1 << 20

// ScanTree reads every regular file under root (journal exports, console
// logs, an e2e run's output directory), without following symbolic links,
// and returns each kind of secret of l found in each file, once per file
// (at its first offset). Files are read in chunks that overlap by the longest secret, so
// a secret cut by a chunk boundary is still found; sizes are unbounded.
// Binary journal files compress large fields: export them first
// (journalctl -o export or -o cat).
func (l Scanner) ScanTree(root string) ([]Hit, error) {
	longest := 0
	for _, s := range l {
		longest = max(longest, len(s))
	}
	var hits []Hit
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		found, err := l.scanFile(p, longest)
		for _, f := range found {
			f.Mode = info.Mode()
			hits = append(hits, f)
		}
		return err
	})
	return hits, err
}

func (l Scanner) scanFile(path string, longest int) ([]Hit, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var hits []Hit
	seen := make([]bool, len(l))
	buf := make([]byte, 0, chunk+longest)
	var base int64 // file offset of buf[0]
	for {
		n, err := io.ReadFull(f, buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		for i, s := range l {
			if s == "" || seen[i] {
				continue
			}
			if at := bytes.Index(buf, []byte(s)); at >= 0 {
				seen[i] = true
				hits = addHit(hits, Hit{Path: path, Offset: base + int64(at), Which: kind(s)})
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return hits, nil
		}
		if err != nil {
			return hits, err
		}
		// Keep the tail a secret may start in.
		keep := min(len(buf), max(longest-1, 0))
		base += int64(len(buf) - keep)
		buf = append(buf[:0], buf[len(buf)-keep:]...)
	}
}

// addHit keeps one hit per kind of secret in a file, the first: a key's
// fragments would otherwise be a hit each.
func addHit(hits []Hit, h Hit) []Hit {
	for i, o := range hits {
		if o.Which == h.Which {
			hits[i].Offset = min(o.Offset, h.Offset)
			return hits
		}
	}
	return append(hits, h)
}

var (
	tokenRE       = regexp.MustCompile(`^[a-z0-9]{6}\.[a-z0-9]{16}$`)
	tokenSecretRE = regexp.MustCompile(`^[a-z0-9]{16}$`)
	certKeyRE     = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// kind names a secret of the scanner by its shape.
func kind(s string) string {
	switch {
	case tokenRE.MatchString(s):
		return "the bootstrap token"
	case certKeyRE.MatchString(s):
		return "the certificate key"
	case tokenSecretRE.MatchString(s):
		return "the bootstrap token's secret"
	}
	return "a fragment of a private key"
}

// CheckTree fails the test for every secret of l found under root, naming
// the file, the kind of secret and its offset.
func (l Scanner) CheckTree(tb testing.TB, root string) {
	tb.Helper()
	hits, err := l.ScanTree(root)
	if err != nil {
		tb.Errorf("scanning %s: %v", root, err)
	}
	for _, h := range hits {
		tb.Errorf("secret found: %v", h)
	}
}
