// Package fromsource builds the complete Kubernetes artifact set of an
// ImageSpec with no internet: the seven Kubernetes binaries, etcd, CoreDNS,
// crictl, containerd, runc, the CNI plugins and the pod network (flannel)
// through the Go module proxy, pause from kubeboot's own C source, and the
// OCI images assembled from them (the control plane's, flannel's, and
// extras marked built, such as the test image's Debian BusyBox). Each Go project gets its own generated module under
// <cache>/build/<project>-<version>; results go into the content-addressed
// cache and into the returned lock.
package fromsource

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"slices"
	"strings"
	"time"

	"kubeboot.dev/kubeboot/image/artifacts"
	"kubeboot.dev/kubeboot/image/fetch"
	"kubeboot.dev/kubeboot/image/lock"
	"kubeboot.dev/kubeboot/image/oci"
	"kubeboot.dev/kubeboot/image/progress"
	"kubeboot.dev/kubeboot/image/spec"
)

// Builder builds everything an ImageSpec with source: fromSource pins.
type Builder struct {
	Spec     *spec.ImageSpec
	Cache    *fetch.Cache
	Progress progress.Reporter
	Log      *slog.Logger
	// BuildLog receives the full output of every command (optional).
	BuildLog io.Writer

	goVersion string
	epoch     time.Time
}

// Build runs the whole build and returns the new lock. Unchanged projects
// are skipped (their stamp and cached outputs are reused).
func (b *Builder) Build(ctx context.Context) (*lock.Lock, error) {
	if b.Progress == nil {
		b.Progress = progress.Discard
	}
	if b.Log == nil {
		b.Log = slog.New(slog.DiscardHandler)
	}
	if b.Spec.Source != spec.FromSource {
		return nil, fmt.Errorf("%s: source is %q; build --from-source needs source: %s", b.Spec.Path(), b.Spec.Source, spec.FromSource)
	}
	out, err := exec.CommandContext(ctx, "go", "env", "GOVERSION").Output()
	if err != nil {
		return nil, fmt.Errorf("go env GOVERSION: %w (is Go on the PATH?)", err)
	}
	b.goVersion = strings.TrimSpace(string(out))
	b.epoch = oci.Epoch()
	s := b.Spec
	l := &lock.Lock{Spec: "image.yaml", KubernetesVersion: s.Kubernetes.Version, GoVersion: b.goVersion}
	if p := s.Path(); p != "" {
		l.Spec = p[strings.LastIndex(p, "/")+1:]
	}
	addFiles := func(files []lock.File, err error) error {
		if err != nil {
			return err
		}
		for _, f := range files {
			l.SetFile(f)
		}
		return nil
	}

	k8s, err := b.kubernetesModule(ctx, s.Kubernetes.Version)
	if err != nil {
		return nil, err
	}
	if err := addFiles(b.buildModule(ctx, k8s)); err != nil {
		return nil, err
	}
	kubeadm, _ := l.File("kubeadm")
	refs, err := kubeadmImages(ctx, b.Cache.FilePath(kubeadm.SHA256), s.Kubernetes.Version)
	if err != nil {
		return nil, err
	}
	if err := compareImageSets(s.Path(), s.Images.ControlPlane, refs); err != nil {
		return nil, err
	}
	b.Log.Info("kubeadm image list matches the spec", "images", strings.Join(refs, " "))

	etcdTag, err := imageTag(refs, "etcd")
	if err != nil {
		return nil, err
	}
	corednsTag, err := imageTag(refs, "coredns")
	if err != nil {
		return nil, err
	}
	pauseTag, err := imageTag(refs, "pause")
	if err != nil {
		return nil, err
	}
	// etcd images are tagged <version>-<image revision>.
	etcdVersion, _, _ := strings.Cut(etcdTag, "-")
	cni, err := cniModule(s.Runtime.CNIPlugins.Version, s.Runtime.CNIPlugins.Plugins)
	if err != nil {
		return nil, err
	}
	for _, m := range []*goModule{
		etcdModule("v" + etcdVersion),
		corednsModule(corednsTag),
		crictlModule(s.Runtime.Crictl),
		containerdModule(s.Runtime.Containerd),
		runcModule(s.Runtime.Runc),
		cni,
	} {
		if err := addFiles(b.buildModule(ctx, m)); err != nil {
			return nil, err
		}
	}
	pause, err := b.buildPause(ctx, pauseTag)
	if err != nil {
		return nil, err
	}
	l.SetFile(pause)
	if pn := s.PodNetwork; pn != nil {
		for _, m := range []*goModule{flannelModule(pn.Flannel), flannelCNIModule(pn.FlannelCNIPlugin)} {
			if err := addFiles(b.buildModule(ctx, m)); err != nil {
				return nil, err
			}
		}
	}

	// Images assembled here: kubeadm's set, the pod network's, and the
	// extras marked built; each recipe's Debian files are made first.
	built := append(slices.Clone(refs), s.PodNetworkImages()...)
	for _, e := range s.Images.Extras {
		if e.From == spec.FromBuilt {
			built = append(built, e.Ref)
		}
	}
	rootfs := map[string]bool{}
	for _, ref := range built {
		r, ok := RecipeFor(ref)
		for name, need := range map[string]bool{userlandRootfs: r.Userland, busyboxRootfs: r.Busybox} {
			if !ok || !need || rootfs[name] {
				continue
			}
			f, err := b.debianRootfs(ctx, s.Base.Suite, s.Base.Mirror, name)
			if err != nil {
				return nil, err
			}
			l.SetFile(f)
			rootfs[name] = true
		}
		im, err := b.assemble(l, ref)
		if err != nil {
			return nil, err
		}
		l.SetImage(im)
	}
	// Other extras come from a registry or a local OCI layout: they are
	// pinned as found now.
	for _, e := range s.Images.Extras {
		if e.From == spec.FromBuilt {
			continue
		}
		if e.From != "" {
			kind, p, _ := strings.Cut(e.From, ":")
			e.From = kind + ":" + s.Resolve(p)
		}
		task := b.Progress.Start("pin "+e.Ref, -1)
		im, err := artifacts.LockImage(ctx, b.Cache, e)
		task.Done(err)
		if err != nil {
			return nil, fmt.Errorf("images.extras %s: %w", e.Ref, err)
		}
		l.SetImage(im)
	}
	return l, nil
}
