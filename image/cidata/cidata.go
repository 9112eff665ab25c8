// Package cidata makes NoCloud seed volumes (label CIDATA) that cloud-init
// and bootstrapd read: an ISO9660 image (xorriso, Rock Ridge + Joliet) or a
// FAT image (mkfs.vfat + mtools), chosen by the output's extension.
package cidata

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"kubeboot.dev/kubeboot/atomicfile"
)

// Label is the NoCloud volume label.
const Label = "CIDATA"

// Format of the volume.
type Format string

const (
	ISO Format = "iso9660"
	FAT Format = "vfat"
)

// FormatFor picks the format from the output name: .iso is ISO9660,
// .img/.vfat/.fat is FAT.
func FormatFor(out string) (Format, error) {
	switch strings.ToLower(filepath.Ext(out)) {
	case ".iso":
		return ISO, nil
	case ".img", ".vfat", ".fat":
		return FAT, nil
	}
	return "", fmt.Errorf("%s: the extension must be .iso (ISO9660) or .img (FAT)", out)
}

// Options for Write.
type Options struct {
	Format          Format
	SourceDateEpoch int64 // timestamps of the volume and its files
}

// Write makes the volume at out holding files, a map from name (no
// directories) to contents. The volume carries a machine config, which
// holds join credentials, so everything is private: the volume is 0600,
// its directory 0700 when Write creates it, and the files are staged and
// the volume built in a 0700 directory beside out, renamed into place on
// success and removed on any failure or when ctx is cancelled (Ctrl-C).
func Write(ctx context.Context, out string, files map[string][]byte, opts Options) error {
	out, err := filepath.Abs(out) // the tools run in the staging directory
	if err != nil {
		return err
	}
	for name := range files {
		if name == "" || strings.ContainsAny(name, "/\\") {
			return fmt.Errorf("NoCloud file name %q must be a plain file name", name)
		}
	}
	if opts.Format != ISO && opts.Format != FAT {
		return fmt.Errorf("unknown NoCloud volume format %q", opts.Format)
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o700); err != nil {
		return err
	}
	work, err := os.MkdirTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	stage, tmp := filepath.Join(work, "files"), filepath.Join(work, "volume")
	if err := os.Mkdir(stage, 0o700); err != nil {
		return err
	}
	names := make([]string, 0, len(files))
	var total int64
	for name, data := range files {
		p := filepath.Join(stage, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			return err
		}
		if err := os.Chtimes(p, unix(opts.SourceDateEpoch), unix(opts.SourceDateEpoch)); err != nil {
			return err
		}
		names = append(names, name)
		total += int64(len(data))
	}
	sort.Strings(names)
	epoch := strconv.FormatInt(opts.SourceDateEpoch, 10)
	env := append(os.Environ(), "SOURCE_DATE_EPOCH="+epoch, "MTOOLS_SKIP_CHECK=1", "TZ=UTC")
	switch opts.Format {
	case ISO:
		args := []string{"-as", "mkisofs", "-quiet", "-o", tmp, "-V", "cidata", "-J", "-R"}
		args = append(args, names...)
		cmd := envCmd(ctx, env, "xorriso", args...)
		cmd.Dir = stage
		if err := runCmd(cmd); err != nil {
			return err
		}
	case FAT:
		// FAT12 holds a few MiB; leave room for a secrets bundle.
		size := (total/(1<<20) + 2) << 20
		f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		if err := f.Truncate(size); err != nil {
			f.Close()
			return err
		}
		f.Close()
		if err := runCmd(envCmd(ctx, env, "mkfs.vfat", "--invariant", "-i", "c1da7a00", "-n", Label, tmp)); err != nil {
			return err
		}
		for _, n := range names {
			if err := runCmd(envCmd(ctx, env, "mcopy", "-o", "-i", tmp, filepath.Join(stage, n), "::/"+n)); err != nil {
				return err
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, out); err != nil {
		return err
	}
	return atomicfile.SyncDir(filepath.Dir(out))
}

func envCmd(ctx context.Context, env []string, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	return cmd
}

func runCmd(cmd *exec.Cmd) error {
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(cmd.Args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}
