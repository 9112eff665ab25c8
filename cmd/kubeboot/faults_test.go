package main

// Builder faults (issue 12), run by `make faults` (KUBEBOOT_FAULTS=1, as
// root, with the artifact cache of configs/image.yaml complete): Ctrl-C
// at the start of each step of `kubeboot image build`, an output
// directory and a cache on a small tmpfs that fill up, and an artifact
// that no longer matches its sha256 in the lock. Each must end in a clear
// error with no image, no temporary file and no half cache entry, and the
// cache must still build an image afterwards.
//
// The real cache is never written: every build sees it through an overlay
// mount (the real cache the lower layer, a throwaway upper layer), so what
// a build adds or corrupts lands in the upper layer. Each build is given a
// bootstrapd that differs from every cached one by a trailing byte, which
// makes the root, state, disk and qcow2 steps run instead of coming from
// the cache; rootfs, initrd, store and esp come from the real cache.

import (
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"kubeboot.dev/kubeboot/image/fetch"
	"kubeboot.dev/kubeboot/image/lock"
)

type faultLab struct {
	t          *testing.T
	kubeboot   string
	bootstrapd string
	spec       string
	variants   int
}

func newFaultLab(t *testing.T) *faultLab {
	if os.Getenv("KUBEBOOT_FAULTS") == "" {
		t.Skip("slow (minutes of image builds): make faults runs it (KUBEBOOT_FAULTS=1)")
	}
	if os.Geteuid() != 0 {
		t.Skip("kubeboot image build and the mounts need root")
	}
	real, err := fetch.DefaultDir()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(real, "image", "rootfs")); err != nil {
		t.Skipf("no image step cache under %s (make image fills it): %v", real, err)
	}
	dir := t.TempDir()
	l := &faultLab{t: t, kubeboot: filepath.Join(dir, "kubeboot"), bootstrapd: filepath.Join(dir, "bootstrapd"), spec: examplePath("image.yaml")}
	for bin, pkg := range map[string]string{l.kubeboot: ".", l.bootstrapd: "../bootstrapd"} {
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	return l
}

// mount runs mount(8) and unmounts at the end of the test.
func mount(t *testing.T, target string, args ...string) {
	t.Helper()
	if out, err := exec.Command("mount", append(args, target)...).CombinedOutput(); err != nil {
		t.Fatalf("mount %v %s: %v\n%s", args, target, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", target).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v\n%s", target, err, out)
		}
	})
}

// tmpfs mounts a tmpfs of size on a new directory.
func tmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	mount(t, dir, "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs")
	return dir
}

// cache returns a cache directory that reads the real cache and writes to
// upper (which must be an empty directory; its file system takes the
// writes), and the directory of the writes.
func (l *faultLab) cache(upperFS string) (merged, upper string) {
	t := l.t
	t.Helper()
	real, _ := fetch.DefaultDir()
	upper, work, merged := filepath.Join(upperFS, "upper"), filepath.Join(upperFS, "work"), filepath.Join(t.TempDir(), "cache")
	for _, d := range []string{upper, work, merged} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	mount(t, merged, "-t", "overlay", "-o", "lowerdir="+real+",upperdir="+upper+",workdir="+work, "overlay")
	return merged, upper
}

// variant is a bootstrapd no cached root step has seen.
func (l *faultLab) variant() string {
	l.t.Helper()
	l.variants++
	data, err := os.ReadFile(l.bootstrapd)
	if err != nil {
		l.t.Fatal(err)
	}
	p := fmt.Sprintf("%s-%d-%d", l.bootstrapd, time.Now().UnixNano(), l.variants)
	if err := os.WriteFile(p, append(data, byte(l.variants)), 0o755); err != nil {
		l.t.Fatal(err)
	}
	return p
}

type buildRun struct {
	code   int
	stderr string
	steps  []string // in the order they started
}

// build runs kubeboot image build; with interruptAt set it sends SIGINT
// as soon as that step reports it started.
func (l *faultLab) build(cache, out, bootstrapd, interruptAt string) buildRun {
	t := l.t
	t.Helper()
	cmd := exec.Command(l.kubeboot, "image", "build", "--spec", l.spec, "-o", out, "--cache", cache, "--bootstrapd", bootstrapd)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var r buildRun
	var all bytes.Buffer
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			all.WriteString(line + "\n")
			if step, ok := strings.CutSuffix(line, ": started"); ok {
				r.steps = append(r.steps, step)
				if step == interruptAt {
					cmd.Process.Signal(syscall.SIGINT)
				}
			}
		}
	}()
	wg.Wait()
	err = cmd.Wait()
	r.stderr = all.String()
	if exit, ok := err.(*exec.ExitError); ok {
		r.code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return r
}

// leftovers lists the files under dir (nothing is expected there).
func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && p != dir {
			out = append(out, strings.TrimPrefix(p, dir+"/"))
		}
		return err
	})
	return out
}

// checkCache fails the test when the writes of a cache (upper; merged is
// the cache as builds see it) hold a temporary file or directory, or an
// image step entry without its .complete mark.
func checkCache(t *testing.T, merged, upper string) {
	t.Helper()
	filepath.WalkDir(upper, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.Contains(d.Name(), ".tmp") {
			t.Errorf("temporary file left in the cache: %s", p)
		}
		return nil
	})
	entries, _ := filepath.Glob(filepath.Join(upper, "image", "*", "*"))
	for _, e := range entries {
		if info, err := os.Lstat(e); err != nil || !info.IsDir() {
			continue // a whiteout: the build pruned an entry of the real cache from its view
		}
		rel, _ := filepath.Rel(upper, e)
		if _, err := os.Stat(filepath.Join(merged, rel, ".complete")); err != nil {
			t.Errorf("cache entry without .complete: %s", rel)
		}
	}
}

// failedCleanly checks a build that had to fail: exit 1, want in its
// error, no file in the output directory.
func failedCleanly(t *testing.T, r buildRun, outDir, want string) {
	t.Helper()
	last := r.stderr[max(strings.LastIndex(r.stderr, "kubeboot image build: "), 0):]
	if r.code != exitFail || !strings.HasPrefix(last, "kubeboot image build: ") || !strings.Contains(strings.ToLower(last), want) {
		t.Errorf("exit %d, want %d with %q in its error:\n%s", r.code, exitFail, want, tail(r.stderr, 3000))
	}
	if len(last) > 4096 {
		t.Errorf("an error of %d bytes:\n%s", len(last), tail(last, 3000))
	}
	t.Logf("the error: %s", tail(last, 1000))
	if left := leftovers(t, outDir); len(left) > 0 {
		t.Errorf("the failed build left %v in the output directory", left)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// TestBuildInterruptedAtEachStep sends SIGINT as each step starts, then
// builds from the same cache to the end.
func TestBuildInterruptedAtEachStep(t *testing.T) {
	l := newFaultLab(t)
	cache, upper := l.cache(t.TempDir())
	bootstrapd := l.variant()
	steps := []string{"resolve", "rootfs", "initrd", "store", "root", "state", "esp", "disk", "qcow2"}
	for _, step := range steps {
		t.Run(step, func(t *testing.T) {
			outDir := t.TempDir()
			r := l.build(cache, filepath.Join(outDir, "node.raw"), bootstrapd, step)
			t.Logf("steps started: %v", r.steps)
			failedCleanly(t, r, outDir, "kubeboot image build: interrupted")
			checkCache(t, cache, upper)
		})
	}
	outDir := t.TempDir()
	r := l.build(cache, filepath.Join(outDir, "node.raw"), bootstrapd, "")
	if r.code != 0 {
		t.Fatalf("the build after the interruptions: exit %d\n%s", r.code, tail(r.stderr, 3000))
	}
	for _, f := range []string{"node.raw", "node.qcow2", "node.packages.lock"} {
		if _, err := os.Stat(filepath.Join(outDir, f)); err != nil {
			t.Error(err)
		}
	}
	checkCache(t, cache, upper)
}

// TestBuildOutputFillsUp writes the image to a tmpfs too small for it.
func TestBuildOutputFillsUp(t *testing.T) {
	l := newFaultLab(t)
	cache, upper := l.cache(t.TempDir())
	outDir := tmpfs(t, "200m")
	r := l.build(cache, filepath.Join(outDir, "node.raw"), l.variant(), "")
	failedCleanly(t, r, outDir, "no space left on device")
	checkCache(t, cache, upper)
}

// TestBuildCacheFillsUp gives the cache's writes a tmpfs too small for the
// root step, then grows it: the same cache builds the image.
func TestBuildCacheFillsUp(t *testing.T) {
	l := newFaultLab(t)
	small := tmpfs(t, "300m")
	cache, upper := l.cache(small)
	outDir := t.TempDir()
	bootstrapd := l.variant()
	r := l.build(cache, filepath.Join(outDir, "node.raw"), bootstrapd, "")
	failedCleanly(t, r, outDir, "no space left on device")
	checkCache(t, cache, upper)
	if out, err := exec.Command("mount", "-o", "remount,size=4g", small).CombinedOutput(); err != nil {
		t.Fatalf("remount: %v\n%s", err, out)
	}
	r = l.build(cache, filepath.Join(outDir, "node.raw"), bootstrapd, "")
	if r.code != 0 {
		t.Fatalf("the build from the same cache, grown: exit %d\n%s", r.code, tail(r.stderr, 3000))
	}
	checkCache(t, cache, upper)
}

// TestBuildRefusesAnArtifactThatChanged corrupts one byte of the cached
// kubeadm (in the overlay's copy): its sha256 no longer matches the lock.
func TestBuildRefusesAnArtifactThatChanged(t *testing.T) {
	l := newFaultLab(t)
	cache, upper := l.cache(t.TempDir())
	lk, err := lock.Read(strings.TrimSuffix(l.spec, ".yaml") + ".lock")
	if err != nil {
		t.Fatal(err)
	}
	kubeadm, ok := lk.File("kubeadm")
	if !ok {
		t.Fatal("no kubeadm in the lock")
	}
	path := filepath.Join(cache, "sha256", kubeadm.SHA256)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	f.ReadAt(b, 4096)
	b[0] ^= 0xff
	_, err = f.WriteAt(b, 4096)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	outDir := t.TempDir()
	r := l.build(cache, filepath.Join(outDir, "node.raw"), l.variant(), "")
	failedCleanly(t, r, outDir, "sha256")
	checkCache(t, cache, upper)
}
