// Package registries is the stage that writes the machine config's
// registry mirrors (containerd.mirrors) as containerd hosts.toml files, the
// format of containerd's docs/hosts.md: one
// /etc/containerd/certs.d/<registry>/hosts.toml per registry, listing its
// mirrors in order as [host."<url>"] tables with their capabilities and,
// for a mirror with its own CA, the CA file beside it. containerd reads
// these files at every pull, so no restart is needed; with no server line
// it falls back to the registry itself after the mirrors.
//
// The pinned images are never pulled: the image builder writes a refusing
// hosts.toml for each of their registries (bootstrapd/images). Validate
// refuses a mirror for such a registry, because containerd configures whole
// registries, not repositories: a mirror there would make every pinned
// image pullable again. Files the stage did not write are never touched;
// the ones it wrote for mirrors no longer configured are removed.
package registries

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"kubeboot.dev/kubeboot/atomicfile"
	"kubeboot.dev/kubeboot/bootstrapd/images"
	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/machineconfig"
	"kubeboot.dev/kubeboot/nodepath"
)

// Marker is the first line of every hosts.toml the stage writes: how it
// knows its own files from the builder's and an administrator's.
const Marker = "# kubeboot: written by bootstrapd from containerd.mirrors of the machine config; replaced at every boot"

// maxHostsFile bounds what the stage reads of a hosts.toml to see whose it is.
const maxHostsFile = 64 << 10

// Stage is the registries stage.
type Stage struct{}

// New returns the registries stage.
func New() stage.Stage { return Stage{} }

func (Stage) Name() string { return "registries" }

// Inputs: the mirrors only.
func (Stage) Inputs(cfg *machineconfig.MachineConfig) any { return cfg.Containerd.Mirrors }

// Validate refuses mirrors for the registries of the pinned images (the
// baked index says which) and for registries whose hosts.toml someone
// else wrote.
func (Stage) Validate(_ context.Context, env *stage.Env) error {
	entries, err := images.ReadIndex(env.Root)
	if err != nil && !errors.Is(err, fs.ErrNotExist) { // an image without Kubernetes artifacts pins nothing
		return err
	}
	errs := []error{CheckPinned(env.Config.Containerd.Mirrors, entries)}
	for i, m := range env.Config.Containerd.Mirrors {
		p := images.HostsPath(m.Registry)
		mine, exists, err := ours(env.Path(p))
		if err != nil {
			return err
		}
		if exists && !mine {
			errs = append(errs, fmt.Errorf("containerd.mirrors[%d].registry: %s exists and was not written by bootstrapd; remove it or drop the mirror from the config", i, p))
		}
	}
	return errors.Join(errs...)
}

// CheckPinned refuses a mirror for a registry of the pinned images: the
// stage on the node, and the image builder for a baked config.
func CheckPinned(mirrors []machineconfig.RegistryMirror, pinned []images.Entry) error {
	regs := images.Registries(pinned)
	var errs []error
	for i, m := range mirrors {
		if slices.Contains(regs, m.Registry) {
			errs = append(errs, fmt.Errorf("containerd.mirrors[%d].registry: %s serves images this node image pins (%s); they are never pulled, and a mirror would make them pullable, so %s takes no mirror", i, m.Registry, nodepath.ImagesIndex, m.Registry))
		}
	}
	return errors.Join(errs...)
}

func (s Stage) Plan(_ context.Context, env *stage.Env) ([]stage.Change, error) {
	_, changes, err := diff(env)
	return changes, err
}

func (s Stage) Apply(_ context.Context, env *stage.Env) ([]stage.Change, error) {
	w, changes, err := diff(env)
	if err != nil {
		return nil, err
	}
	// CA files before the hosts.toml that names them: containerd may read
	// it at any moment.
	for _, f := range w.write {
		if err := atomicfile.Write(env.Path(f.path), f.data, 0o644, 0o755); err != nil {
			return nil, fmt.Errorf("write %s: %w", f.path, err)
		}
	}
	for _, p := range w.remove {
		if err := os.Remove(env.Path(p)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	for _, d := range w.dirs {
		// Only when empty: whatever else is there is someone else's.
		if err := os.Remove(env.Path(d)); err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, unix.ENOTEMPTY) {
			return nil, err
		}
	}
	return changes, nil
}

type file struct {
	path string
	data []byte
}

// work is what Apply does, in order: write, then remove files, then
// remove the emptied directories of registries no longer mirrored.
type work struct {
	write  []file
	remove []string
	dirs   []string
}

func diff(env *stage.Env) (work, []stage.Change, error) {
	var w work
	var changes []stage.Change
	want := map[string]bool{}
	for _, m := range env.Config.Containerd.Mirrors {
		for _, f := range files(m) {
			want[f.path] = true
			cur, err := os.ReadFile(env.Path(f.path))
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return w, nil, err
			}
			if err == nil && bytes.Equal(cur, f.data) {
				continue
			}
			w.write = append(w.write, f)
			if path.Base(f.path) == "hosts.toml" {
				changes = append(changes, stage.Change(fmt.Sprintf("%s: %d mirror(s) of %s", f.path, len(m.Endpoints), m.Registry)))
			} else {
				changes = append(changes, stage.Change(fmt.Sprintf("%s: CA certificate of a mirror of %s", f.path, m.Registry)))
			}
		}
	}
	// Files of the stage's own earlier runs that the config no longer has.
	dirs, err := os.ReadDir(env.Path(images.HostsDir))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return w, nil, err
	}
	for _, d := range dirs {
		if !d.IsDir() {
			continue
		}
		dir := path.Join(images.HostsDir, d.Name())
		hosts := path.Join(dir, "hosts.toml")
		if mine, _, err := ours(env.Path(hosts)); err != nil || !mine {
			if err != nil {
				return w, nil, err
			}
			continue
		}
		names, err := os.ReadDir(env.Path(dir))
		if err != nil {
			return w, nil, err
		}
		var stale []string
		for _, n := range names {
			p := path.Join(dir, n.Name())
			if !want[p] && (n.Name() == "hosts.toml" || strings.HasSuffix(n.Name(), ".crt")) {
				stale = append(stale, p)
			}
		}
		// hosts.toml first, so it never names a CA file already gone.
		slices.SortFunc(stale, func(a, b string) int {
			return boolInt(path.Base(b) == "hosts.toml") - boolInt(path.Base(a) == "hosts.toml")
		})
		for _, p := range stale {
			w.remove = append(w.remove, p)
			changes = append(changes, stage.Change("remove "+p))
		}
		if !want[hosts] {
			w.dirs = append(w.dirs, dir)
		}
	}
	return w, changes, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// ours reads whether the hosts.toml at p (a path on this machine) exists
// and starts with Marker.
func ours(p string) (mine, exists bool, err error) {
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false, false, nil
	}
	if err != nil {
		return false, false, err
	}
	defer f.Close()
	head := make([]byte, len(Marker)+1)
	n, _ := f.Read(head)
	if st, err := f.Stat(); err == nil && st.Size() > maxHostsFile {
		return false, true, nil
	}
	return bytes.Equal(head[:n], []byte(Marker+"\n")), true, nil
}

// files are the files of one registry's mirrors, paths on the node: the CA
// file of each endpoint that has one, then the hosts.toml naming them.
func files(m machineconfig.RegistryMirror) []file {
	dir := path.Join(images.HostsDir, m.Registry)
	var out []file
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n# Mirrors of %s, tried in this order; then %s itself.\n", Marker, m.Registry, m.Registry)
	for i, e := range m.Endpoints {
		url := strings.TrimSuffix(e.URL, "/")
		fmt.Fprintf(&b, "\n[host.%s]\n  capabilities = [", tomlString(url))
		for j, c := range e.Capabilities {
			if j > 0 {
				b.WriteString(", ")
			}
			b.WriteString(tomlString(c))
		}
		b.WriteString("]\n")
		if e.CACert != "" {
			// A relative ca is read from the hosts.toml's own directory.
			ca := fmt.Sprintf("mirror-%d.crt", i+1)
			out = append(out, file{path.Join(dir, ca), []byte(e.CACert)})
			fmt.Fprintf(&b, "  ca = %s\n", tomlString(ca))
		}
	}
	return append(out, file{path.Join(dir, "hosts.toml"), []byte(b.String())})
}

// tomlString is a TOML basic string. The validator allows no control
// characters in URLs, capabilities or registry names.
func tomlString(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}
