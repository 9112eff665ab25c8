// Package esp makes the EFI System Partition as a FAT32 image file with
// mkfs.vfat and mtools. Their output is reproducible: --invariant and a fixed
// volume id replace the random and time-based fields, and mtools stamps
// every entry with SOURCE_DATE_EPOCH. (go-diskfs's FAT writer was not used:
// its images fail fsck.vfat -n, see docs.)
package esp

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// File is one file on the ESP: its path there and its contents, taken from
// Source (a file on the build host) or, when Source is empty, from Data.
type File struct {
	Path   string // absolute, "/" separated, e.g. /EFI/BOOT/BOOTX64.EFI
	Source string
	Data   []byte
}

// Options describe the filesystem.
type Options struct {
	Size            int64  // bytes; FAT32 needs at least 33 MiB with 512-byte clusters
	VolumeID        uint32 // fixed so builds are reproducible
	Label           string // at most 11 characters
	SourceDateEpoch int64  // timestamp of every entry
}

// Build writes the FAT32 image to out (which is replaced) holding files.
func Build(out string, opts Options, files []File) error {
	if opts.Size < 33<<20 {
		return fmt.Errorf("ESP size %d is below the FAT32 minimum of 33 MiB", opts.Size)
	}
	if len(opts.Label) > 11 {
		return fmt.Errorf("ESP label %q is longer than 11 characters", opts.Label)
	}
	tmp, err := os.MkdirTemp("", "kubeboot-esp-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	_ = os.Remove(out)
	f, err := os.Create(out)
	if err != nil {
		return fmt.Errorf("create ESP image: %w", err)
	}
	if err := f.Truncate(opts.Size); err != nil {
		f.Close()
		return fmt.Errorf("size ESP image %s: %w", out, err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	env := append(os.Environ(),
		"SOURCE_DATE_EPOCH="+strconv.FormatInt(opts.SourceDateEpoch, 10),
		"MTOOLS_SKIP_CHECK=1", "TZ=UTC")
	if err := run(env, "mkfs.vfat", "-F", "32", "--invariant", "-i", fmt.Sprintf("%08x", opts.VolumeID), "-n", opts.Label, out); err != nil {
		return err
	}

	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	made := map[string]bool{"/": true}
	for _, fl := range files {
		if !strings.HasPrefix(fl.Path, "/") {
			return fmt.Errorf("ESP path %q is not absolute", fl.Path)
		}
		// Parent directories first, each once, so the order is fixed.
		var parents []string
		for d := path.Dir(fl.Path); !made[d]; d = path.Dir(d) {
			parents = append([]string{d}, parents...)
		}
		for _, d := range parents {
			if err := run(env, "mmd", "-i", out, "::"+d); err != nil {
				return err
			}
			made[d] = true
		}
		src := fl.Source
		if src == "" {
			src = filepath.Join(tmp, "data")
			if err := os.WriteFile(src, fl.Data, 0o644); err != nil {
				return err
			}
		}
		// No -m: the entry gets SOURCE_DATE_EPOCH, not the source's mtime.
		if err := run(env, "mcopy", "-o", "-i", out, src, "::"+fl.Path); err != nil {
			return err
		}
	}
	return run(env, "fsck.vfat", "-n", out)
}

func run(env []string, name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}
