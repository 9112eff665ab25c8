package aptmirror

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeRoot makes a fake root holding the given etc/apt files.
func writeRoot(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc/apt/sources.list.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(root, "etc/apt", name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestFindDeb822(t *testing.T) {
	// The security archive comes first and must be skipped; so must a
	// disabled entry and a deb-src-only one.
	root := writeRoot(t, map[string]string{"sources.list.d/debian.sources": `Types: deb
# http://mirror.invalid/archive/debian/20250520T000000Z
URIs: http://mirror.invalid/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://disabled.invalid/debian
Suites: bookworm
Components: main
Enabled: no

Types: deb-src
URIs: http://src.invalid/debian
Suites: bookworm
Components: main

Types: deb
URIs: ftp://ftp.invalid/debian
  https://mirror.invalid/debian/
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 -----END PGP PUBLIC KEY BLOCK-----
`})
	got, err := Find(root)
	if err != nil {
		t.Fatal(err)
	}
	if got != "https://mirror.invalid/debian" {
		t.Errorf("Find = %q, want https://mirror.invalid/debian (continuation line, ftp and trailing slash handled)", got)
	}
}

func TestFindOneLine(t *testing.T) {
	root := writeRoot(t, map[string]string{"sources.list": `# deb http://commented.invalid/debian trixie main
deb http://mirror.invalid/debian-security trixie-security main
deb http://old.invalid/debian-security bookworm/updates main
deb [ arch=amd64 signed-by=/usr/share/keyrings/x.gpg ] http://thirdparty.invalid/apt stable main
deb http://mirror.invalid/debian trixie contrib
deb [arch=amd64] http://mirror.invalid/debian trixie main non-free-firmware
`,
		// Read after sources.list (apt's order), so never reached.
		"sources.list.d/other.sources": "Types: deb\nURIs: http://later.invalid/debian\nSuites: trixie\nComponents: main\n",
	})
	got, err := Find(root)
	if err != nil {
		t.Fatal(err)
	}
	if got != "http://mirror.invalid/debian" {
		t.Errorf("Find = %q, want http://mirror.invalid/debian", got)
	}
}

func TestFindNoneNamesFilesRead(t *testing.T) {
	root := writeRoot(t, map[string]string{
		"sources.list.d/security.sources": "Types: deb\nURIs: http://mirror.invalid/debian-security\nSuites: trixie-security\nComponents: main\n",
		"sources.list.d/nodesource.list":  "deb https://thirdparty.invalid/node_22.x nodistro main\n",
		"sources.list.d/ignored.disabled": "deb http://mirror.invalid/debian trixie main\n",
	})
	_, err := Find(root)
	if err == nil {
		t.Fatal("no error without a Debian mirror")
	}
	msg := err.Error()
	for _, want := range []string{
		filepath.Join(root, "etc/apt/sources.list") + " (unreadable: missing)",
		filepath.Join(root, "etc/apt/sources.list.d/security.sources"),
		filepath.Join(root, "etc/apt/sources.list.d/nodesource.list"),
		"base.mirror",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "ignored.disabled") {
		t.Errorf("error names a file apt does not read:\n%s", msg)
	}
}

func TestResolveExplicitWins(t *testing.T) {
	m, fromHost, err := Resolve("http://mirror.invalid/debian")
	if err != nil || fromHost || m != "http://mirror.invalid/debian" {
		t.Fatalf("Resolve(explicit) = %q %v %v", m, fromHost, err)
	}
}

// TestResolveBuildHost reads this machine's real apt configuration.
func TestResolveBuildHost(t *testing.T) {
	if _, err := os.Stat("/etc/apt"); err != nil {
		t.Skip("not a Debian build machine (no /etc/apt)")
	}
	m, fromHost, err := Resolve("")
	if err != nil {
		t.Fatal(err)
	}
	if !fromHost || !strings.HasSuffix(m, "/debian") || !(strings.HasPrefix(m, "http://") || strings.HasPrefix(m, "https://")) {
		t.Errorf("Resolve(\"\") = %q %v", m, fromHost)
	}
}
