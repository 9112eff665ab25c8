// Package build is the image builder's pipeline:
//
//	resolve  spec + lock + artifact cache -> the inputs, or what is missing
//	rootfs   mmdebstrap Debian base             cached by suite, mirror, packages
//	initrd   mkinitramfs with kubeboot's STATE script   cached by rootfs + initramfs files
//	store    containerd's image store: every locked image imported by our
//	         containerd on a private root, pinned, unpacked (image/store)
//	                                             cached by containerd + image digests
//	root     bake (overlays, artifacts, units, cleanup) + mksquashfs
//	                                             cached by rootfs + overlays + artifacts
//	state    STATE's ext4: the root's /var + the store (image/statefs)
//	                                             cached by root + store + size
//	esp      systemd-boot, loader entry, kernel, initrd on FAT32
//	                                             cached by initrd + kernel command line
//	disk     GPT (GUIDs from the input hash) with ESP, ROOT-A, ROOT-B, STATE
//	outputs  raw, qcow2 by qemu-img convert, raw.zst for kubeboot flash
//	         (image/flash), written to temporary names and renamed on success
//
// Each cached step lives in <cache>/image/<step>/<key>/; a change to an
// overlay rebuilds root, disk and outputs only.
package build

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"kubeboot.dev/kubeboot/atomicfile"
	"kubeboot.dev/kubeboot/image/bake"
	"kubeboot.dev/kubeboot/image/disk"
	"kubeboot.dev/kubeboot/image/esp"
	"kubeboot.dev/kubeboot/image/flash"
	"kubeboot.dev/kubeboot/image/initrd"
	"kubeboot.dev/kubeboot/image/progress"
	"kubeboot.dev/kubeboot/image/rootfs"
	"kubeboot.dev/kubeboot/image/squashfs"
	"kubeboot.dev/kubeboot/image/statefs"
	"kubeboot.dev/kubeboot/image/store"
	"kubeboot.dev/kubeboot/nodepath"
)

// Disk layout.
const (
	espSize      = 256 * disk.MiB
	minRootSize  = 1024 * disk.MiB
	rootAlign    = 256 * disk.MiB
	minStateSize = 1024 * disk.MiB
)

// KernelCommandLine boots ROOT-A read-only; the initrd sets up STATE.
// systemd.gpt_auto=no: the ESP is not automounted (the root is read-only
// and nothing on the node writes the ESP); systemd.firstboot=no: no
// interactive first-boot questions on the console.
const KernelCommandLine = "root=PARTLABEL=ROOT-A rootfstype=squashfs ro systemd.gpt_auto=no systemd.firstboot=no console=tty0 console=ttyS0,115200"

// Options of one build.
type Options struct {
	SpecPath string
	// CacheDir is the kubeboot cache (artifacts); image steps use CacheDir/image.
	CacheDir string
	// Output is the raw image path; a qcow2 is written next to it
	// (extension .qcow2) when the spec's output.formats asks for it.
	Output string
	// Bootstrapd is the bootstrapd binary installed as /usr/bin/bootstrapd.
	Bootstrapd string
	// MachineConfig, when set, is baked in at source.BakedPath (0600).
	MachineConfig string
	// OSOnly builds without the Kubernetes artifacts (no kubeadm, kubelet,
	// containerd, images): for boot tests of the OS layout before
	// `make artifacts` has run.
	OSOnly          bool
	SourceDateEpoch int64
	Log             *slog.Logger
	Progress        progress.Reporter
}

// Step is one pipeline step's timing.
type Step struct {
	Name     string
	Cached   bool
	Duration time.Duration
}

// Result of a build.
type Result struct {
	Raw, QCOW2   string
	Zst          string // the raw compressed for kubeboot flash
	PackagesLock string // installed Debian packages, "name version arch" per line
	Steps        []Step
	RootSize     int64 // squashfs bytes
	ESPSize      int64
	// written are the outputs this build has put in place so far.
	written []string
}

// Build runs the pipeline. A build that fails or is interrupted after
// writing some of its outputs (the raw image, then the package list, then
// the qcow2) removes them: the outputs are there together or not at all.
func Build(ctx context.Context, o Options) (*Result, error) {
	res, err := build(ctx, o)
	if err != nil {
		for _, p := range res.written {
			os.Remove(p)
		}
	}
	return res, err
}

func build(ctx context.Context, o Options) (*Result, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Progress == nil {
		o.Progress = progress.Discard
	}
	res := &Result{Raw: o.Output}
	steps := stepCache{dir: filepath.Join(o.CacheDir, "image")}
	timed := func(name string, f func() (bool, error)) error {
		task := o.Progress.Start(name, -1)
		start := time.Now()
		cached, err := f()
		task.Done(err)
		res.Steps = append(res.Steps, Step{Name: name, Cached: cached, Duration: time.Since(start)})
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		o.Log.Info("image step", "step", name, "cached", cached, "seconds", time.Since(start).Round(time.Millisecond).Seconds())
		return nil
	}

	// resolve
	var in *inputs
	if err := timed("resolve", func() (bool, error) {
		var err error
		in, err = resolve(o)
		return false, err
	}); err != nil {
		return res, err
	}

	// rootfs
	var rootfsDir string
	if err := timed("rootfs", func() (bool, error) {
		dir, cached, err := steps.make("rootfs", in.rootfs.Key(), func(tmp string) error {
			logFile, err := os.Create(filepath.Join(tmp, "mmdebstrap.log"))
			if err != nil {
				return err
			}
			defer logFile.Close()
			return rootfs.Build(ctx, filepath.Join(tmp, "tree"), filepath.Join(tmp, "packages.lock"), in.rootfs, logFile)
		})
		rootfsDir = dir
		return cached, err
	}); err != nil {
		return res, err
	}
	tree := filepath.Join(rootfsDir, "tree")
	kver, err := initrd.KernelVersion(tree)
	if err != nil {
		return res, err
	}

	// initrd
	initrdKey := newHasher("initrd v1")
	initrdKey.add("rootfs", in.rootfs.Key())
	initrdKey.add("files", in.initrdFilesHash)
	initrdKey.add("epoch", strconv.FormatInt(o.SourceDateEpoch, 10))
	var initrdDir string
	if err := timed("initrd", func() (bool, error) {
		dir, cached, err := steps.make("initrd", initrdKey.sum(), func(tmp string) error {
			extra := filepath.Join(tmp, "extra")
			if err := in.stageInitrdFiles(extra); err != nil {
				return err
			}
			defer os.RemoveAll(extra)
			return initrd.Build(ctx, tree, extra, filepath.Join(tmp, "initrd.img"), o.SourceDateEpoch)
		})
		initrdDir = dir
		return cached, err
	}); err != nil {
		return res, err
	}

	// store: containerd's image store, prepared once per image set
	var storeDir string
	if len(in.images) > 0 {
		storeKey := newHasher("store v1")
		storeKey.add("containerd", in.containerdHash)
		for _, im := range in.images {
			// The manifest digest pins every blob the store is made of.
			storeKey.add("image", im.Ref, im.Digest)
		}
		storeKey.add("epoch", strconv.FormatInt(o.SourceDateEpoch, 10))
		if err := timed("store", func() (bool, error) {
			dir, cached, err := steps.make("store", storeKey.sum(), func(tmp string) error {
				return store.Build(ctx, store.Options{
					Containerd: in.containerd, Images: in.images, Root: filepath.Join(tmp, "containerd"),
					SourceDateEpoch: o.SourceDateEpoch, Log: o.Log,
				})
			})
			storeDir = dir
			return cached, err
		}); err != nil {
			return res, err
		}
		in.storeKey = storeKey.sum()
	}

	// root: bake + squashfs
	rootKey := newHasher("root v1")
	rootKey.add("rootfs", in.rootfs.Key())
	rootKey.add("overlays", in.overlaysHash)
	for _, f := range in.files {
		rootKey.add("file", f.Path, f.Mode.String(), f.hash)
	}
	rootKey.add("enable", in.enable...)
	rootKey.add("mask", in.mask...)
	rootKey.add("epoch", strconv.FormatInt(o.SourceDateEpoch, 10))
	rootKey.add("squashfs", strings.Join(squashfs.Args("DIR", "OUT", squashfs.Options{SourceDateEpoch: o.SourceDateEpoch}), " "))
	var rootDir string
	if err := timed("root", func() (bool, error) {
		dir, cached, err := steps.make("root", rootKey.sum(), func(tmp string) error {
			if in.secret {
				// The cached entry holds the baked config: root's only.
				if err := os.Chmod(tmp, 0o700); err != nil {
					return err
				}
			}
			baked := filepath.Join(tmp, "tree")
			files := append([]bake.File{{Path: nodepath.PackagesLock, Source: filepath.Join(rootfsDir, "packages.lock"), Mode: 0o644}}, in.bakeFiles()...)
			// The two halves are timed on their own (shown as root/bake and
			// root/squashfs before the root total).
			start := time.Now()
			if err := bake.Bake(ctx, tree, baked, bake.Options{
				Overlays: in.overlays, Files: files, Enable: in.enable, Mask: in.mask,
			}); err != nil {
				return err
			}
			res.Steps = append(res.Steps, Step{Name: "root/bake", Duration: time.Since(start)})
			defer os.RemoveAll(baked)
			start = time.Now()
			err := squashfs.Build(ctx, baked, filepath.Join(tmp, "root.squashfs"), squashfs.Options{SourceDateEpoch: o.SourceDateEpoch})
			res.Steps = append(res.Steps, Step{Name: "root/squashfs", Duration: time.Since(start)})
			if err == nil && in.secret {
				err = os.Chmod(filepath.Join(tmp, "root.squashfs"), 0o600)
			}
			return err
		})
		rootDir = dir
		return cached, err
	}); err != nil {
		return res, err
	}
	rootImage := filepath.Join(rootDir, "root.squashfs")

	// The disk's layout: ROOT-A and ROOT-B sized from the squashfs, STATE
	// the rest of output.diskSize.
	st, err := os.Stat(rootImage)
	if err != nil {
		return res, err
	}
	res.RootSize, res.ESPSize = st.Size(), espSize
	rootSize := max(roundUp(st.Size()*3/2, rootAlign), minRootSize)
	stateSize := in.diskSize - disk.Layout{Partitions: []disk.Partition{{Size: espSize}, {Size: rootSize}, {Size: rootSize}}}.Size()
	if stateSize < minStateSize {
		return res, fmt.Errorf("output.diskSize %d MiB leaves %d MiB for STATE after ESP and 2 x %d MiB root partitions; STATE needs at least %d MiB: raise output.diskSize in %s",
			in.diskSize/disk.MiB, stateSize/disk.MiB, rootSize/disk.MiB, minStateSize/disk.MiB, o.SpecPath)
	}

	// state: STATE's ext4 with the image's /var and the store
	stateKey := newHasher("state v2")
	stateKey.add("rootfs", in.rootfs.Key()) // mke2fs
	stateKey.add("root", rootKey.sum())     // /var
	stateKey.add("store", in.storeKey)
	stateKey.add("size", strconv.FormatInt(stateSize, 10))
	stateKey.add("epoch", strconv.FormatInt(o.SourceDateEpoch, 10))
	stateKey.add("mke2fs", strings.Join(statefs.Args(statefs.Options{UUID: "U", HashSeed: "H", Var: "D", Out: "O", Size: 4096}), " "))
	var stateDir string
	if err := timed("state", func() (bool, error) {
		dir, cached, err := steps.make("state", stateKey.sum(), func(tmp string) error {
			return buildState(ctx, tmp, rootImage, storeDir, tree, stateSize, stateKey.sum(), o.SourceDateEpoch)
		})
		stateDir = dir
		return cached, err
	}); err != nil {
		return res, err
	}

	// esp
	espKey := newHasher("esp v1")
	espKey.add("rootfs", in.rootfs.Key())
	espKey.add("initrd", initrdKey.sum())
	espKey.add("cmdline", KernelCommandLine)
	espKey.add("size", strconv.FormatInt(espSize, 10))
	espKey.add("epoch", strconv.FormatInt(o.SourceDateEpoch, 10))
	var espDir string
	if err := timed("esp", func() (bool, error) {
		dir, cached, err := steps.make("esp", espKey.sum(), func(tmp string) error {
			return esp.Build(filepath.Join(tmp, "esp.img"), esp.Options{
				Size: espSize, VolumeID: volumeID(espKey.sum()), Label: "ESP", SourceDateEpoch: o.SourceDateEpoch,
			}, espFiles(tree, kver, filepath.Join(initrdDir, "initrd.img")))
		})
		espDir = dir
		return cached, err
	}); err != nil {
		return res, err
	}
	espImage := filepath.Join(espDir, "esp.img")

	// disk + outputs
	if err := timed("disk", func() (bool, error) {
		layout := disk.Layout{Partitions: []disk.Partition{
			{Name: "ESP", Type: disk.TypeESP, Size: espSize, Contents: espImage},
			{Name: "ROOT-A", Type: disk.TypeRootX86_64, Size: rootSize, Contents: rootImage},
			{Name: "ROOT-B", Type: disk.TypeRootX86_64, Size: rootSize},
			{Name: statefs.Label, Type: disk.TypeLinuxData, Size: stateSize, Contents: filepath.Join(stateDir, "state.img")},
		}}
		seed := newHasher("disk v2")
		seed.add("root", rootKey.sum())
		seed.add("esp", espKey.sum())
		seed.add("state", stateKey.sum())
		seed.add("size", strconv.FormatInt(in.diskSize, 10))
		layout.Seed = seed.sum()
		perm, dirPerm := diskMode(in.secret)
		// disk.Write does not watch ctx: an interrupt during it is seen
		// once it returns, before the image replaces anything.
		if err := atomicfile.WriteWith(o.Output, perm, dirPerm, func(tmp string) error {
			if err := disk.Write(tmp, layout); err != nil {
				return err
			}
			return ctx.Err()
		}); err != nil {
			return false, err
		}
		res.written = append(res.written, o.Output)
		// The exact Debian package versions, next to the image for review
		// and diffs between builds (the image has them in nodepath.PackagesLock).
		res.PackagesLock = strings.TrimSuffix(o.Output, filepath.Ext(o.Output)) + ".packages.lock"
		if err := atomicfile.WriteWith(res.PackagesLock, 0o644, 0o755, func(tmp string) error {
			return run(ctx, "cp", filepath.Join(rootfsDir, "packages.lock"), tmp)
		}); err != nil {
			return false, err
		}
		res.written = append(res.written, res.PackagesLock)
		return false, nil
	}); err != nil {
		return res, err
	}
	if in.qcow2 {
		res.QCOW2 = strings.TrimSuffix(o.Output, filepath.Ext(o.Output)) + ".qcow2"
		if err := timed("qcow2", func() (bool, error) {
			perm, dirPerm := diskMode(in.secret)
			if err := atomicfile.WriteWith(res.QCOW2, perm, dirPerm, func(tmp string) error {
				return run(ctx, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", o.Output, tmp)
			}); err != nil {
				return false, err
			}
			res.written = append(res.written, res.QCOW2)
			return false, nil
		}); err != nil {
			return res, err
		}
	}
	if in.zst {
		res.Zst = o.Output + ".zst"
		if err := timed("zst", func() (bool, error) {
			perm, dirPerm := diskMode(in.secret)
			return false, atomicfile.WriteWith(res.Zst, perm, dirPerm, func(tmp string) error {
				_, err := flash.Compress(ctx, o.Output, tmp)
				return err
			})
		}); err != nil {
			return res, err
		}
	}
	return res, nil
}

// buildState writes dir/state.img: the image's /var (from the squashfs,
// where every time is already fixed) with the store from storeDir (if any)
// at /var/lib/containerd.
func buildState(ctx context.Context, dir, rootImage, storeDir, rootfs string, size int64, key string, epoch int64) error {
	tree := filepath.Join(dir, "tree")
	defer os.RemoveAll(tree)
	if err := run(ctx, "unsquashfs", "-q", "-n", "-d", tree, rootImage, "/var"); err != nil {
		return err
	}
	if storeDir != "" {
		if err := run(ctx, "cp", "-a", "--reflink=auto", filepath.Join(storeDir, "containerd"), filepath.Join(tree, nodepath.ContainerdRoot)); err != nil {
			return err
		}
	}
	return statefs.Build(ctx, statefs.Options{
		Rootfs: rootfs, Var: filepath.Join(tree, "var"), Out: filepath.Join(dir, "state.img"), Size: size,
		UUID: disk.GUID(key, "STATE ext4"), HashSeed: disk.GUID(key, "STATE hash seed"), SourceDateEpoch: epoch,
	})
}

// espFiles are systemd-boot, its configuration, the kernel and the initrd.
func espFiles(tree, kver, initrdPath string) []esp.File {
	boot := filepath.Join(tree, "usr/lib/systemd/boot/efi/systemd-bootx64.efi")
	return []esp.File{
		{Path: "/EFI/BOOT/BOOTX64.EFI", Source: boot},
		{Path: "/loader/loader.conf", Data: []byte("default kubeboot-a.conf\ntimeout 0\neditor no\n")},
		{Path: "/loader/entries/kubeboot-a.conf", Data: []byte(
			"title kubeboot (ROOT-A)\n" +
				"version " + kver + "\n" +
				"linux /kubeboot/a/vmlinuz\n" +
				"initrd /kubeboot/a/initrd.img\n" +
				"options " + KernelCommandLine + "\n")},
		{Path: "/kubeboot/a/vmlinuz", Source: filepath.Join(tree, "boot/vmlinuz-"+kver)},
		{Path: "/kubeboot/a/initrd.img", Source: initrdPath},
	}
}

// diskMode is the mode of a disk image and of its directory when it is
// made: one holding a baked config (and so join credentials) is as private
// as the config.
func diskMode(secret bool) (perm, dirPerm os.FileMode) {
	if secret {
		return 0o600, 0o700
	}
	return 0o644, 0o755
}

func volumeID(key string) uint32 {
	v, _ := strconv.ParseUint(key[:8], 16, 32)
	return uint32(v)
}

func roundUp(n, to int64) int64 { return (n + to - 1) / to * to }

var sizeRE = regexp.MustCompile(`^(\d+)(M|G|T)(i?B)?$`)

// parseSize reads "8GiB", "8G", "512MiB" as binary units.
func parseSize(s string) (int64, error) {
	m := sizeRE.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("%q is not a size like 8GiB", s)
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return 0, err
	}
	shift := map[string]uint{"M": 20, "G": 30, "T": 40}[m[2]]
	return n << shift, nil
}

func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

var errNoOverlays = errors.New("spec has no overlays directory")
