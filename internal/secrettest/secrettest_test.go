package secrettest

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"kubeboot.dev/kubeboot/clustersecrets"
)

// TestScanTree hides secrets of a real bundle in a tree as a lab run
// would leave them: the token cut by the reader's chunk boundary in a
// large console log, a line of the CA key in a journal export, a secret
// behind a symbolic link (not followed), and a clean file.
func TestScanTree(t *testing.T) {
	s, err := clustersecrets.Generate()
	if err != nil {
		t.Fatal(err)
	}
	l := For(s)
	root := t.TempDir()
	token := s.Token.Reveal()
	write := func(rel string, data []byte, mode os.FileMode) {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
	}
	console := append(bytes.Repeat([]byte("x"), chunk-10), []byte("join --token "+token+"\n")...)
	write("node1/console.log", console, 0o644)
	keyLine := strings.Split(s.CA.Key.Reveal(), "\n")[3]
	write("node1/journal.export", []byte("MESSAGE=oops "+keyLine+"\n"), 0o640)
	write("node1/clean.log", []byte("nothing to see\n"), 0o644)
	outside := filepath.Join(t.TempDir(), "bundle")
	if err := os.WriteFile(outside, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(root, "node1/link")); err != nil {
		t.Fatal(err)
	}

	hits, err := l.ScanTree(root)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, h := range hits {
		rel, _ := filepath.Rel(root, h.Path)
		got = append(got, rel+" "+h.Which+" "+h.Mode.Perm().String())
		if strings.Contains(h.String(), token) || strings.Contains(h.String(), keyLine) {
			t.Errorf("the hit quotes the secret: %v", h)
		}
		if rel == "node1/console.log" && h.Which == "the bootstrap token" && h.Offset != int64(chunk-10+len("join --token ")) {
			t.Errorf("token at offset %d", h.Offset)
		}
	}
	slices.Sort(got)
	want := []string{
		"node1/console.log the bootstrap token -rw-r--r--",
		"node1/console.log the bootstrap token's secret -rw-r--r--",
		"node1/journal.export a fragment of a private key -rw-r-----",
	}
	if !slices.Equal(got, want) {
		t.Errorf("hits:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestFind(t *testing.T) {
	s, err := clustersecrets.Generate()
	if err != nil {
		t.Fatal(err)
	}
	l := For(s)
	_, secret, _ := strings.Cut(s.Token.Reveal(), ".")
	keyLine := strings.Split(s.EtcdCA.Key.Reveal(), "\n")[2]
	for _, c := range []struct {
		data, want string
	}{
		{"kubeadm join --token " + s.Token.Reveal(), "the bootstrap token"},
		{"secret=" + secret, "the bootstrap token's secret"},
		{"--certificate-key " + s.CertificateKey.Reveal(), "the certificate key"},
		{"key line: " + keyLine[5:40], "a fragment of a private key"},
		{"nothing here", ""},
	} {
		which, found := l.Find([]byte(c.data))
		if which != c.want || found != (c.want != "") {
			t.Errorf("Find(%.30q...) = %q, %v; want %q", c.data, which, found, c.want)
		}
	}
}
