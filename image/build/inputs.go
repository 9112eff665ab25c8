package build

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"

	"kubeboot.dev/kubeboot/bootstrapd/images"
	"kubeboot.dev/kubeboot/bootstrapd/registries"
	"kubeboot.dev/kubeboot/bootstrapd/source"
	"kubeboot.dev/kubeboot/clustersecrets"
	"kubeboot.dev/kubeboot/image/aptmirror"
	"kubeboot.dev/kubeboot/image/artifacts"
	"kubeboot.dev/kubeboot/image/bake"
	"kubeboot.dev/kubeboot/image/rootfs"
	"kubeboot.dev/kubeboot/image/spec"
	"kubeboot.dev/kubeboot/image/store"
	"kubeboot.dev/kubeboot/machineconfig"
	"kubeboot.dev/kubeboot/nodepath"
)

// initrdPaths are the parts of the overlays tree the initrd is built from
// (initramfs-tools configuration, hook and script, the STATE definition).
var initrdPaths = []string{"etc/initramfs-tools", "usr/lib/kubeboot/repart.d"}

// fileInput is a file to bake with the hash that keys the root step.
type fileInput struct {
	bake.File
	hash string
}

// inputs are the resolved inputs of every step.
type inputs struct {
	rootfs          rootfs.Options
	overlays        []string
	overlaysHash    string
	initrdFilesHash string
	files           []fileInput
	enable, mask    []string
	// images are imported into the store at build time with containerd.
	images         []store.Image
	containerd     string
	containerdHash string
	storeKey       string
	diskSize       int64
	qcow2          bool
	zst            bool // OUT.raw.zst for kubeboot flash
	// secret is set when a baked machine config holds join credentials:
	// the root squashfs and the disk images are then 0600 in 0700
	// directories on the build host.
	secret bool
}

// resolve reads the spec (and, unless OSOnly, the artifacts it pins) and
// checks every input exists, naming what is missing and how to get it.
func resolve(o Options) (*inputs, error) {
	s, err := spec.Load(o.SpecPath)
	if err != nil {
		return nil, err
	}
	mirror, _, err := aptmirror.Resolve(s.Base.Mirror)
	if err != nil {
		return nil, fmt.Errorf("%s: base.mirror is not set: %w", o.SpecPath, err)
	}
	in := &inputs{
		rootfs: rootfs.Options{Suite: s.Base.Suite, Mirror: mirror, Packages: s.Base.Packages, SourceDateEpoch: o.SourceDateEpoch},
		// The root is read-only and updated as a whole image: apt's daily
		// timers could only fail and wake the node for nothing.
		mask: []string{"systemd-firstboot.service", "apt-daily.timer", "apt-daily-upgrade.timer"},
	}
	if s.Base.Distribution != "" && s.Base.Distribution != "debian" {
		return nil, fmt.Errorf("%s: base.distribution %q: the image builder supports debian only", o.SpecPath, s.Base.Distribution)
	}
	if s.Output.DiskSize == "" {
		s.Output.DiskSize = "8GiB"
	}
	if in.diskSize, err = parseSize(s.Output.DiskSize); err != nil {
		return nil, fmt.Errorf("%s: output.diskSize: %w", o.SpecPath, err)
	}
	for _, f := range s.Output.Formats {
		switch f {
		case "raw":
		case "qcow2":
			in.qcow2 = true
		case "zst":
			in.zst = true
		default:
			return nil, fmt.Errorf("%s: output.formats: %q is not raw, qcow2 or zst", o.SpecPath, f)
		}
	}

	if s.Overlays == "" {
		return nil, fmt.Errorf("%s: overlays is not set: %w", o.SpecPath, errNoOverlays)
	}
	overlays := s.Resolve(s.Overlays)
	if st, err := os.Stat(overlays); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("%s: overlays directory %s not found", o.SpecPath, overlays)
	}
	in.overlays = []string{overlays}
	if in.overlaysHash, err = treeHash(overlays); err != nil {
		return nil, err
	}
	h := newHasher("initrd files")
	for _, p := range initrdPaths {
		sum, err := treeHash(filepath.Join(overlays, p))
		if err != nil {
			return nil, err
		}
		h.add(p, sum)
	}
	in.initrdFilesHash = h.sum()

	if o.Bootstrapd == "" {
		return nil, fmt.Errorf("no bootstrapd binary given: build it with make build")
	}
	if err := in.addFile(bake.File{Path: "/usr/bin/bootstrapd", Source: o.Bootstrapd, Mode: 0o755},
		"bootstrapd binary %s not found: run make build"); err != nil {
		return nil, err
	}
	in.enable = append(in.enable, "bootstrapd.service")
	var baked *machineconfig.MachineConfig
	if o.MachineConfig != "" {
		if baked, err = in.addMachineConfig(o.MachineConfig); err != nil {
			return nil, err
		}
	}
	if !o.OSOnly {
		set, err := artifacts.LoadWithCache(o.SpecPath, o.CacheDir)
		if err != nil {
			return nil, fmt.Errorf("kubernetes artifacts: %w (or build an image without Kubernetes with --os-only)", err)
		}
		if err := in.addArtifacts(set); err != nil {
			return nil, err
		}
		if baked != nil {
			var pinned []images.Entry
			for _, im := range in.images {
				pinned = append(pinned, im.Entry)
			}
			if err := registries.CheckPinned(baked.Containerd.Mirrors, pinned); err != nil {
				return nil, fmt.Errorf("--machine-config %s: %w", o.MachineConfig, err)
			}
		}
		in.enable = append(in.enable, "containerd.service", "kubelet.service")
	}
	for _, u := range in.enable {
		if _, err := os.Stat(filepath.Join(overlays, "usr/lib/systemd/system", u)); err != nil {
			return nil, fmt.Errorf("unit %s is not in %s/usr/lib/systemd/system: it must be shipped by the overlays", u, overlays)
		}
	}
	sort.Slice(in.files, func(i, j int) bool { return in.files[i].Path < in.files[j].Path })
	return in, nil
}

// addMachineConfig bakes the config at source.BakedPath and the secrets
// bundle it names beside it, the role's share only (a worker's image holds
// no private key). Both are 0600, and the image holding them is private
// on the build host too (secret).
func (in *inputs) addMachineConfig(config string) (*machineconfig.MachineConfig, error) {
	data, err := os.ReadFile(config)
	if err != nil {
		return nil, fmt.Errorf("--machine-config: %w", err)
	}
	dir := path.Dir(source.BakedPath)
	carrier := &machineconfig.Carrier{Dir: filepath.Dir(config), Tool: "kubeboot image build", Reserved: []string{path.Base(source.BakedPath), path.Base(nodepath.PackagesLock), path.Base(nodepath.ImagesDir)}}
	cfg, err := machineconfig.ParseWithFiles(config, data, carrier.Read)
	if err != nil {
		return nil, fmt.Errorf("--machine-config: %w", err)
	}
	in.addData(source.BakedPath, data, 0o600)
	for _, name := range carrier.Names {
		in.addData(path.Join(dir, name), clustersecrets.Marshal(cfg.Kubernetes.Credentials.Bundle), 0o600)
	}
	in.secret = true
	return cfg, nil
}

// addArtifacts installs the node binaries, CNI plugins and image archives.
func (in *inputs) addArtifacts(set *artifacts.Set) error {
	for _, name := range artifacts.NodeBinaries {
		p, ok := set.Binaries[name]
		if !ok {
			return fmt.Errorf("artifact %s not in cache: run make artifacts", name)
		}
		if err := in.addFile(bake.File{Path: "/usr/bin/" + name, Source: p, Mode: 0o755}, "artifact %s not in cache: run make artifacts"); err != nil {
			return err
		}
	}
	names := make([]string, 0, len(set.CNIPlugins))
	for n := range set.CNIPlugins {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := in.addFile(bake.File{Path: "/opt/cni/bin/" + n, Source: set.CNIPlugins[n], Mode: 0o755}, "CNI plugin %s not in cache: run make artifacts"); err != nil {
			return err
		}
	}
	var entries []images.Entry
	for _, im := range set.Images {
		e := images.Entry{Ref: im.Ref, Digest: im.Digest, File: images.FileName(im.Ref)}
		if err := in.addFile(bake.File{Path: path.Join(nodepath.ImagesDir, e.File), Source: im.Path, Mode: 0o644, SHA256: im.ArchiveSHA256}, "image archive %s not in cache: run make artifacts"); err != nil {
			return err
		}
		entries = append(entries, e)
		in.images = append(in.images, store.Image{Entry: e, Archive: im.Path})
	}
	if len(entries) > 0 {
		index := images.FormatIndex(entries)
		// The node reads the index with the same parser.
		if _, err := images.ParseIndex(bytes.NewReader(index)); err != nil {
			return fmt.Errorf("image index: %w", err)
		}
		in.addData(nodepath.ImagesIndex, index, 0o644)
		// Nothing pinned is ever pulled: containerd may not fetch from the
		// pinned images' registries.
		for _, host := range images.Registries(entries) {
			in.addData(images.HostsPath(host), images.RefusingHosts(host), 0o644)
		}
		in.containerd = set.Binaries["containerd"]
		var err error
		if in.containerdHash, err = fileHash(in.containerd); err != nil {
			return err
		}
	}
	return nil
}

// addFile adds a file to bake. A file of the artifact cache, keyed by its
// name, is pinned to it for bake to re-hash; a file already hashed here
// must match a pin given by the caller (an image archive's lock entry).
func (in *inputs) addFile(f bake.File, missing string) error {
	sum, err := fileHash(f.Source)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf(missing, f.Source)
		}
		return err
	}
	if name, ok := cacheName(f.Source); ok {
		f.SHA256 = name
	} else if f.SHA256 != "" && sum != f.SHA256 {
		return fmt.Errorf("%s hashes to %s, not the %s the lock pins: the artifact cache was changed or corrupted after it was filled; delete the file and run make artifacts", f.Source, sum, f.SHA256)
	}
	in.files = append(in.files, fileInput{File: f, hash: sum})
	return nil
}

func (in *inputs) addData(p string, data []byte, mode os.FileMode) {
	h := newHasher("data")
	h.add("contents", string(data))
	in.files = append(in.files, fileInput{File: bake.File{Path: p, Data: data, Mode: mode}, hash: h.sum()})
}

func (in *inputs) bakeFiles() []bake.File {
	out := make([]bake.File, 0, len(in.files))
	for _, f := range in.files {
		out = append(out, f.File)
	}
	return out
}

// stageInitrdFiles copies the initrd's part of the overlays into dst.
func (in *inputs) stageInitrdFiles(dst string) error {
	for _, o := range in.overlays {
		for _, p := range initrdPaths {
			src := filepath.Join(o, p)
			if _, err := os.Stat(src); err != nil {
				continue
			}
			if err := os.MkdirAll(filepath.Dir(filepath.Join(dst, p)), 0o755); err != nil {
				return err
			}
			if out, err := exec.Command("cp", "-r", "--preserve=mode", src, filepath.Join(dst, p)).CombinedOutput(); err != nil {
				return fmt.Errorf("stage initrd files %s: %w: %s", src, err, out)
			}
		}
	}
	return nil
}
