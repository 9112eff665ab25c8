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
	"kubeboot.dev/kubeboot/internal/redact"
)

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
		// The lock records where a file came from, redacted: a URL's
		// userinfo or query may be a credential, and locks are committed.
		shown := redact.URL(url)
		sha, p, err := c.File(ctx, r.HTTP, url, "", r.reporter())
		if err != nil {
			return nil, fmt.Errorf("upstream file %s: %w", f.Name, err)
		}
		st, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if len(f.Extract) == 0 {
			l.SetFile(lock.File{Name: f.Name, Kind: kindOf(f.Name), Version: f.Version, Source: shown, SHA256: sha, Size: st.Size()})
			continue
		}
		l.SetFile(lock.File{Name: f.Name, Kind: KindArchive, Version: f.Version, Source: shown, SHA256: sha, Size: st.Size()})
		members, err := extract(c, p, shown, f.Extract, nil)
		if err != nil {
			return nil, err
		}
		for member, name := range f.Extract {
			m := members[name]
			l.SetFile(lock.File{Name: name, Kind: kindOf(name), Version: f.Version, Source: shown + "#" + member, SHA256: m.SHA256, Size: m.Size})
		}
	}
	for _, src := range imageSources(s) {
		task := r.reporter().Start("pin "+src.Ref, -1)
		im, err := LockImage(ctx, c, src, r.Registry...)
		task.Done(err)
		if err != nil {
			return nil, err
		}
		l.SetImage(im)
	}
	return l, nil
}

// imageSources are all images of a spec with where each comes from.
func imageSources(s *spec.ImageSpec) []spec.Extra {
	var out []spec.Extra
	for _, ref := range s.Images.ControlPlane {
		out = append(out, spec.Extra{Ref: ref})
	}
	for _, e := range s.Images.Extras {
		if e.From != "" {
			kind, p, _ := strings.Cut(e.From, ":")
			e.From = kind + ":" + s.Resolve(p)
		}
		out = append(out, e)
	}
	return out
}

// LockImage pins one image: a registry tag is resolved to its linux/amd64
// manifest digest, a local layout or archive is read; either way the image
// is stored in the cache and its lock entry returned.
func LockImage(ctx context.Context, c *fetch.Cache, src spec.Extra, reg ...remote.Option) (lock.Image, error) {
	var digest, p string
	var err error
	source := src.Ref
	if src.From != "" {
		source = src.From
		digest, p, err = c.LocalImage(ctx, src.Ref, src.From, "")
	} else {
		if digest, err = fetch.ResolveImage(ctx, src.Ref, reg...); err == nil {
			p, err = c.PullImage(ctx, src.Ref, digest, reg...)
		}
	}
	if err != nil {
		return lock.Image{}, err
	}
	sha, size, err := fetch.HashFile(p)
	if err != nil {
		return lock.Image{}, err
	}
	return lock.Image{Ref: src.Ref, Source: source, Digest: digest, ArchiveSHA256: sha, ArchiveSize: size}, nil
}

// FetchImage brings one locked image into the cache, verified.
func FetchImage(ctx context.Context, c *fetch.Cache, src spec.Extra, im lock.Image, reg ...remote.Option) error {
	if src.From != "" {
		_, _, err := c.LocalImage(ctx, src.Ref, src.From, im.Digest)
		return err
	}
	_, err := c.PullImage(ctx, src.Ref, im.Digest, reg...)
	return err
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
			if _, err := extract(c, p, redact.URL(url), f.Extract, want); err != nil {
				return err
			}
		}
	}
	return FetchImages(ctx, s, l, c, r)
}

// FetchImages brings every locked image of the spec into the cache.
func FetchImages(ctx context.Context, s *spec.ImageSpec, l *lock.Lock, c *fetch.Cache, r Remote) error {
	for _, src := range imageSources(s) {
		im, ok := l.Image(src.Ref)
		if !ok {
			return fmt.Errorf("%s: image %s is not locked: run `kubeboot artifacts lock --spec %s`", s.LockPath(), src.Ref, s.Path())
		}
		if _, err := os.Stat(c.ImagePath(im.Digest)); err == nil {
			continue
		}
		task := r.reporter().Start("fetch "+src.Ref+"@"+im.Digest, -1)
		err := FetchImage(ctx, c, src, im, r.Registry...)
		task.Done(err)
		if err != nil {
			return err
		}
	}
	return nil
}

// extract copies the wanted members (path in archive -> artifact name) of
// a cached .tar.gz into the cache; with want set, each must match its
// locked sha256. url, redacted, names the archive in errors.
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
