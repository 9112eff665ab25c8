package main

// Issue 10, items 1, 2 and 6, and issue 12's catalog of hostile configs
// (testdata/hostile, its README.md lists each with its expected error):
// every input bootstrapd reads is bounded. Each hostile input below is
// given to the built binary (`bootstrapd run`, as on first boot) under
// prlimit (1 GiB of address space, 2 s of CPU, so a regression is killed
// instead of taking the machine), and must end in a clear error within
//
//	peak RSS < 100 MiB (the stated bound; measured figures in
//	docs/bootstrapd.md), no limit hit (so < 2 s of CPU),
//
// with a failed marker for stage "source", nothing else written but the
// state lock and the console banner, nothing changed in the network and
// UTS namespaces it ran in (as root), no secret in any output, and bounded
// output from run and from `bootstrapd status`. Every config file among
// them goes to `kubeboot validate` too, under the same bounds.

import (
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"kubeboot.dev/kubeboot/bootstrapd/state"
	"kubeboot.dev/kubeboot/internal/cidatatest"
	"kubeboot.dev/kubeboot/internal/rlimittest"
	"kubeboot.dev/kubeboot/machineconfig"
)

const (
	maxPeakRSS   = 100 << 20
	maxStderr    = 64 << 10 // the error list (50 problems) and the log lines
	maxStatusOut = 48 << 10 // the failed marker's reason is cut at 32 KiB
)

const hostileHead = "apiVersion: kubeboot.dev/v1alpha1\nkind: MachineConfig\nrole: worker\nhostname: w1.home.local\n"

// upTo repeats line(i) after head while the text stays within
// machineconfig.MaxSize.
func upTo(head string, line func(i int) string) []byte {
	var b bytes.Buffer
	b.WriteString(head)
	for i := 0; ; i++ {
		l := line(i)
		if b.Len()+len(l) > machineconfig.MaxSize {
			return b.Bytes()
		}
		b.WriteString(l)
	}
}

// flowList is "key: [item,item,...]" filling the config: the densest
// YAML there is, one node per two bytes.
func flowList(head, key, item string) []byte {
	n := (machineconfig.MaxSize - len(head) - len(key) - 8) / (len(item) + 1)
	return []byte(head + key + ": [" + strings.Repeat(item+",", n-1) + item + "]\n")
}

// aliasBomb expands to 10^30 nodes through 30 levels of aliases.
func aliasBomb() []byte {
	var b strings.Builder
	b.WriteString(hostileHead + "kubernetes:\n  kubeadmPatches:\n    - kind: JoinConfiguration\n      patch:\n        l0: &l0 [x,x,x,x,x,x,x,x,x,x]\n")
	for i := 1; i < 30; i++ {
		p := fmt.Sprintf("*l%d", i-1)
		fmt.Fprintf(&b, "        l%d: &l%d [%s]\n", i, i, strings.Repeat(p+",", 9)+p)
	}
	return []byte(b.String())
}

// validUserData is a worker config that passes validation.
const validUserData = hostileHead + `kubernetes:
  version: v1.37.2
  controlPlaneEndpoint: controller.home.local:6443
  credentials:
    token: kbex01.exampletoken0001
    caCertHashes: ["sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"]
`

// bigNetworkConfig is a netplan network-config whose search list of item
// fills what user-data of userData bytes leaves of machineconfig.MaxSize.
func bigNetworkConfig(item string, userData int) []byte {
	netcfg := flowList("network:\n  version: 2\n  ethernets:\n    e0:\n      nameservers:\n", "        search", item)[:machineconfig.MaxSize-userData-2]
	return append(netcfg[:bytes.LastIndexByte(netcfg, ',')], "]\n"...)
}

type hostileInput struct {
	name string
	// setup makes the node root and returns the extra arguments of run.
	setup func(t *testing.T, root string) []string
	// want is in stderr and the failed marker; "…" in it stands for any text.
	want string
}

func configFile(data []byte) func(t *testing.T, root string) []string {
	return func(t *testing.T, root string) []string {
		p := filepath.Join(t.TempDir(), "hostile.yaml")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return []string{"--config", p}
	}
}

// catalogToken is the join token of the catalog's configs: no output may
// show it.
const catalogToken = "x7k2q9.h4m8c1v6b3n5z0w2"

// catalog reads the table of testdata/hostile/README.md: one input per
// row, the file given as it is (its name starts each expected error).
func catalog(t *testing.T) []hostileInput {
	t.Helper()
	dir, err := filepath.Abs("testdata/hostile")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []hostileInput
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		cells := strings.Split(sc.Text(), " | ")
		if len(cells) != 4 || !strings.HasPrefix(cells[0], "| `") {
			continue
		}
		name := strings.Trim(cells[0], "|` ")
		want := strings.TrimSpace(strings.Trim(strings.TrimSuffix(cells[3], " |"), "`"))
		path := filepath.Join(dir, name)
		out = append(out, hostileInput{name: name, want: want, setup: func(*testing.T, string) []string { return []string{"--config", path} }})
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if len(out) < 40 || len(out) != len(files) {
		t.Fatalf("the table of %s has %d rows for %d files (at least 40)", f.Name(), len(out), len(files))
	}
	return out
}

// matches reports whether s holds want, where "…" in want is any text.
func matches(s, want string) bool {
	for _, part := range strings.Split(want, "…") {
		at := strings.Index(s, part)
		if at < 0 {
			return false
		}
		s = s[at+len(part):]
	}
	return true
}

// kubebootBuild builds the kubeboot command once, beside bootstrapd.
var kubebootBuild = sync.OnceValues(func() (string, error) {
	p := filepath.Join(filepath.Dir(binPath), "kubeboot")
	return p, goBuild(p, "kubeboot.dev/kubeboot/cmd/kubeboot")
})

func kubeboot(t testing.TB) string {
	t.Helper()
	binary(t)
	p, err := kubebootBuild()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// leaks fails the test when text shows the catalog's token or a line of
// this machine's /etc/shadow (which one catalog config names as its bundle).
func leaks(t *testing.T, where, text string, shadow []string) {
	t.Helper()
	if strings.Contains(text, catalogToken) {
		t.Errorf("%s shows the join token", where)
	}
	for _, l := range shadow {
		if strings.Contains(text, l) {
			t.Errorf("%s shows a line of /etc/shadow", where)
			return
		}
	}
}

// written lists what a run left under root, but for what setup put there.
func written(t *testing.T, root string, before map[string]bool) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !before[p] {
			rel, _ := filepath.Rel(root, p)
			out = append(out, rel)
		}
		return err
	})
	return out
}

// volume links img as the node's CIDATA volume, as udev would.
func volume(label string, img func(t *testing.T) string) func(t *testing.T, root string) []string {
	return func(t *testing.T, root string) []string {
		dir := filepath.Join(root, "dev/disk/by-label")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(img(t), filepath.Join(dir, label)); err != nil {
			t.Fatal(err)
		}
		return nil
	}
}

func hostileInputs() []hostileInput {
	unknownKey := func(i int) string { return fmt.Sprintf("key%07d: value\n", i) }
	return []hostileInput{
		{"--config /dev/zero", func(*testing.T, string) []string { return []string{"--config", "/dev/zero"} }, "/dev/zero:1:1: larger than 128 KiB"},
		{"4 MB of unknown keys", configFile(bytes.Repeat([]byte("key: value\n"), 4<<20/11)), "larger than 128 KiB"},
		{"128 KiB of unknown keys", configFile(upTo(hostileHead, unknownKey)), "more problems (fix these first)"},
		{"128 KiB flow list of bad module names", configFile(flowList(hostileHead+"system:\n", "  modules", "-")), "invalid kernel module name \"-\""},
		{"128 KiB flow list of search domains", configFile(flowList(hostileHead+"network:\n  nameservers:\n", "    search", "a")), "kubernetes.version: version is required"},
		{"a value as long as the file", configFile([]byte(strings.Replace(hostileHead, "w1.home.local", strings.Repeat("a", machineconfig.MaxSize-200), 1))), "bytes cut"},
		{"alias bomb", configFile(aliasBomb()), "the document is too complex"},
		{"3000 VLANs on unknown links", configFile(upTo(hostileHead+"network:\n  interfaces:\n"+strings.Repeat("    - {name: e0}\n", 1)+"  vlans:\n", func(i int) string {
			return fmt.Sprintf("    - {name: v%d, id: %d, link: x%d}\n", i, i%4094+1, i)
		})), "is not an interface or bond of this config"},
		{"syntax error after 10000 lines", configFile(append(upTo(hostileHead, func(i int) string { return fmt.Sprintf("k%07d: v\n", i) })[:machineconfig.MaxSize-100], "\nx: [\n"...)), "YAML syntax error"},
		{"FAT cluster chain loop", volume("CIDATA", func(t *testing.T) string {
			img := cidatatest.FAT(t, 0, 2048, map[string][]byte{"user-data": bytes.Repeat([]byte("# padding\n"), 500)})
			c := cidatatest.FirstCluster(t, img, "user-data")
			cidatatest.SetFAT(t, img, 12, c+1, c+1)
			return img
		}), "cluster chain loops back to cluster"},
		{"32 MB user-data on FAT", volume("CIDATA", func(t *testing.T) string {
			return cidatatest.FAT(t, 0, 40<<10, map[string][]byte{"user-data": bytes.Repeat([]byte("# padding\n"), 32<<20/10)})
		}), "33554430 bytes, more than the 131072 allowed"},
		{"ISO record claiming 1 GiB", volume("cidata", func(t *testing.T) string {
			ud := []byte(validUserData)
			img := cidatatest.ISO(t, true, map[string][]byte{"user-data": ud}, nil)
			cidatatest.SetISOSize(t, img, ud, 1<<30)
			return img
		}), "1073741824 bytes, more than the 131072 allowed"},
		{"ISO symbolic link as the secrets bundle", volume("cidata", func(t *testing.T) string {
			ud := strings.Replace(validUserData, "    caCertHashes:", "    secretsBundle: ./secrets.yaml\n    caCertHashes:", 1)
			return cidatatest.ISO(t, true, map[string][]byte{"user-data": []byte(ud)}, map[string]string{"secrets.yaml": "/etc/shadow"})
		}), "secrets.yaml: is a symbolic link"},
		{"network-config of 128 KiB, bad", volume("cidata", func(t *testing.T) string {
			return cidatatest.ISO(t, true, map[string][]byte{"user-data": []byte(validUserData), "network-config": bigNetworkConfig("-", len(validUserData))}, nil)
		}), "network-config:6:18: network.ethernets.e0.nameservers.search[0]"},
		// Both parses: network-config is valid, the merged config is not.
		{"network-config of 128 KiB, good", volume("cidata", func(t *testing.T) string {
			return cidatatest.ISO(t, true, map[string][]byte{"user-data": []byte(hostileHead), "network-config": bigNetworkConfig("a", len(hostileHead))}, nil)
		}), "kubernetes.version: version is required"},
	}
}

func TestHostileInputsStayBounded(t *testing.T) {
	bin := binary(t)
	var shadow []string
	if data, err := os.ReadFile("/etc/shadow"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if len(l) > 8 {
				shadow = append(shadow, l)
			}
		}
	}
	// As root every input runs in one node's network and UTS namespaces,
	// whose state is compared after each; should an input get past the
	// source, its changes show up there and go away with the namespace.
	var n *node
	var kernelBefore string
	if os.Geteuid() == 0 {
		needRootAndTools(t)
		n = newNode(t)
		kernelBefore = fmt.Sprint(n.kernel())
	}
	cat := catalog(t)
	for _, in := range append(hostileInputs(), cat...) {
		t.Run(in.name, func(t *testing.T) { refused(t, bin, n, kernelBefore, shadow, in) })
	}
}

// refused runs `bootstrapd run` with in's arguments (inside n's namespaces
// when n is not nil) and checks that the source stage refused it: the
// expected error, the failed marker, status, nothing written or changed,
// bounded memory, time and output, no line of shadow anywhere.
func refused(t *testing.T, bin string, n *node, kernelBefore string, shadow []string, in hostileInput) {
	root := t.TempDir()
	args := append([]string{"run", "--root", root}, in.setup(t, root)...)
	before := map[string]bool{}
	for _, p := range written(t, root, nil) {
		before[filepath.Join(root, p)] = true
	}
	cmd := exec.Command(bin, args...)
	if n != nil {
		cmd = exec.Command("ip", append([]string{"netns", "exec", n.ns, "nsenter", "--uts=" + n.uts, bin}, args...)...)
	}
	r := rlimittest.Run(t, cmd, rlimittest.Default)
	rlimittest.Check(t, "bootstrapd run", r, maxPeakRSS)
	if r.ExitCode != exitFail || !strings.Contains(r.Stderr, "stage source: ") || !matches(r.Stderr, in.want) {
		t.Errorf("exit %d, want %d with %q in stderr:\n%.2000s", r.ExitCode, exitFail, in.want, r.Stderr)
	}
	if len(r.Stderr) > maxStderr {
		t.Errorf("stderr of %d bytes, over %d", len(r.Stderr), maxStderr)
	}
	leaks(t, "stderr", r.Stderr, shadow)
	f, err := state.Open(root).Failure()
	if err != nil || f == nil || f.Stage != "source" || !matches(f.Reason, in.want) {
		t.Fatalf("failed marker %+v, %v; want stage source with %q", f, err, in.want)
	}
	leaks(t, "the failed marker", f.Reason, shadow)
	var out, errOut bytes.Buffer
	if code := dispatch([]string{"status", "--root", root}, &out, &errOut); code != exitOK {
		t.Fatalf("status: exit %d: %s", code, errOut.String())
	}
	if out.Len() > maxStatusOut || !strings.Contains(out.String(), "failed:  stage source") {
		t.Errorf("status printed %d bytes (at most %d) :\n%.1000s", out.Len(), maxStatusOut, out.String())
	}
	leaks(t, "status", out.String(), shadow)
	// Nothing applied: the state lock, the failed marker and the
	// console banner saying so are all a refused config leaves.
	for _, p := range written(t, root, before) {
		switch p {
		case "var/lib/kubeboot/lock", "var/lib/kubeboot/failed":
		case "run/kubeboot/issue":
			data, _ := os.ReadFile(filepath.Join(root, p))
			leaks(t, "the console banner", string(data), shadow)
		default:
			t.Errorf("the run wrote %s", p)
		}
	}
	if n != nil {
		if after := fmt.Sprint(n.kernel()); after != kernelBefore {
			t.Fatalf("the namespaces changed:\nbefore %s\nafter  %s", kernelBefore, after)
		}
	}
	if len(args) == 5 && args[3] == "--config" && args[4] != "/dev/zero" {
		validate(t, args[4], in.want, shadow)
	}
}

// validate runs `kubeboot validate FILE` under the same bounds: exit 1,
// the expected error, nothing on stdout.
func validate(t *testing.T, file, want string, shadow []string) {
	t.Helper()
	r := rlimittest.Run(t, exec.Command(kubeboot(t), "validate", file), rlimittest.Default)
	rlimittest.Check(t, "kubeboot validate", r, maxPeakRSS)
	if r.ExitCode != 1 || r.Stdout != "" || !matches(r.Stderr, want) {
		t.Errorf("kubeboot validate: exit %d, stdout %q, want exit 1 with %q in stderr:\n%.2000s", r.ExitCode, r.Stdout, want, r.Stderr)
	}
	if len(r.Stderr) > maxStderr {
		t.Errorf("kubeboot validate: stderr of %d bytes, over %d", len(r.Stderr), maxStderr)
	}
	leaks(t, "kubeboot validate", r.Stderr, shadow)
}

// Issue 10 item 6: a kubeboot.config= URL with a password that fails to
// parse was printed whole in stderr, STATUS=, the failed marker and status.
func TestURLSecretsStayOutOfEveryOutput(t *testing.T) {
	bin := binary(t)
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "proc"), 0o755); err != nil {
		t.Fatal(err)
	}
	cmdline := "ro kubeboot.config=https://admin:hunter2/x@10.0.0.1/m.yaml?X-Amz-Signature=deadbeef\n"
	if err := os.WriteFile(filepath.Join(root, "proc/cmdline"), []byte(cmdline), 0o644); err != nil {
		t.Fatal(err)
	}
	// systemd's notify socket, to see what STATUS= says.
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cmd := exec.Command(bin, "run", "--root", root)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
	out, _ := cmd.CombinedOutput()
	var notes []string
	conn.SetReadDeadline(time.Now().Add(time.Second)) // the datagrams were sent before the process exited
	buf := make([]byte, 64<<10)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			break
		}
		notes = append(notes, string(buf[:n]))
	}
	marker, _ := os.ReadFile(filepath.Join(root, "var/lib/kubeboot/failed"))
	var status, statusErr bytes.Buffer
	dispatch([]string{"status", "--root", root}, &status, &statusErr)
	outputs := map[string]string{"stderr": string(out), "STATUS=": strings.Join(notes, "\n"), "failed marker": string(marker), "status": status.String()}
	for name, text := range outputs {
		if !strings.Contains(text, "https://REDACTED") {
			t.Errorf("%s lacks the redacted URL:\n%s", name, text)
		}
		for _, secret := range []string{"hunter2", "admin", "deadbeef"} {
			if strings.Contains(text, secret) {
				t.Errorf("%s holds %q:\n%s", name, secret, text)
			}
		}
	}
}
