package fromsource

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"kubeboot.dev/kubeboot/image/fetch"
	"kubeboot.dev/kubeboot/image/progress"
)

func buildTestPause(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("gcc not installed: cannot build pause")
	}
	c, err := fetch.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b := &Builder{Cache: c, Progress: progress.Discard}
	f, err := b.buildPause(context.Background(), "3.10.2")
	if err != nil {
		t.Fatal(err)
	}
	if f.Version != "3.10.2" || f.Size == 0 {
		t.Fatalf("lock entry %+v", f)
	}
	return c.FilePath(f.SHA256)
}

func TestPauseVersionAndStatic(t *testing.T) {
	p := buildTestPause(t)
	out, err := exec.Command(p, "-v").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "kubeboot-pause 3.10.2" {
		t.Fatalf("pause -v: %q %v", out, err)
	}
	if out, err := exec.Command("file", p).Output(); err == nil && !strings.Contains(string(out), "statically linked") {
		t.Errorf("pause is not static: %s", out)
	}
}

func TestPauseExitsOnSignals(t *testing.T) {
	p := buildTestPause(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		cmd := exec.Command(p)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
		if err := cmd.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("pause after %v: %v, want exit 0", sig, err)
			}
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("pause ignored %v", sig)
		}
	}
}

// children returns the pids whose parent is ppid and their states.
func children(ppid int) map[int]string {
	out := map[int]string{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndex(s, ")")+2:]) // state ppid ...
		if len(f) > 1 && f[1] == strconv.Itoa(ppid) {
			out[pid] = f[0]
		}
	}
	return out
}

// orphanInto makes a short-lived process inside pid1's PID namespace whose
// parent exits at once, so the namespace's init inherits it.
func orphanInto(t *testing.T, pid1 int) {
	t.Helper()
	// Standard streams stay /dev/null: with a pipe the orphan was gone
	// before it could be observed.
	if err := exec.Command("nsenter", "-t", strconv.Itoa(pid1), "-p", "--", "sh", "-c", "sleep 2 & exit 0").Run(); err != nil {
		t.Fatalf("nsenter -t %d -p: %v", pid1, err)
	}
}

// runAsPID1 starts bin as init of a new PID namespace.
func runAsPID1(t *testing.T, bin string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
	if err := cmd.Start(); err != nil {
		t.Skipf("cannot create a PID namespace (needs root): %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	time.Sleep(100 * time.Millisecond)
	return cmd
}

// TestPauseReapsZombies runs pause as PID 1 of a new PID namespace, gives it
// an orphan and checks the orphan is reaped once it exits. A control run
// with `sleep` as PID 1 (which never calls wait) shows the check can see a
// zombie.
func TestPauseReapsZombies(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a PID namespace and nsenter")
	}
	if _, err := exec.LookPath("nsenter"); err != nil {
		t.Skip("nsenter (util-linux) not installed")
	}
	p := buildTestPause(t)
	check := func(init *exec.Cmd) (adopted bool, zombies int) {
		orphanInto(t, init.Process.Pid)
		adopted = len(children(init.Process.Pid)) > 0
		time.Sleep(2500 * time.Millisecond) // the orphan's sleep has ended
		for _, state := range children(init.Process.Pid) {
			if state == "Z" {
				zombies++
			}
		}
		return adopted, zombies
	}

	control := runAsPID1(t, "sleep", "30")
	if adopted, zombies := check(control); !adopted || zombies == 0 {
		t.Fatalf("control: adopted=%v zombies=%d; the test cannot detect zombies here", adopted, zombies)
	}
	pause := runAsPID1(t, p)
	adopted, zombies := check(pause)
	if !adopted {
		t.Fatal("the orphan was not re-parented to pause")
	}
	if zombies != 0 {
		t.Fatalf("pause left %d zombies", zombies)
	}
	if err := pause.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := pause.Wait(); err != nil {
		t.Fatalf("pause as PID 1 after SIGTERM: %v", err)
	}
}
