package images_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/client"
	ctrimages "github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"kubeboot.dev/kubeboot/bootstrapd/images"
	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/image/privatecontainerd"
	"kubeboot.dev/kubeboot/internal/containerdtest"
	"kubeboot.dev/kubeboot/nodepath"
)

// node is a node root with a baked index and archives, and a real
// containerd whose socket sits where the stage looks for it.
type node struct {
	root    string
	entries []images.Entry
	daemon  *privatecontainerd.Daemon
	client  *client.Client
	env     *stage.Env
}

var testImages = []struct {
	ref   string
	files map[string]string
}{
	{"registry.k8s.io/pause:3.10.2", map[string]string{"/pause": "pause"}},
	{"registry.k8s.io/etcd:3.7.0-0", map[string]string{"/usr/local/bin/etcd": "etcd", "/etc/etcd.conf": "x"}},
	{"registry.k8s.io/coredns/coredns:v1.14.6", map[string]string{"/coredns": "coredns"}},
}

// bakedRoot is a node root whose image directory holds what add puts
// there (given the directory) and the index of the entries it returns.
func bakedRoot(t testing.TB, add func(dir string) []images.Entry) (string, []images.Entry) {
	t.Helper()
	root := t.TempDir()
	dir := filepath.Join(root, nodepath.ImagesDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	entries := add(dir)
	if err := os.WriteFile(filepath.Join(root, nodepath.ImagesIndex), images.FormatIndex(entries), 0o644); err != nil {
		t.Fatal(err)
	}
	return root, entries
}

// newNode is a node with the archives of testImages.
func newNode(t testing.TB) *node {
	t.Helper()
	return newNodeWith(t, func(dir string) (es []images.Entry) {
		for _, im := range testImages {
			e, _ := containerdtest.Archive(t, dir, im.ref, im.files)
			es = append(es, e)
		}
		return es
	})
}

// newNodeWith is a node whose image directory add fills (see bakedRoot).
func newNodeWith(t testing.TB, add func(dir string) []images.Entry) *node {
	t.Helper()
	n := &node{}
	n.root, n.entries = bakedRoot(t, add)
	n.daemon = containerdtest.Start(t, privatecontainerd.Options{Root: filepath.Join(t.TempDir(), "containerd")})
	sock := filepath.Join(n.root, nodepath.ContainerdSocket)
	if err := os.MkdirAll(filepath.Dir(sock), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(n.daemon.Socket, sock); err != nil {
		t.Fatal(err)
	}
	c, err := images.Connect(context.Background(), sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	n.client = c
	n.env = &stage.Env{Root: n.root, Log: slog.New(slog.DiscardHandler)}
	return n
}

func (n *node) verify(t *testing.T) []images.Status {
	t.Helper()
	sts, err := images.Verify(context.Background(), n.client, n.entries)
	if err != nil {
		t.Fatal(err)
	}
	return sts
}

func (n *node) requireAllOK(t *testing.T) {
	t.Helper()
	for _, st := range n.verify(t) {
		if !st.OK() {
			t.Errorf("%s: %s (%+v)", st.Ref, st.Missing(), st)
		}
	}
}

// names lists the image records in k8s.io.
func (n *node) names(t *testing.T) []string {
	t.Helper()
	imgs, err := n.client.ImageService().List(ctx())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, im := range imgs {
		out = append(out, im.Name)
	}
	return out
}

func ctx() context.Context { return namespaces.WithNamespace(context.Background(), images.Namespace) }

func TestStageImportsThenChangesNothing(t *testing.T) {
	n := newNode(t)
	s := images.New()
	if err := s.(stage.Validator).Validate(context.Background(), n.env); err != nil {
		t.Fatal(err)
	}
	plan, err := s.Plan(context.Background(), n.env)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan) != len(n.entries) || !strings.Contains(string(plan[0]), "import registry.k8s.io/pause:3.10.2 (sha256:") || !strings.HasSuffix(string(plan[0]), ": missing") {
		t.Fatalf("plan on an empty store: %q", plan)
	}
	if len(n.names(t)) != 0 {
		t.Fatal("Plan imported something")
	}
	changes, err := s.Apply(context.Background(), n.env)
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != len(n.entries) {
		t.Fatalf("apply: %q", changes)
	}
	n.requireAllOK(t)
	// Three records per image, as CRI keeps a pulled one: tag, digest, ID.
	if got := n.names(t); len(got) != 3*len(n.entries) {
		t.Errorf("image records: %q", got)
	}
	// Layer blobs are discarded once unpacked; manifests and configs stay.
	for _, e := range n.entries {
		img, err := n.client.GetImage(ctx(), e.Ref)
		if err != nil {
			t.Fatal(err)
		}
		m, err := ctrimages.Manifest(ctx(), n.client.ContentStore(), img.Target(), nil)
		if err != nil {
			t.Fatalf("%s: manifest: %v", e.Ref, err)
		}
		if _, err := n.client.ContentStore().Info(ctx(), m.Config.Digest); err != nil {
			t.Errorf("%s: config blob: %v", e.Ref, err)
		}
		for _, l := range m.Layers {
			if _, err := n.client.ContentStore().Info(ctx(), l.Digest); err == nil {
				t.Errorf("%s: layer %s kept after unpacking", e.Ref, l.Digest)
			}
		}
	}

	// Present and pinned: no change, from Plan or Apply.
	if plan, err := s.Plan(context.Background(), n.env); err != nil || len(plan) != 0 {
		t.Fatalf("plan after apply: %q %v", plan, err)
	}
	if changes, err := s.Apply(context.Background(), n.env); err != nil || len(changes) != 0 {
		t.Fatalf("second apply: %q %v", changes, err)
	}
	// What bootstrapd verify reports.
	sts, err := images.VerifyNode(context.Background(), n.root)
	if err != nil || len(sts) != len(n.entries) || !sts[1].OK() || sts[1].Ref != "registry.k8s.io/etcd:3.7.0-0" {
		t.Fatalf("VerifyNode: %+v %v", sts, err)
	}
}

func TestStageReimportsADeletedImage(t *testing.T) {
	n := newNode(t)
	s := images.New()
	if _, err := s.Apply(context.Background(), n.env); err != nil {
		t.Fatal(err)
	}
	gone := n.entries[1]
	for _, name := range []string{gone.Ref, gone.DigestRef()} {
		if err := n.client.ImageService().Delete(ctx(), name, ctrimages.SynchronousDelete()); err != nil {
			t.Fatal(err)
		}
	}
	plan, err := s.Plan(context.Background(), n.env)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan) != 1 || !strings.HasPrefix(string(plan[0]), "import "+gone.Ref+" ("+gone.Digest+") from /usr/share/kubeboot/images/etcd_3.7.0-0.tar: missing") {
		t.Fatalf("plan: %q", plan)
	}
	if _, err := s.Apply(context.Background(), n.env); err != nil {
		t.Fatal(err)
	}
	n.requireAllOK(t)
	img, err := n.client.GetImage(ctx(), gone.Ref)
	if err != nil {
		t.Fatal(err)
	}
	if img.Target().Digest.String() != gone.Digest || img.Labels()[images.LabelPinned] != "pinned" {
		t.Errorf("re-imported %s: %s %v", gone.Ref, img.Target().Digest, img.Labels())
	}

	// A removed label alone is put back.
	other := n.entries[0]
	if _, err := n.client.ImageService().Update(ctx(), ctrimages.Image{Name: other.Ref, Labels: map[string]string{}}, "labels"); err != nil {
		t.Fatal(err)
	}
	if plan, err := s.Plan(context.Background(), n.env); err != nil || len(plan) != 1 || !strings.HasSuffix(string(plan[0]), ": not pinned") {
		t.Fatalf("plan after unpinning: %q %v", plan, err)
	}
	if _, err := s.Apply(context.Background(), n.env); err != nil {
		t.Fatal(err)
	}
	n.requireAllOK(t)
}

func TestStageRefusesAnotherDigest(t *testing.T) {
	t.Run("in containerd", func(t *testing.T) {
		n := newNode(t)
		// registry.k8s.io/pause:3.10.2 made of other content, imported
		// under the pinned name before the stage runs.
		dir := t.TempDir()
		e, p := containerdtest.Archive(t, dir, n.entries[0].Ref, map[string]string{"/pause": "not the pinned pause"})
		if err := images.Import(context.Background(), n.client, e, p); err != nil {
			t.Fatal(err)
		}
		before := n.names(t)
		_, err := images.New().Apply(context.Background(), n.env)
		var mm *images.MismatchError
		if !errors.As(err, &mm) || stage.IsTemporary(err) {
			t.Fatalf("want a permanent MismatchError, got %v", err)
		}
		for _, want := range []string{n.entries[0].Ref, "is " + e.Digest, "pins " + n.entries[0].Digest, "ctr -n k8s.io images rm"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q lacks %q", err, want)
			}
		}
		if after := n.names(t); len(after) != len(before) {
			t.Errorf("the stage imported despite the mismatch: %q -> %q", before, after)
		}
		if _, err := images.New().Plan(context.Background(), n.env); !errors.As(err, &mm) {
			t.Errorf("plan: %v", err)
		}
	})
	t.Run("in the archive", func(t *testing.T) {
		n := newNode(t)
		// The baked archive of etcd replaced by another build of it.
		_, p := containerdtest.Archive(t, t.TempDir(), n.entries[1].Ref, map[string]string{"/usr/local/bin/etcd": "tampered"})
		if err := os.Rename(p, images.ArchivePath(n.root, n.entries[1])); err != nil {
			t.Fatal(err)
		}
		_, err := images.New().Apply(context.Background(), n.env)
		var mm *images.MismatchError
		if !errors.As(err, &mm) || stage.IsTemporary(err) || mm.Ref != n.entries[1].Ref || mm.Want != n.entries[1].Digest {
			t.Fatalf("want a permanent MismatchError for %s, got %v", n.entries[1].Ref, err)
		}
		if !strings.Contains(err.Error(), "etcd_3.7.0-0.tar") {
			t.Errorf("error does not name the archive: %v", err)
		}
		if names := n.names(t); len(names) != 0 {
			t.Errorf("images imported despite the bad archive: %q", names)
		}
	})
}

func TestStageWaitsForContainerd(t *testing.T) {
	root, _ := bakedRoot(t, func(dir string) []images.Entry {
		e, _ := containerdtest.Archive(t, dir, "registry.k8s.io/pause:3.10.2", map[string]string{"/pause": "p"})
		return []images.Entry{e}
	})
	env := &stage.Env{Root: root, Log: slog.New(slog.DiscardHandler)}
	_, err := images.New().Apply(context.Background(), env)
	if err == nil || !stage.IsTemporary(err) {
		t.Fatalf("no containerd: want a temporary error, got %v", err)
	}
	// A socket nobody listens on is the same.
	if err := os.MkdirAll(filepath.Dir(filepath.Join(root, nodepath.ContainerdSocket)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, nodepath.ContainerdSocket), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := images.New().Plan(context.Background(), env); err == nil || !stage.IsTemporary(err) {
		t.Fatalf("dead socket: want a temporary error, got %v", err)
	}
}

func TestValidateNamesTheMissingArchive(t *testing.T) {
	// The index names an archive the image directory lacks.
	root, _ := bakedRoot(t, func(string) []images.Entry {
		return []images.Entry{{Ref: "registry.k8s.io/pause:3.10.2", Digest: "sha256:" + strings.Repeat("a", 64), File: "pause_3.10.2.tar"}}
	})
	err := images.New().(stage.Validator).Validate(context.Background(), &stage.Env{Root: root})
	if err == nil || !strings.Contains(err.Error(), "registry.k8s.io/pause:3.10.2: archive /usr/share/kubeboot/images/pause_3.10.2.tar is missing") {
		t.Fatalf("validate: %v", err)
	}
	if in := (images.Stage{}).Inputs(nil); in != nil {
		t.Errorf("Inputs = %v, want nil: the stage reads no config", in)
	}
}
