package main

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"kubeboot.dev/kubeboot/bootstrapd/source"
	"kubeboot.dev/kubeboot/clustersecrets"
	"kubeboot.dev/kubeboot/internal/secrettest"
	"kubeboot.dev/kubeboot/machineconfig"
)

var (
	// exampleDir holds copies of the example machine configs beside the
	// secrets.yaml they name, made by TestMain as kubeboot secrets gen would.
	exampleDir string
	// kubebootBin is this command, built once for the tests that run it
	// as a user would and read its output.
	kubebootBin string
)

func exampleConfig(name string) string { return filepath.Join(exampleDir, name) }

func TestMain(m *testing.M) {
	tmp, err := os.MkdirTemp("", "kubeboot-test-")
	if err == nil {
		err = setUp(tmp)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "set up:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(tmp)
	os.Exit(code)
}

func setUp(tmp string) error {
	exampleDir = filepath.Join(tmp, "configs")
	if err := os.Mkdir(exampleDir, 0o700); err != nil {
		return err
	}
	for _, name := range examples {
		data, err := os.ReadFile(examplePath(name))
		if err != nil {
			return err
		}
		if err := os.WriteFile(exampleConfig(name), data, 0o600); err != nil {
			return err
		}
	}
	s, err := clustersecrets.Generate()
	if err != nil {
		return err
	}
	if err := os.WriteFile(exampleConfig("secrets.yaml"), clustersecrets.Marshal(s), 0o600); err != nil {
		return err
	}
	kubebootBin = filepath.Join(tmp, "bin", "kubeboot")
	if out, err := exec.Command("go", "build", "-o", kubebootBin, ".").CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}
	return nil
}

// kb runs the built kubeboot in dir and checks its output for leaks.
func kb(t *testing.T, leaks secrettest.Scanner, dir string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(kubebootBin, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	leaks.Check(t, "stdout of kubeboot "+strings.Join(args, " "), stdout.Bytes())
	leaks.Check(t, "stderr of kubeboot "+strings.Join(args, " "), stderr.Bytes())
	return code, stdout.String(), stderr.String()
}

func mustKB(t *testing.T, leaks secrettest.Scanner, dir string, args ...string) string {
	t.Helper()
	code, stdout, stderr := kb(t, leaks, dir, args...)
	if code != exitOK {
		t.Fatalf("kubeboot %s: exit %d\n%s%s", strings.Join(args, " "), code, stdout, stderr)
	}
	return stdout
}

func perm(t *testing.T, p string) fs.FileMode {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

// The three reference nodes, as kubeboot config gen flags.
var referenceNodes = map[string][]string{
	"controller.yaml": {"--role", "init", "--hostname", "controller.home.local", "--endpoint", "controller.home.local:6443",
		"--address", "172.16.0.11/24", "--mac", "52:54:00:80:ad:b6", "--address", "10.0.0.11/24", "--mac", "52:54:00:6a:9d:95",
		"--gateway", "172.16.0.254", "--host", "controller.home.local=172.16.0.11", "--pod-subnet", "172.17.0.0/16", "--user", "admin"},
	"control-plane.yaml": {"--role", "control-plane", "--hostname", "control-plane.home.local", "--endpoint", "controller.home.local:6443",
		"--address", "172.16.0.12/24", "--mac", "52:54:00:80:ad:c6", "--address", "10.0.0.12/24", "--mac", "52:54:00:6a:9d:a5",
		"--gateway", "172.16.0.254", "--host", "controller.home.local=172.16.0.11", "--host", "control-plane.home.local=172.16.0.12",
		"--pod-subnet", "172.17.0.0/16", "--user", "admin"},
	"worker.yaml": {"--role", "worker", "--hostname", "worker.home.local", "--endpoint", "controller.home.local:6443",
		"--address", "172.16.0.21/24", "--mac", "52:54:00:80:ad:d5", "--address", "10.0.0.21/24", "--mac", "52:54:00:6a:9d:b5",
		"--gateway", "172.16.0.254", "--host", "controller.home.local=172.16.0.11", "--pod-subnet", "172.17.0.0/16"},
}

// secrets gen, config gen, validate and cidata as a user runs them: files
// holding secrets are 0600 in 0700 directories, every generated config
// validates, a worker gets only the token and the CA hash, and no secret
// appears in any output.
func TestSecretsConfigGenValidateCIDATA(t *testing.T) {
	dir := t.TempDir()
	var leaks secrettest.Scanner // filled once the bundle exists
	out := mustKB(t, leaks, dir, "secrets", "gen", "-o", "cluster/secrets.yaml")
	bundlePath := filepath.Join(dir, "cluster/secrets.yaml")
	b, err := machineconfig.LoadBundle(bundlePath)
	if err != nil {
		t.Fatal(err)
	}
	s := &b.ClusterSecrets
	leaks = secrettest.For(s)
	leaks.Check(t, "secrets gen output", []byte(out))
	hash, _ := s.CACertHash()
	if !strings.Contains(out, hash) {
		t.Errorf("secrets gen does not print the CA hash: %q", out)
	}
	if perm(t, bundlePath) != 0o600 || perm(t, filepath.Dir(bundlePath)) != 0o700 {
		t.Errorf("bundle %o in %o, want 0600 in 0700", perm(t, bundlePath), perm(t, filepath.Dir(bundlePath)))
	}
	before, _ := os.ReadFile(bundlePath)
	if code, _, stderr := kb(t, leaks, dir, "secrets", "gen", "-o", "cluster/secrets.yaml"); code != exitFail || !strings.Contains(stderr, "exists; give --force") {
		t.Errorf("overwrite without --force: exit %d, %s", code, stderr)
	}
	if after, _ := os.ReadFile(bundlePath); !bytes.Equal(before, after) {
		t.Fatal("the bundle was overwritten without --force")
	}
	if code, _, _ := kb(t, leaks, dir, "secrets", "gen"); code != exitUsage {
		t.Errorf("secrets gen without -o: exit %d", code)
	}
	// --force makes a new cluster's secrets; the rest of the test uses them.
	mustKB(t, leaks, dir, "secrets", "gen", "-o", "cluster/secrets.yaml", "--force")
	if b, err = machineconfig.LoadBundle(bundlePath); err != nil || b.Token == s.Token {
		t.Fatalf("--force did not replace the bundle (%v)", err)
	}
	s = &b.ClusterSecrets
	leaks = append(leaks, secrettest.For(s)...)
	hash, _ = s.CACertHash()
	if perm(t, bundlePath) != 0o600 {
		t.Error("--force changed the mode")
	}

	// config gen for the three reference nodes.
	spec, _ := filepath.Abs(examplePath("image.yaml"))
	var generated []string
	for name, flags := range referenceNodes {
		args := append([]string{"config", "gen", "--secrets", "cluster/secrets.yaml", "--spec", spec, "-o", "nodes/" + name}, flags...)
		mustKB(t, leaks, dir, args...)
		p := filepath.Join(dir, "nodes", name)
		if perm(t, p) != 0o600 || perm(t, filepath.Dir(p)) != 0o700 {
			t.Errorf("%s %o in %o, want 0600 in 0700", name, perm(t, p), perm(t, filepath.Dir(p)))
		}
		generated = append(generated, "nodes/"+name)
	}
	out = mustKB(t, leaks, dir, append([]string{"validate"}, generated...)...)
	if strings.Count(out, ": ok") != 3 {
		t.Errorf("validate: %s", out)
	}
	for name := range referenceNodes {
		got, err := machineconfig.LoadWithFiles(filepath.Join(dir, "nodes", name))
		if err != nil {
			t.Fatal(err)
		}
		want := loadReference(t, name)
		// Generated configs reproduce the reference nodes of configs/.
		for _, d := range []struct {
			what      string
			got, want any
		}{
			{"network", got.Network, want.Network}, {"hosts", got.Hosts, want.Hosts}, {"users", got.Users, want.Users},
			{"role", got.Role, want.Role}, {"hostname", got.Hostname, want.Hostname},
			{"endpoint", got.Kubernetes.ControlPlaneEndpoint, want.Kubernetes.ControlPlaneEndpoint},
			{"pod subnet", got.Kubernetes.PodSubnet, want.Kubernetes.PodSubnet}, {"version", got.Kubernetes.Version, want.Kubernetes.Version},
		} {
			if diff := cmp.Diff(normalize(d.want), normalize(d.got)); diff != "" {
				t.Errorf("%s: %s differs from configs/%s (-configs +generated):\n%s", name, d.what, name, diff)
			}
		}
		cr := got.Kubernetes.Credentials
		data, _ := os.ReadFile(filepath.Join(dir, "nodes", name))
		if got.Role == machineconfig.RoleWorker {
			if len(cr.CACertHashes) != 1 || cr.CACertHashes[0] != hash || cr.Token != s.Token || cr.Secrets != nil {
				t.Errorf("worker credentials: hashes %v (bundle CA %s), token from bundle %v, inline secrets %v", cr.CACertHashes, hash, cr.Token == s.Token, cr.Secrets != nil)
			}
			leaks.Check(t, "the worker's config (only the token may be there)", bytes.ReplaceAll(data, []byte(s.Token.Reveal()), nil))
			if bytes.Contains(data, []byte("PRIVATE KEY")) {
				t.Error("the worker's config holds a private key")
			}
		} else if cr.Secrets == nil || *cr.Secrets != *s {
			t.Errorf("%s does not carry the bundle inline", name)
		}
	}

	// A worker config with a private key is refused at the key's line.
	worker, _ := os.ReadFile(filepath.Join(dir, "nodes/worker.yaml"))
	text := strings.Replace(string(worker), "    caCertHashes:", "    secrets:\n      token: "+s.Token.Reveal()+"\n      ca:\n        cert: |\n"+indent(s.CA.Cert, 10)+"        key: |\n"+indent(s.CA.Key.Reveal(), 10)+"    caCertHashes:", 1)
	os.WriteFile(filepath.Join(dir, "nodes/bad-worker.yaml"), []byte(text), 0o600)
	keyLine := 1 + strings.Count(text[:strings.Index(text, "        key: |")], "\n")
	code, _, stderr := kb(t, leaks, dir, "validate", "nodes/bad-worker.yaml")
	if want := fmt.Sprintf("nodes/bad-worker.yaml:%d:14: kubernetes.credentials.secrets.ca.key: a worker config never carries a private key", keyLine); code != exitFail || !strings.Contains(stderr, want) {
		t.Errorf("worker with a key: exit %d, want a line %q in:\n%s", code, want, stderr)
	}

	// cidata with the examples beside the bundle, relative -o as in the
	// README: a worker's volume has no private key, a control plane's
	// has the bundle; both volumes are 0600.
	for _, name := range examples {
		data, _ := os.ReadFile(examplePath(name))
		os.WriteFile(filepath.Join(dir, "cluster", name), data, 0o600)
	}
	if _, err := exec.LookPath("xorriso"); err != nil {
		t.Skip("xorriso not installed (scripts/setup-host.sh)")
	}
	for _, tc := range []struct {
		config, out string
		role        machineconfig.Role
	}{{"cluster/worker.yaml", "worker.iso", machineconfig.RoleWorker}, {"cluster/controller.yaml", "controller.iso", machineconfig.RoleInit}} {
		mustKB(t, leaks, dir, "cidata", "-o", tc.out, "--config", tc.config)
		vol := filepath.Join(dir, tc.out)
		if perm(t, vol) != 0o600 {
			t.Errorf("%s mode %o, want 0600", tc.out, perm(t, vol))
		}
		res, err := source.ReadNoCloud(vol)
		if err != nil {
			t.Fatalf("bootstrapd cannot read %s: %v", tc.out, err)
		}
		if res.Secrets == nil || *res.Secrets != *s.ForRole(tc.role) {
			t.Errorf("%s: the node does not get the role's share of the bundle", tc.out)
		}
		if tc.role == machineconfig.RoleWorker {
			image, _ := os.ReadFile(vol)
			leaks.Check(t, "the worker's volume (only the token may be there)", bytes.ReplaceAll(image, []byte(s.Token.Reveal()), nil))
		}
	}
	// A bundle named by an absolute path cannot be carried: refused at the field.
	ctl, _ := os.ReadFile(filepath.Join(dir, "cluster/controller.yaml"))
	abs := strings.Replace(string(ctl), "secretsBundle: secrets.yaml", "secretsBundle: "+bundlePath, 1)
	os.WriteFile(filepath.Join(dir, "cluster/abs.yaml"), []byte(abs), 0o600)
	line := 1 + strings.Count(abs[:strings.Index(abs, "secretsBundle:")], "\n")
	code, _, stderr = kb(t, leaks, dir, "cidata", "-o", "abs.iso", "--config", "cluster/abs.yaml")
	if want := fmt.Sprintf("cluster/abs.yaml:%d:20: kubernetes.credentials.secretsBundle:", line); code != exitFail || !strings.Contains(stderr, want) || !strings.Contains(stderr, "absolute path") {
		t.Errorf("absolute bundle: exit %d, want %q in:\n%s", code, want, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "abs.iso")); err == nil {
		t.Error("a refused config produced a volume")
	}
}

func loadReference(t *testing.T, name string) *machineconfig.MachineConfig {
	t.Helper()
	cfg, err := machineconfig.Load(exampleConfig(name))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// normalize makes the reference's explicit route metric (equal to the
// link's routeMetric, which is what an unset one means) comparable.
func normalize(v any) any {
	n, ok := v.(machineconfig.Network)
	if !ok {
		return v
	}
	for i := range n.Interfaces {
		in := &n.Interfaces[i]
		for j := range in.Routes {
			if r := &in.Routes[j]; r.Metric != nil && in.RouteMetric != nil && *r.Metric == *in.RouteMetric {
				r.Metric = nil
			}
		}
	}
	return n
}

func indent(s string, n int) string {
	pad := strings.Repeat(" ", n)
	return pad + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n"+pad) + "\n"
}

// Ctrl-C (SIGINT) or SIGTERM during kubeboot cidata removes the staging
// directory with the user-data and the half-written volume.
func TestCIDATAInterruptedLeavesNothing(t *testing.T) {
	if _, err := exec.LookPath("xorriso"); err != nil {
		t.Skip("xorriso not installed (scripts/setup-host.sh)")
	}
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			dir, tmp := t.TempDir(), t.TempDir()
			// A large extra file keeps the command busy long enough.
			big := filepath.Join(tmp, "big.bin")
			f, _ := os.Create(big)
			f.Truncate(256 << 20)
			f.Close()
			out := filepath.Join(dir, "out")
			cmd := exec.Command(kubebootBin, "cidata", "-o", filepath.Join(out, "seed.iso"), "--config", exampleConfig("worker.yaml"), "--file", big)
			cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// Signal once the work directory exists (the command is
			// staging or running xorriso).
			deadline := time.Now().Add(30 * time.Second)
			for {
				if m, _ := filepath.Glob(filepath.Join(out, ".seed.iso.tmp-*")); len(m) > 0 {
					break
				}
				if time.Now().After(deadline) {
					cmd.Process.Kill()
					cmd.Wait()
					t.Fatal("the work directory never appeared")
				}
				time.Sleep(5 * time.Millisecond)
			}
			cmd.Process.Signal(sig)
			err := cmd.Wait()
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != exitFail || !strings.Contains(stderr.String(), "interrupted; nothing was written") {
				t.Fatalf("after %v: %v, stderr %q", sig, err, stderr.String())
			}
			entries, _ := os.ReadDir(out)
			left, _ := os.ReadDir(tmp)
			if len(entries) != 0 || len(left) != 1 {
				t.Errorf("left behind: %v in the output directory, %v in TMPDIR", entries, left)
			}
		})
	}
}

var shBlock = regexp.MustCompile("(?s)```sh\n(.*?)```")

// docCommands are the kubeboot commands of the README and docs that need
// no image build, and the ssh-keygen that makes a key for them, in the
// order a reader meets them.
func docCommands(t *testing.T) []string {
	t.Helper()
	files := []string{"../../README.md"}
	docs, _ := filepath.Glob("../../docs/*.md")
	files = append(files, docs...)
	var cmds []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range shBlock.FindAllStringSubmatch(string(data), -1) {
			text := strings.ReplaceAll(m[1], "\\\n", " ")
			for _, line := range strings.Split(text, "\n") {
				line = strings.TrimSpace(line)
				fields := strings.Fields(line)
				if len(fields) > 0 && fields[0] == "ssh-keygen" { // the key the README's config gen gives a user
					cmds = append(cmds, line)
					continue
				}
				if len(fields) < 2 || fields[0] != "kubeboot" && fields[0] != "bin/kubeboot" {
					continue
				}
				switch fields[1] {
				case "validate", "secrets", "config", "cidata":
					cmds = append(cmds, line)
				}
			}
		}
	}
	return cmds
}

// Every kubeboot command the README and docs show that needs no image
// build runs as written, from a checkout with bin/kubeboot (make build).
func TestDocCommandsRunAsWritten(t *testing.T) {
	if _, err := exec.LookPath("xorriso"); err != nil {
		t.Skip("xorriso not installed (scripts/setup-host.sh): the README's cidata command needs it")
	}
	cmds := docCommands(t)
	for _, want := range []string{"secrets gen", "config gen", "validate", "cidata -o seed.iso"} {
		found := false
		for _, c := range cmds {
			found = found || strings.Contains(c, want)
		}
		if !found {
			t.Errorf("the docs show no %q command", want)
		}
	}
	root := t.TempDir()
	if err := os.CopyFS(filepath.Join(root, "configs"), os.DirFS("../../configs")); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(root, "configs/secrets.yaml")) // a checkout has none
	os.MkdirAll(filepath.Join(root, "bin"), 0o755)
	bin, _ := os.ReadFile(kubebootBin)
	os.WriteFile(filepath.Join(root, "bin/kubeboot"), bin, 0o755)
	// A home of the test's own, with the ~/.ssh a user has: ssh-keygen
	// writes the README's key there.
	home := t.TempDir()
	os.Mkdir(filepath.Join(home, ".ssh"), 0o700)
	var outputs bytes.Buffer
	for _, c := range cmds {
		cmd := exec.Command("sh", "-c", c)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "PATH="+filepath.Join(root, "bin")+":"+os.Getenv("PATH"), "HOME="+home)
		out, err := cmd.CombinedOutput()
		outputs.Write(out)
		if err != nil {
			t.Errorf("%s: %v\n%s", c, err, out)
		}
	}
	b, err := machineconfig.LoadBundle(filepath.Join(root, "configs/secrets.yaml"))
	if err != nil {
		t.Fatalf("the docs' commands made no bundle: %v", err)
	}
	secrettest.For(&b.ClusterSecrets).Check(t, "the output of the docs' commands", outputs.Bytes())
}

func TestConfigGenUsageErrors(t *testing.T) {
	dir := t.TempDir()
	base := []string{"config", "gen", "--secrets", exampleConfig("secrets.yaml"), "--kubernetes-version", "v1.37.2", "-o", "n.yaml"}
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"--role", "worker", "--hostname", "w"}, exitUsage, "needs --endpoint"},
		{[]string{"--role", "init", "--hostname", "c", "--address", "10.0.0.5/24", "--gateway", "10.1.0.1"}, exitUsage, "in the network of no --address"},
		{[]string{"--role", "init", "--hostname", "c", "--mac", "52:54:00:00:00:01"}, exitUsage, "each --mac and --interface belongs to an --address"},
		{[]string{"--role", "init", "--hostname", "c", "--host", "c"}, exitUsage, "must be NAME=IP"},
		{[]string{"--role", "boss", "--hostname", "c", "--endpoint", "c:6443"}, exitFail, `n.yaml:5:7: role: unknown role "boss"`},
		{[]string{"--role", "init"}, exitUsage, "usage: kubeboot config gen"},
	} {
		code, _, stderr := kb(t, nil, dir, append(base, tc.args...)...)
		if code != tc.code || !strings.Contains(stderr, tc.msg) {
			t.Errorf("%v: exit %d, want %d with %q:\n%s", tc.args, code, tc.code, tc.msg, stderr)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("a refused config gen wrote %v", entries)
	}
}
