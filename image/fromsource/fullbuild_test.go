package fromsource

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"kubeboot.dev/kubeboot/image/artifacts"
	"kubeboot.dev/kubeboot/image/fetch"
	"kubeboot.dev/kubeboot/image/lock"
	"kubeboot.dev/kubeboot/image/progress"
	"kubeboot.dev/kubeboot/image/spec"
)

const specPath = "../../configs/image.yaml"

// testSpec is the spec the import test loads: KUBEBOOT_TEST_SPEC picks
// another built one (e.g. a v1.31 spec).
func testSpec() string {
	if p := os.Getenv("KUBEBOOT_TEST_SPEC"); p != "" {
		return p
	}
	return specPath
}

// The full build takes about half an hour cold on two cores, so it only
// runs when asked: KUBEBOOT_TEST_FROM_SOURCE=1 (make artifacts runs the
// same build through the CLI). It uses the real cache, so a warm run takes
// seconds.
func requireFromSource(t *testing.T) string {
	t.Helper()
	if os.Getenv("KUBEBOOT_TEST_FROM_SOURCE") != "1" {
		t.Skip("set KUBEBOOT_TEST_FROM_SOURCE=1 to run the from-source build (slow; make artifacts does the same)")
	}
	dir, err := fetch.DefaultDir()
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestFromSourceBuild(t *testing.T) {
	cacheDir := requireFromSource(t)
	s, err := spec.Load(specPath)
	if err != nil {
		t.Fatal(err)
	}
	c, err := fetch.Open(cacheDir)
	if err != nil {
		t.Fatal(err)
	}
	b := &Builder{Spec: s, Cache: c, Progress: &progress.Lines{W: testWriter{t}}, Log: slog.New(slog.NewTextHandler(testWriter{t}, nil))}
	l, err := b.Build(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	bin := func(name string) string {
		f, ok := l.File(name)
		if !ok {
			t.Fatalf("%s not in the lock", name)
		}
		return c.FilePath(f.SHA256)
	}
	for _, check := range []struct {
		name string
		args []string
		want string
	}{
		{"kubeadm", []string{"version", "-o", "short"}, "v1.37.2"},
		{"kubelet", []string{"--version"}, "Kubernetes v1.37.2"},
		{"kubectl", []string{"version", "--client"}, "v1.37.2"},
		{"kube-apiserver", []string{"--version"}, "Kubernetes v1.37.2"},
		{"kube-controller-manager", []string{"--version"}, "Kubernetes v1.37.2"},
		{"kube-scheduler", []string{"--version"}, "Kubernetes v1.37.2"},
		{"kube-proxy", []string{"--version"}, "Kubernetes v1.37.2"},
		{"etcd", []string{"--version"}, "etcd Version: 3.7.0"},
		{"etcdctl", []string{"version"}, "3.7.0"},
		{"coredns", []string{"-version"}, "CoreDNS-1.14.6"},
		{"crictl", []string{"--version"}, "v1.36.0"},
		{"containerd", []string{"--version"}, "v2.4.2"},
		{"ctr", []string{"--version"}, "v2.4.2"},
		{"runc", []string{"--version"}, "1.5.2"},
		{"pause", []string{"-v"}, "3.10.2"},
		{"flanneld", []string{"--version"}, "v0.28.10"},
	} {
		out, err := exec.Command(bin(check.name), check.args...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), check.want) {
			t.Errorf("%s %v: %v, output %q lacks %q", check.name, check.args, err, out, check.want)
		}
	}
	for _, p := range append(slices.Clone(s.Runtime.CNIPlugins.Plugins), "flannel") {
		cmd := exec.Command(bin("cni-" + p))
		cmd.Env = []string{"CNI_COMMAND=VERSION"}
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "supportedVersions") {
			t.Errorf("CNI plugin %s: %v %s", p, err, out)
		}
	}
	// The image set is what the built kubeadm asks for, one for one.
	refs, err := kubeadmImages(context.Background(), bin("kubeadm"), "v1.37.2")
	if err != nil {
		t.Fatal(err)
	}
	if want := len(refs) + len(s.PodNetworkImages()) + len(s.Images.Extras); want != len(l.Images) {
		t.Errorf("kubeadm lists %d images, the pod network and extras %d more; the lock has %d", len(refs), want-len(refs), len(l.Images))
	}
	for _, r := range refs {
		if _, ok := l.Image(r); !ok {
			t.Errorf("kubeadm needs %s, not in the lock", r)
		}
	}
	// Reproducibility: a committed lock from an earlier build must agree.
	if old, err := lock.Read(spec.LockPathFor(specPath)); err == nil && old.GoVersion == l.GoVersion {
		for _, im := range l.Images {
			if o, ok := old.Image(im.Ref); ok && o.Digest != im.Digest {
				t.Errorf("%s: digest %s differs from the committed lock's %s", im.Ref, im.Digest, o.Digest)
			}
		}
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// privateContainerd runs our own containerd v2 from the cache with its own
// root, state and socket in a temp dir (CRI and NRI off), and stops it and
// unmounts everything it left when the test ends.
func privateContainerd(t *testing.T, set *artifacts.Set) (ctr func(args ...string) (string, error)) {
	t.Helper()
	dir, err := os.MkdirTemp("", "kubeboot-ctrd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	binDir := filepath.Join(dir, "bin")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"containerd", "containerd-shim-runc-v2", "ctr", "runc"} {
		if err := os.Symlink(set.Binaries[n], filepath.Join(binDir, n)); err != nil {
			t.Fatal(err)
		}
	}
	sock := filepath.Join(dir, "containerd.sock")
	config := fmt.Sprintf(`version = 3
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime", "io.containerd.nri.v1.nri"]
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+".ttrpc", filepath.Join(dir, "opt"))
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "PATH="+binDir+":"+os.Getenv("PATH"))
	logf, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(binDir, "containerd"), "--config", cfgPath)
	cmd.Env, cmd.Stdout, cmd.Stderr = env, logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		logf.Close()
		unmountUnder(dir)
	})
	ctr = func(args ...string) (string, error) {
		c := exec.Command(filepath.Join(binDir, "ctr"), append([]string{"--address", sock, "--namespace", "k8s.io"}, args...)...)
		c.Env = env
		// stdout only: ctr warns on stderr (e.g. about cgroup v1 hosts).
		var stderr strings.Builder
		c.Stderr = &stderr
		out, err := c.Output()
		if err != nil {
			err = fmt.Errorf("%w: %s", err, stderr.String())
		}
		return string(out), err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := ctr("version"); err == nil {
			return ctr
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "containerd.log"))
			t.Fatalf("private containerd did not come up:\n%s", log)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// unmountUnder lazily unmounts every mount below dir, deepest first.
func unmountUnder(dir string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	defer f.Close()
	var mounts []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			mounts = append(mounts, fields[4])
		}
	}
	for i := len(mounts) - 1; i >= 0; i-- {
		syscall.Unmount(mounts[i], syscall.MNT_DETACH)
	}
}

// TestImagesImportIntoContainerd imports every image archive of the built
// set into a private containerd v2.4.2 (our own build) and runs each
// image's entrypoint with its version flag, plus kube-proxy's iptables.
func TestImagesImportIntoContainerd(t *testing.T) {
	cacheDir := requireFromSource(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root to run containerd and runc")
	}
	set, err := artifacts.LoadWithCache(testSpec(), cacheDir)
	if err != nil {
		t.Skipf("the from-source set is not built yet (run make artifacts): %v", err)
	}
	ctr := privateContainerd(t, set)
	for i, im := range set.Images {
		start := time.Now()
		if out, err := ctr("images", "import", im.Path); err != nil {
			t.Fatalf("ctr images import %s: %v\n%s", im.Path, err, out)
		}
		imported := time.Since(start)
		out, err := ctr("images", "ls", "-q", "name=="+im.Ref)
		if err != nil || strings.TrimSpace(out) != im.Ref {
			t.Fatalf("%s not listed after import: %v %q", im.Ref, err, out)
		}
		r, _ := RecipeFor(im.Ref)
		id := fmt.Sprintf("kubeboot-version-%d", i)
		args := append([]string{"run", "--rm", im.Ref, id}, append(r.Entrypoint, r.VersionArgs...)...)
		out, err = ctr(args...)
		if err != nil {
			t.Errorf("%s: %v: %v\n%s", im.Ref, append(r.Entrypoint, r.VersionArgs...), err, out)
			continue
		}
		t.Logf("%s (import %s): %s", im.Ref, imported.Round(time.Millisecond), strings.TrimSpace(out))
		if r.Userland {
			for j, cmd := range [][]string{{"iptables", "--version"}, {"ip6tables-save", "--version"}, {"nft", "--version"}, {"conntrack", "--version"}} {
				out, err := ctr(append([]string{"run", "--rm", im.Ref, fmt.Sprintf("%s-%d", id, j)}, cmd...)...)
				if err != nil {
					t.Errorf("%s: %v: %v\n%s", im.Ref, cmd, err, out)
				} else {
					t.Logf("  %v: %s", cmd, strings.TrimSpace(out))
				}
			}
		}
		// flannel's init container installs the CNI config with it.
		if _, ok := r.Binaries["/opt/bin/install-conf"]; ok {
			if out, err := ctr("run", "--rm", im.Ref, id+"-install", "/opt/bin/install-conf", "/opt/bin/flanneld", "/tmp/copy"); err != nil {
				t.Errorf("%s: install-conf: %v\n%s", im.Ref, err, out)
			}
		}
	}
}

// TestOlderMinorKubeadm builds only kubeadm of the v1.31 line (the
// reference procedure's) with the same recipe and checks its version and
// that the image tags derived from its image list are the 1.31 ones.
func TestOlderMinorKubeadm(t *testing.T) {
	cacheDir := requireFromSource(t)
	c, err := fetch.Open(cacheDir)
	if err != nil {
		t.Fatal(err)
	}
	b := &Builder{Cache: c, Progress: &progress.Lines{W: testWriter{t}}, epoch: time.Unix(0, 0).UTC(), goVersion: "test"}
	// v1.31.14 cannot be built here: the module mirror does not serve
	// k8s.io/kube-proxy@v0.31.14 (403), which kubeadm imports.
	const version = "v1.31.0"
	m, err := b.kubernetesModule(context.Background(), version)
	if err != nil {
		t.Fatal(err)
	}
	m.targets = m.targets[:1] // kubeadm
	files, err := b.buildModule(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	kubeadm := c.FilePath(files[0].SHA256)
	out, err := exec.Command(kubeadm, "version", "-o", "short").Output()
	if err != nil || strings.TrimSpace(string(out)) != version {
		t.Fatalf("kubeadm version: %q %v", out, err)
	}
	refs, err := kubeadmImages(context.Background(), kubeadm, version)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kubeadm %s images: %v", version, refs)
	if len(refs) != 7 {
		t.Fatalf("want 7 images, got %v", refs)
	}
	for _, n := range []string{"etcd", "coredns", "pause"} {
		if _, err := imageTag(refs, n); err != nil {
			t.Error(err)
		}
	}
}
