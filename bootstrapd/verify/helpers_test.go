package verify

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netns"

	"kubeboot.dev/kubeboot/bootstrapd/source"
	"kubeboot.dev/kubeboot/clustersecrets"
	"kubeboot.dev/kubeboot/internal/netnstest"
	"kubeboot.dev/kubeboot/machineconfig"
)

// The reference controller's NICs (the seed's ip -d link).
const (
	mac1 = "52:54:00:80:ad:b6"
	mac2 = "52:54:00:6a:9d:95"
)

var seq atomic.Int64

// errNoAPI stands for the API in tests of sections that do not read it.
var errNoAPI = errors.New("no API server in this test")

func needRoot(tb testing.TB, tools ...string) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root for network namespaces (CI runs as root)")
	}
	for _, tool := range append([]string{"ip"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			tb.Skipf("needs %s in PATH (scripts/setup-host.sh installs it)", tool)
		}
	}
}

// repoFile is a file of the repository, for the example configs.
func repoFile(name string) string {
	_, self, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(self), "..", "..", name)
}

// exampleConfig loads configs/NAME as bootstrapd verify --config would,
// next to a freshly generated secrets bundle (the file the example
// configs name), and returns it with the bundle.
func exampleConfig(tb testing.TB, name string, edit func(string) string) (*source.Result, *machineconfig.ClusterSecrets) {
	tb.Helper()
	dir := tb.TempDir()
	data, err := os.ReadFile(repoFile("configs/" + name))
	if err != nil {
		tb.Fatal(err)
	}
	text := string(data)
	if edit != nil {
		text = edit(text)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		tb.Fatal(err)
	}
	secrets, err := clustersecrets.Generate()
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := clustersecrets.WriteBundle(filepath.Join(dir, "secrets.yaml"), secrets); err != nil {
		tb.Fatal(err)
	}
	res, err := source.Load(context.Background(), source.Options{ConfigPath: p})
	if err != nil {
		tb.Fatal(err)
	}
	return res, secrets
}

// referenceNode is a network namespace shaped like the seed's controller:
// enp1s0 and enp2s0, veths with the reference MACs, whose peers sit in a
// second namespace standing for the two networks (172.16.0.254, the
// gateway, and 10.0.0.254). Both are removed when the test ends.
type referenceNode struct {
	name, peer string
	ns         netns.NsHandle
}

func newReferenceNode(tb testing.TB) *referenceNode {
	tb.Helper()
	needRoot(tb)
	id := fmt.Sprintf("kbv%d-%d", os.Getpid()%100000, seq.Add(1))
	r := &referenceNode{name: id + "n", peer: id + "p"}
	r.ns = netnstest.New(tb, r.name)
	netnstest.New(tb, r.peer)
	for _, l := range []struct{ name, mac, peer, addr string }{
		{"enp1s0", mac1, "r1", "172.16.0.254/24"},
		{"enp2s0", mac2, "r2", "10.0.0.254/24"},
	} {
		netnstest.Run(tb, "ip", "link", "add", "name", l.name, "address", l.mac, "netns", r.name,
			"type", "veth", "peer", "name", l.peer, "netns", r.peer)
		netnstest.Run(tb, "ip", "-n", r.peer, "addr", "add", l.addr, "dev", l.peer)
		netnstest.Run(tb, "ip", "-n", r.peer, "link", "set", l.peer, "up")
	}
	return r
}

// section finds a section of a report by name.
func section(tb testing.TB, r *Report, name string) Section {
	tb.Helper()
	for _, s := range r.Sections {
		if s.Name == name {
			return s
		}
	}
	tb.Fatalf("no section %q in the report", name)
	return Section{}
}

// checkNamed finds the check whose name starts with prefix.
func checkNamed(tb testing.TB, s Section, prefix string) Check {
	tb.Helper()
	for _, c := range s.Checks {
		if strings.HasPrefix(c.Name, prefix) {
			return c
		}
	}
	tb.Fatalf("section %s has no check %q; it has:\n%s", s.Name, prefix, describeChecks(s))
	return Check{}
}

func describeChecks(s Section) string {
	var b strings.Builder
	for _, c := range s.Checks {
		fmt.Fprintf(&b, "  %v %s: expected %s, found %s\n", c.OK, c.Name, c.Expected, c.Found)
	}
	return b.String()
}

// allHold fails the test with every failed check of the sections.
func allHold(tb testing.TB, sections ...Section) {
	tb.Helper()
	for _, s := range sections {
		if len(s.Checks) == 0 {
			tb.Errorf("section %s has no checks", s.Name)
		}
		for _, c := range s.Checks {
			if !c.OK {
				tb.Errorf("%s: %s: expected %s, found %s", s.Name, c.Name, c.Expected, c.Found)
			}
		}
	}
}

// logReport logs sections as the text report shows them (go test -v).
func logReport(tb testing.TB, sections ...Section) {
	tb.Helper()
	r := &Report{Sections: sections}
	r.finish()
	var b strings.Builder
	if err := r.WriteText(&b); err != nil {
		tb.Fatal(err)
	}
	tb.Logf("\n%s", b.String())
}
