package artifacts

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"strings"

	"github.com/google/go-containerregistry/pkg/v1/remote"

	"kubeboot.dev/kubeboot/image/fetch"
	"kubeboot.dev/kubeboot/image/lock"
	"kubeboot.dev/kubeboot/image/progress"
	"kubeboot.dev/kubeboot/image/spec"
)

// KindArchive is a downloaded release archive that binaries are taken from.
const KindArchive = "archive"

// Remote says how to reach upstream servers; tests point it at loopback.
type Remote struct {
	HTTP     *http.Client
	Registry []remote.Option
	Progress progress.Reporter
}

func (r Remote) reporter() progress.Reporter {
	if r.Progress == nil {
		return progress.Discard
	}
	return r.Progress
}

func kindOf(name string) string {
	if strings.HasPrefix(name, "cni-") {
		return KindCNIPlugin
	}
	return KindBinary
}

// LockUpstream downloads every file of an upstream spec once to learn its
// sha256 (caching it on the way) and resolves every image tag to its
// linux/amd64 manifest digest. Nothing is trusted later that is not in the
// returned lock.
func LockUpstream(ctx context.Context, s *spec.ImageSpec, c *fetch.Cache, r Remote) (*lock.Lock, error) {
	if s.Source != spec.Upstream {
		return nil, fmt.Errorf("%s: source is %q, not %q", s.Path(), s.Source, spec.Upstream)
	}
	l := &lock.Lock{Spec: path.Base(s.Path()), KubernetesVersion: s.Kubernetes.Version}
	for _, f := range s.Upstream.Files {
		url := spec.Expand(f.URL, f.Version)
		sha, p, err := c.File(ctx, r.HTTP, url, "", r.reporter())
		if err != nil {
			return nil, fmt.Errorf("upstream file %s: %w", f.Name, err)
		}
		st, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if len(f.Extract) == 0 {
			l.SetFile(lock.File{Name: f.Name, Kind: kindOf(f.Name), Version: f.Version, Source: url, SHA256: sha, Size: st.Size()})
			continue
		}
		l.SetFile(lock.File{Name: f.Name, Kind: KindArchive, Version: f.Version, Source: url, SHA256: sha, Size: st.Size()})
		members, err := extract(c, p, url, f.Extract, nil)
		if err != nil {
			return nil, err
		}
		for member, name := range f.Extract {
			m := members[name]
			l.SetFile(lock.File{Name: name, Kind: kindOf(name), Version: f.Version, Source: url + "#" + member, SHA256: m.SHA256, Size: m.Size})
		}
	}
	for _, ref := range append(append([]string{}, s.Images.ControlPlane...), s.Images.Extras...) {
		digest, err := fetch.ResolveImage(ctx, ref, r.Registry...)
		if err != nil {
			return nil, err
		}
		l.SetImage(lock.Image{Ref: ref, Source: ref, Digest: digest})
	}
	return l, nil
}

// FetchUpstream brings every locked file and image of an upstream spec into
// the cache, verifying each against the lock.
func FetchUpstream(ctx context.Context, s *spec.ImageSpec, l *lock.Lock, c *fetch.Cache, r Remote) error {
	for _, f := range s.Upstream.Files {
		url := spec.Expand(f.URL, f.Version)
		top, ok := l.File(f.Name)
		if !ok {
			return fmt.Errorf("%s: %s is not locked: run `kubeboot artifacts lock --spec %s`", s.LockPath(), f.Name, s.Path())
		}
		need := !c.HasFile(top.SHA256)
		want := map[string]lock.File{}
		for _, name := range f.Extract {
			m, ok := l.File(name)
			if !ok {
				return fmt.Errorf("%s: %s (from %s) is not locked: run `kubeboot artifacts lock --spec %s`", s.LockPath(), name, f.Name, s.Path())
			}
			want[name] = m
			need = need || !c.HasFile(m.SHA256)
		}
		if !need {
			continue
		}
		_, p, err := c.File(ctx, r.HTTP, url, top.SHA256, r.reporter())
		if err != nil {
			return fmt.Errorf("upstream file %s: %w", f.Name, err)
		}
		if len(f.Extract) > 0 {
			if _, err := extract(c, p, url, f.Extract, want); err != nil {
				return err
			}
		}
	}
	for _, ref := range append(append([]string{}, s.Images.ControlPlane...), s.Images.Extras...) {
		im, ok := l.Image(ref)
		if !ok {
			return fmt.Errorf("%s: image %s is not locked: run `kubeboot artifacts lock --spec %s`", s.LockPath(), ref, s.Path())
		}
		task := r.reporter().Start("pull "+ref+"@"+im.Digest, -1)
		_, err := c.PullImage(ctx, ref, im.Digest, r.Registry...)
		task.Done(err)
		if err != nil {
			return err
		}
	}
	return nil
}

// extract copies the wanted members (path in archive -> artifact name) of
// a cached .tar.gz into the cache; with want set, each must match its
// locked sha256.
func extract(c *fetch.Cache, archive, url string, members map[string]string, want map[string]lock.File) (map[string]lock.File, error) {
	f, err := os.Open(archive)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("%s: not a .tar.gz: %w", url, err)
	}
	byPath := map[string]string{}
	for m, name := range members {
		byPath[path.Clean(m)] = name
	}
	got := map[string]lock.File{}
	tr := tar.NewReader(zr)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", url, err)
		}
		name, ok := byPath[path.Clean(hdr.Name)]
		if !ok || hdr.Typeflag != tar.TypeReg {
			continue
		}
		sha, _, err := c.PutReader(tr, url+"#"+hdr.Name, want[name].SHA256, 0o755)
		if err != nil {
			return nil, err
		}
		got[name] = lock.File{SHA256: sha, Size: hdr.Size}
	}
	for m, name := range members {
		if _, ok := got[name]; !ok {
			return nil, fmt.Errorf("%s: the archive has no member %s (for %s)", url, m, name)
		}
	}
	return got, nil
}
