// Package nspawntest boots a real systemd in a Debian container for tests
// of code that talks to systemd, firewalld or D-Bus: systemd-nspawn with
// the flags shared/notes/feasibility.md found to work on this host, in a
// network namespace the test made, with a directory of the test's bound
// read-only at /mnt/kubeboot-test (to run the test binary inside).
package nspawntest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"kubeboot.dev/kubeboot/bootstrapd/stage"
)

// BindDir is where the test's directory appears in the container.
const BindDir = "/mnt/kubeboot-test"

// Require skips the test unless it runs as root with the tools a
// container needs, and outside -short.
func Require(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("boots a systemd-nspawn container: needs root")
	}
	for _, tool := range []string{"systemd-nspawn", "mmdebstrap", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("boots a systemd-nspawn container: %s not installed (scripts/setup-host.sh)", tool)
		}
	}
	if testing.Short() {
		t.Skip("boots a container; skipped with -short")
	}
}

// Rootfs returns a Debian rootfs of suite with packages, built with
// mmdebstrap once (about a minute) and cached outside the repository,
// keyed by what goes into it, under $KUBEBOOT_TEST_CACHE or
// /var/cache/kubeboot-test.
func Rootfs(t *testing.T, suite string, packages []string) string {
	t.Helper()
	sum := sha256.Sum256([]byte(suite + "|minbase|" + strings.Join(packages, ",")))
	base := os.Getenv("KUBEBOOT_TEST_CACHE")
	if base == "" {
		base = "/var/cache/kubeboot-test"
	}
	dir := filepath.Join(base, "nspawn-rootfs-"+hex.EncodeToString(sum[:])[:12])
	if _, err := os.Stat(dir + ".ok"); err == nil {
		return dir
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		t.Fatal(err)
	}
	// Concurrent test runs build it once.
	lock, err := os.OpenFile(dir+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir + ".ok"); err == nil {
		return dir
	}
	tmp := dir + ".tmp"
	_ = os.RemoveAll(tmp)
	t.Logf("building %s with mmdebstrap (once; about a minute)", dir)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "mmdebstrap", "--variant=minbase", "--mode=root",
		"--include="+strings.Join(packages, ","), suite, tmp).CombinedOutput()
	if err != nil {
		_ = os.RemoveAll(tmp)
		t.Fatalf("mmdebstrap %s: %v\n%s", suite, err, out)
	}
	_ = os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir+".ok", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Container is a booted systemd-nspawn machine.
type Container struct {
	Name    string
	InitPID int
	nspawn  *exec.Cmd
	exited  chan struct{}
	logFile string
}

// Boot boots rootfs in the network namespace netnsName (one the test made,
// under /run/netns), with bindDir bound read-only at BindDir. Flags:
// --keep-unit because the host has no systemd bus; --private-network with
// --network-namespace-path so the container keeps CAP_NET_ADMIN in the
// test's namespace; --volatile=overlay so what the container writes lands
// in a tmpfs, not in the cached rootfs. nspawn runs in a cgroup of its
// own, where it creates its payload and supervisor cgroups, so nothing is
// left at the host's root. The container is powered off (or killed) and
// its cgroups removed when the test ends.
func Boot(t *testing.T, rootfs, netnsName, bindDir string) *Container {
	t.Helper()
	c := &Container{Name: netnsName + "m", exited: make(chan struct{})}
	var cgroups []string
	for _, h := range []string{"/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified"} {
		if _, err := os.Stat(filepath.Join(h, "cgroup.procs")); err != nil {
			continue
		}
		cg := filepath.Join(h, "kubeboot-"+c.Name)
		if err := os.Mkdir(cg, 0o755); err != nil {
			t.Fatal(err)
		}
		cgroups = append(cgroups, cg)
	}
	if len(cgroups) == 0 {
		if err := os.Mkdir("/sys/fs/cgroup/kubeboot-"+c.Name, 0o755); err == nil {
			cgroups = append(cgroups, "/sys/fs/cgroup/kubeboot-"+c.Name)
		}
	}
	t.Cleanup(func() {
		for _, cg := range cgroups {
			removeCgroupTree(t, cg)
		}
		// nspawn's per-machine runtime files, then its directories if no
		// other machine uses them.
		_ = os.RemoveAll("/run/systemd/nspawn/propagate/" + c.Name)
		for _, d := range []string{"/run/systemd/nspawn/propagate", "/run/systemd/nspawn/locks", "/run/systemd/nspawn"} {
			_ = os.Remove(d)
		}
	})

	var join strings.Builder
	for _, cg := range cgroups {
		fmt.Fprintf(&join, "echo $$ > %s/cgroup.procs && ", cg)
	}
	c.logFile = filepath.Join(t.TempDir(), "console.log")
	log, err := os.Create(c.logFile)
	if err != nil {
		t.Fatal(err)
	}
	c.nspawn = exec.Command("sh", "-c", join.String()+`exec "$@"`, "sh",
		"systemd-nspawn", "-D", rootfs, "-M", c.Name, "-b", "--register=no", "--keep-unit",
		"--console=read-only", "--private-network", "--network-namespace-path=/run/netns/"+netnsName,
		"--volatile=overlay", "--bind-ro="+bindDir+":"+BindDir)
	c.nspawn.Stdout, c.nspawn.Stderr = log, log
	c.nspawn.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := c.nspawn.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = c.nspawn.Wait(); log.Close(); close(c.exited) }()
	t.Cleanup(func() { c.stop(t) })

	deadline := time.Now().Add(30 * time.Second)
	for c.InitPID == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("systemd-nspawn started no container init within 30s; console:\n%s", c.Console())
		}
		select {
		case <-c.exited:
			t.Fatalf("systemd-nspawn exited: %v; console:\n%s", c.nspawn.ProcessState, c.Console())
		case <-time.After(100 * time.Millisecond):
		}
		c.InitPID = childNamed(c.nspawn.Process.Pid, "systemd")
	}
	return c
}

// Console is what the container printed so far.
func (c *Container) Console() string { return readFile(c.logFile) }

func readFile(p string) string { b, _ := os.ReadFile(p); return string(b) }

// childNamed returns the pid of a child of pid whose comm is name.
func childNamed(pid int, name string) int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, task := range tasks {
		for _, f := range strings.Fields(readFile(task)) {
			if strings.TrimSpace(readFile("/proc/"+f+"/comm")) == name {
				n, _ := strconv.Atoi(f)
				return n
			}
		}
	}
	return 0
}

func (c *Container) stop(t *testing.T) {
	select {
	case <-c.exited: // gone already (Kill): its pid may be another process's now
		return
	default:
	}
	if c.InitPID != 0 {
		_ = exec.Command("nsenter", "-t", strconv.Itoa(c.InitPID), "-a", "systemctl", "poweroff").Run()
	}
	select {
	case <-c.exited:
		return
	case <-time.After(30 * time.Second):
	}
	t.Logf("container %s did not power off in 30s; killing it. console:\n%s", c.Name, c.Console())
	if c.InitPID != 0 {
		_ = syscall.Kill(c.InitPID, syscall.SIGKILL) // ends its whole pid namespace
	}
	_ = c.nspawn.Process.Kill()
	<-c.exited
}

// Kill ends the container at once (its init, and with it its pid
// namespace, then nspawn), for teardowns that cannot wait for the test's
// cleanup (a signal handler); a no-op once it has exited.
func (c *Container) Kill() {
	select {
	case <-c.exited:
		return
	default:
	}
	if c.InitPID != 0 {
		_ = syscall.Kill(c.InitPID, syscall.SIGKILL)
	}
	_ = c.nspawn.Process.Kill()
	<-c.exited
}

// removeCgroupTree removes a cgroup and its children, deepest first; each
// is empty once the container is gone.
func removeCgroupTree(t *testing.T, root string) {
	var dirs []string
	_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	slices.Reverse(dirs)
	for _, d := range dirs {
		var err error
		for range 50 { // a just-exited process can hold it for a moment
			if err = os.Remove(d); err == nil || os.IsNotExist(err) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil && !os.IsNotExist(err) {
			t.Errorf("remove cgroup %s: %v", d, err)
		}
	}
}

// Exec runs a command inside the container with extra environment and
// returns its stdout.
func (c *Container) Exec(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(c.InitPID), "-a"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s in container %s: %v\n%s", strings.Join(args, " "), c.Name, err, stderr.String())
	}
	return string(out), nil
}

// MustExec is Exec with no extra environment that fails the test on error
// and trims the output.
func (c *Container) MustExec(t *testing.T, args ...string) string {
	t.Helper()
	out, err := c.Exec(t, nil, args...)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// WaitSystem waits until the container's systemd has finished booting
// (is-system-running answers running or degraded).
func (c *Container) WaitSystem(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		out, _ := c.Exec(t, nil, "systemctl", "is-system-running")
		if s := strings.TrimSpace(out); s == "running" || s == "degraded" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s not booted after 90s:\n%s", c.Name, c.Console())
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// CopySelf copies the running test binary into dir as name, so the test
// can run it inside the container (at BindDir/name).
func CopySelf(t *testing.T, dir, name string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// CanSetClock reports whether the container's processes could set the
// clock, which is the host's (containers have no clock of their own):
// whether CAP_SYS_TIME (bit 25) is in its init's bounding set. nspawn
// leaves it out unless asked; tests that run time daemons check first.
func (c *Container) CanSetClock(t *testing.T) bool {
	t.Helper()
	for _, line := range strings.Split(readFile(fmt.Sprintf("/proc/%d/status", c.InitPID)), "\n") {
		if v, ok := strings.CutPrefix(line, "CapBnd:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatalf("CapBnd of %s: %q: %v", c.Name, v, err)
			}
			return n&(1<<unix.CAP_SYS_TIME) != 0
		}
	}
	t.Fatalf("no CapBnd in /proc/%d/status (container %s)", c.InitPID, c.Name)
	return true
}

// Result is what a test binary run inside a container reports: a stage's
// changes or its error, and how long the call took.
type Result struct {
	Changes []stage.Change
	Error   string
	Took    time.Duration
}

// Main is the TestMain of a package whose test binary also runs inside a
// container: when the environment variable env is set, the binary calls
// inner with its value, prints the Result as JSON and exits; otherwise it
// runs the tests.
func Main(m *testing.M, env string, inner func(arg string) ([]stage.Change, error)) {
	arg := os.Getenv(env)
	if arg == "" {
		os.Exit(m.Run())
	}
	started := time.Now()
	changes, err := inner(arg)
	res := Result{Changes: changes, Took: time.Since(started)}
	if err != nil {
		res.Error = err.Error()
	}
	_ = json.NewEncoder(os.Stdout).Encode(res)
	os.Exit(0)
}

// Inner runs the test binary, copied into the bound directory as name
// (CopySelf), inside the container with env=arg and the extra environment,
// and returns what it reported (see Main).
func (c *Container) Inner(t *testing.T, name, env, arg string, extra ...string) Result {
	t.Helper()
	stdout, err := c.Exec(t, append([]string{env + "=" + arg}, extra...), BindDir+"/"+name)
	if err != nil {
		t.Fatal(err)
	}
	var res Result
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatalf("%s in container %s printed %q: %v", name, c.Name, stdout, err)
	}
	return res
}
