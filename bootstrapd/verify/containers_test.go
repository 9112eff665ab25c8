package verify

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/opencontainers/go-digest"
	"github.com/vishvananda/netns"
	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"kubeboot.dev/kubeboot/bootstrapd/cri"
	"kubeboot.dev/kubeboot/bootstrapd/images"
	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/image/privatecontainerd"
	"kubeboot.dev/kubeboot/internal/cachetest"
	"kubeboot.dev/kubeboot/internal/containerdtest"
	"kubeboot.dev/kubeboot/internal/netnstest"
	"kubeboot.dev/kubeboot/machineconfig"
	"kubeboot.dev/kubeboot/nodepath"
)

// The pinned images the runtime test runs: the sandbox image, and the
// extra BusyBox image for the containers' commands.
const (
	pauseRef   = "registry.k8s.io/pause:3.10.2"
	busyboxRef = "kubeboot.dev/test/busybox:1.37.0"
)

// criNode is our containerd from the artifact cache with the CRI plugin
// on, in a network namespace of the test's own, its socket where a node
// has it under root, and a CRI client as the kubelet's.
type criNode struct {
	t       *testing.T
	root    string
	netns   netns.NsHandle
	daemon  *privatecontainerd.Daemon
	client  *client.Client
	conn    *grpc.ClientConn
	rt      runtimeapi.RuntimeServiceClient
	img     runtimeapi.ImageServiceClient
	entries []images.Entry // the node image's index
	stopped bool
}

func newCRINode(t *testing.T) *criNode {
	t.Helper()
	needRoot(t)
	bins := containerdtest.Binaries(t, "containerd", "containerd-shim-runc-v2", "runc")
	n := &criNode{t: t, root: t.TempDir(), netns: netnstest.New(t, fmt.Sprintf("kbvc%d-%d", os.Getpid()%100000, seq.Add(1)))}
	env := &stage.Env{NetNS: n.netns}
	// The node's CRI settings that matter here: the pinned sandbox image,
	// no CNI configuration (the pods are on the host network). And one the
	// node does not need: oom_score_adj is not lowered below ours, as this
	// machine's sandbox lacks CAP_SYS_RESOURCE.
	config := fmt.Sprintf(`
[plugins."io.containerd.cri.v1.images"]
  snapshotter = %q
[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = %q
[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
[plugins."io.containerd.cri.v1.runtime".cni]
  conf_dir = %q
`, images.Snapshotter, pauseRef, t.TempDir())
	err := env.InNetNS(func() (err error) {
		n.daemon, err = privatecontainerd.Start(context.Background(), privatecontainerd.Options{
			Binaries: bins, Root: filepath.Join(t.TempDir(), "containerd"), CRI: true, Config: config})
		return err
	})
	if n.daemon != nil {
		t.Cleanup(func() {
			if err := n.daemon.Stop(); err != nil {
				t.Error(err)
			}
		})
	}
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(n.root, nodepath.ContainerdSocket)
	if err := os.MkdirAll(filepath.Dir(sock), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(n.daemon.Socket, sock); err != nil {
		t.Fatal(err)
	}
	if n.client, err = images.Connect(context.Background(), sock); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.client.Close() })
	conn, err := cri.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	n.conn, n.rt, n.img = conn, runtimeapi.NewRuntimeServiceClient(conn), runtimeapi.NewImageServiceClient(conn)
	// Before containerd stops (cleanups run last first): the shims and
	// their containers outlive containerd, so every pod is stopped and
	// removed through the CRI, which ends them and removes their cgroups.
	t.Cleanup(n.stop)
	return n
}

// stop removes every pod sandbox with its containers, then stops
// containerd. Safe to call again.
func (n *criNode) stop() {
	if n.stopped {
		return
	}
	n.stopped = true
	n.removePods()
	if err := n.daemon.Stop(); err != nil {
		n.t.Error(err)
	}
}

func (n *criNode) removePods() {
	ctx, cancel := n.ctx()
	defer cancel()
	if _, err := cri.RemovePods(ctx, n.conn, time.Minute); err != nil {
		n.t.Errorf("remove the pods: %v", err)
	}
}

// importLocked imports a pinned image of configs/image.lock from the
// artifact cache as the images stage does, and lists it in the index.
func (n *criNode) importLocked(ref string) {
	n.t.Helper()
	d, archive := cachetest.Image(n.t, ref)
	e := images.Entry{Ref: ref, Digest: d, File: images.FileName(ref)}
	if err := images.Import(context.Background(), n.client, e, archive); err != nil {
		n.t.Fatal(err)
	}
	n.entries = append(n.entries, e)
	n.writeIndex()
}

func (n *criNode) writeIndex() {
	n.t.Helper()
	p := filepath.Join(n.root, nodepath.ImagesIndex)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		n.t.Fatal(err)
	}
	if err := os.WriteFile(p, images.FormatIndex(n.entries), 0o644); err != nil {
		n.t.Fatal(err)
	}
}

func (n *criNode) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), time.Minute)
}

// runPod starts a pod sandbox on the host network, as the kubelet does for
// kube-proxy, and returns its ID and config.
func (n *criNode) runPod(namespace, name string) (string, *runtimeapi.PodSandboxConfig) {
	n.t.Helper()
	cfg := &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: name, Namespace: namespace, Uid: fmt.Sprintf("uid-%s-%s", namespace, name)},
		Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE}}},
	}
	ctx, cancel := n.ctx()
	defer cancel()
	r, err := n.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		n.t.Fatalf("run pod %s/%s: %v\ncontainerd:\n%s", namespace, name, err, n.daemon.LogTail())
	}
	return r.GetPodSandboxId(), cfg
}

// runContainer creates and starts attempt of container name in the pod
// from the image's ID (as the kubelet does), running script with sh.
// With wait it returns once the container has exited.
func (n *criNode) runContainer(pod string, podCfg *runtimeapi.PodSandboxConfig, name string, attempt uint32, ref, script string, wait bool) string {
	n.t.Helper()
	ctx, cancel := n.ctx()
	defer cancel()
	st, err := n.img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	if err != nil || st.GetImage() == nil {
		n.t.Fatalf("image %s: %v", ref, err)
	}
	c, err := n.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, SandboxConfig: podCfg,
		Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: name, Attempt: attempt},
			Image:    &runtimeapi.ImageSpec{Image: st.GetImage().GetId(), UserSpecifiedImage: ref},
			Command:  []string{"/bin/sh", "-c", script},
			Linux: &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE}}},
		}})
	if err != nil {
		n.t.Fatalf("create container %s: %v\ncontainerd:\n%s", name, err, n.daemon.LogTail())
	}
	id := c.GetContainerId()
	if _, err := n.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
		n.t.Fatalf("start container %s: %v\ncontainerd:\n%s", name, err, n.daemon.LogTail())
	}
	for wait {
		st, err := n.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
		if err != nil {
			n.t.Fatal(err)
		}
		if st.GetStatus().GetState() == runtimeapi.ContainerState_CONTAINER_EXITED {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	return id
}

// verifier reads the runtime as bootstrapd verify does; the runtime's
// image list follows containerd's events, so it waits (bounded) until
// ready says the facts are current.
func (n *criNode) verifier(t *testing.T, ready func(*criFacts) bool) *node {
	t.Helper()
	res, _ := exampleConfig(t, "controller.yaml", nil)
	v := prepare(Options{Root: n.root, Config: res.Config, Source: res.Source, NetNS: n.netns,
		RuntimeRoot: fmt.Sprintf("/proc/%d/root", n.daemon.Pid())})
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Second)
	for {
		v.cri, v.criErr = readCRI(ctx, v.env.Path(v.o.CRISocket), v.o.Timeout)
		if v.criErr != nil {
			t.Fatal(v.criErr)
		}
		if ready(v.cri) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	return v
}

func imageCount(want int) func(*criFacts) bool {
	return func(f *criFacts) bool { return len(f.images) == want }
}

// TestContainersAndImagesAsTheReference runs pods through the CRI of our
// containerd as the kubelet would: a kube-system pod with a finished init
// container and a running one, a pod of another namespace whose container
// failed, and a stopped kube-system sandbox; the images are the pinned
// ones imported as the images stage does. The section holds. Then a
// kube-system container crash-loops, an image of the index is imported
// without the pinned label (as `ctr images import` does) and one the index
// does not list is imported: each is a failed check saying so.
func TestContainersAndImagesAsTheReference(t *testing.T) {
	n := newCRINode(t)
	n.importLocked(pauseRef)
	n.importLocked(busyboxRef)

	proxy, proxyCfg := n.runPod("kube-system", "kube-proxy-7zqsq")
	n.runContainer(proxy, proxyCfg, "init", 0, busyboxRef, "true", true)
	n.runContainer(proxy, proxyCfg, "kube-proxy", 0, busyboxRef, "exec sleep 3600", false)
	app, appCfg := n.runPod("default", "app")
	n.runContainer(app, appCfg, "main", 0, busyboxRef, "exit 1", true)
	old, oldCfg := n.runPod("kube-system", "kube-proxy-old")
	n.runContainer(old, oldCfg, "kube-proxy", 0, busyboxRef, "exit 2", true)
	ctx, cancel := n.ctx()
	defer cancel()
	if _, err := n.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: old}); err != nil {
		t.Fatal(err)
	}

	v := n.verifier(t, imageCount(2))
	s := v.containers(context.Background())
	// The pods on the host network are in the node's namespace, their
	// containers in their pods'.
	ns := v.namespaces(context.Background())
	logReport(t, ns, s)
	allHold(t, ns, s)
	checkNamed(t, ns, "pod kube-system/kube-proxy-7zqsq (hostNetwork) is in the node's network namespace")
	checkNamed(t, ns, "container kube-proxy (pod kube-system/kube-proxy-7zqsq) is in its pod's network namespace")
	for name, found := range map[string]string{
		"container kube-proxy of pod kube-system/kube-proxy-7zqsq": "Running, restarts 0",
		"container init of pod kube-system/kube-proxy-7zqsq":       "Exited 0",
		"image " + pauseRef:              n.entries[0].DigestRef() + ", pinned",
		"image " + busyboxRef:            n.entries[1].DigestRef() + ", pinned",
		"no image beyond the pinned set": "2 images",
	} {
		if c := checkNamed(t, s, name); c.Found != found {
			t.Errorf("%s: found %q, want %q", name, c.Found, found)
		}
	}
	for _, c := range s.Checks {
		if strings.Contains(c.Name, "pod default/") || strings.Contains(c.Name, "kube-proxy-old") {
			t.Errorf("judged a container outside the running system pods: %+v", c)
		}
	}
	found := strings.Join(s.Found, "\n")
	for _, want := range []string{
		"pod default/app  container main  image " + busyboxRef + "  Exited 1  restarts 0  id ",
		"pod kube-system/kube-proxy-7zqsq  container kube-proxy  image " + busyboxRef + "  Running  restarts 0  id ",
		"pod kube-system/kube-proxy-7zqsq  container init  image " + busyboxRef + "  Exited 0  restarts 0  id ",
		"  (sandbox not ready)",
		"image " + pauseRef + "  " + n.entries[0].DigestRef() + "  id ",
	} {
		if !strings.Contains(found, want) {
			t.Errorf("listing lacks %q:\n%s", want, found)
		}
	}

	// A crash-looping kube-system container: its second attempt failed too.
	etcd, etcdCfg := n.runPod("kube-system", "etcd-controller.home.local")
	n.runContainer(etcd, etcdCfg, "etcd", 0, busyboxRef, "exit 3", true)
	n.runContainer(etcd, etcdCfg, "etcd", 1, busyboxRef, "exit 3", true)
	// An image of the index imported without the pinned label, and one
	// the index does not list (pinned, but not the node image's).
	dir := t.TempDir()
	coredns, archive := containerdtest.Archive(t, dir, "registry.k8s.io/coredns/coredns:v1.14.6", map[string]string{"/coredns": "x"})
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := n.client.Import(namespaces.WithNamespace(ctx, images.Namespace), f,
		client.WithDigestRef(func(d digest.Digest) string { return coredns.Repository() + "@" + d.String() })); err != nil {
		t.Fatal(err)
	}
	n.entries = append(n.entries, coredns)
	n.writeIndex()
	extra, archive := containerdtest.Archive(t, dir, "ghcr.io/example/extra:1.0", map[string]string{"/extra": "x"})
	if err := images.Import(ctx, n.client, extra, archive); err != nil {
		t.Fatal(err)
	}

	s = n.verifier(t, imageCount(4)).containers(context.Background())
	logReport(t, s)
	for name, want := range map[string]Check{
		"container etcd of pod kube-system/etcd-controller.home.local": {Expected: "Running (or Exited 0: an init container that finished)", Found: "Exited 3 after 1 restart: crash-looping"},
		"image registry.k8s.io/coredns/coredns:v1.14.6":                {Expected: coredns.DigestRef() + ", pinned", Found: coredns.DigestRef() + ", not pinned: the kubelet's image garbage collector may remove it"},
		"image ghcr.io/example/extra:1.0":                              {Expected: "only the images of " + nodepath.ImagesIndex, Found: "not in the pinned set: pulled or imported on the node"},
	} {
		c := checkNamed(t, s, name)
		if c.OK || c.Name != name || c.Expected != want.Expected || c.Found != want.Found {
			t.Errorf("%s: %+v, want failed, expected %q, found %q", name, c, want.Expected, want.Found)
		}
	}
	failed := 0
	for _, c := range s.Checks {
		if !c.OK {
			failed++
		}
	}
	if failed != 3 {
		t.Errorf("%d failed checks, want 3:\n%s", failed, describeChecks(s))
	}
	if strings.Contains(describeChecks(s), "no image beyond the pinned set") {
		t.Errorf("the pinned set holds with an extra image:\n%s", describeChecks(s))
	}

	// With a mirror configured for its registry, the extra image is a
	// workload's image pulled through it: expected, not a failure.
	v = n.verifier(t, imageCount(4))
	v.o.Config.Containerd.Mirrors = []machineconfig.RegistryMirror{{Registry: "ghcr.io"}}
	s = v.containers(context.Background())
	if c := checkNamed(t, s, "image ghcr.io/example/extra:1.0"); !c.OK || c.Found != "pulled through the mirror of ghcr.io (containerd.mirrors)" {
		t.Errorf("an image of a mirrored registry: %+v", c)
	}

	// Without a runtime, the section says so and nothing else.
	n.stop()
	v = prepare(Options{Root: n.root, Timeout: 2 * time.Second})
	v.cri, v.criErr = readCRI(context.Background(), v.env.Path(v.o.CRISocket), v.o.Timeout)
	s = v.containers(context.Background())
	if len(s.Checks) != 1 || s.Checks[0].OK || s.Checks[0].Name != "the runtime answers on the CRI" {
		t.Errorf("without containerd: %s", describeChecks(s))
	}
}
