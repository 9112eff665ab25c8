// Package cidata makes NoCloud seed volumes (label CIDATA) that cloud-init
// and bootstrapd read: an ISO9660 image (xorriso, Rock Ridge + Joliet) or a
// FAT image (mkfs.vfat + mtools), chosen by the output's extension.
package cidata

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
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

// Write makes the volume at out (through a temporary name, renamed on
// success) holding files, a map from name (no directories) to contents.
func Write(out string, files map[string][]byte, opts Options) error {
	stage, err := os.MkdirTemp("", "kubeboot-cidata-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(stage)
	names := make([]string, 0, len(files))
	var total int64
	for name, data := range files {
		if name == "" || strings.ContainsAny(name, "/\\") {
			return fmt.Errorf("NoCloud file name %q must be a plain file name", name)
		}
		p := filepath.Join(stage, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			return err
		}
		if err := os.Chtimes(p, unix(opts.SourceDateEpoch), unix(opts.SourceDateEpoch)); err != nil {
			return err
		}
		names = append(names, name)
		total += int64(len(data))
	}
	sort.Strings(names)
	tmp := filepath.Join(filepath.Dir(out), "."+filepath.Base(out)+".tmp-"+strconv.Itoa(os.Getpid()))
	_ = os.Remove(tmp)
	defer os.Remove(tmp)
	epoch := strconv.FormatInt(opts.SourceDateEpoch, 10)
	env := append(os.Environ(), "SOURCE_DATE_EPOCH="+epoch, "MTOOLS_SKIP_CHECK=1", "TZ=UTC")
	switch opts.Format {
	case ISO:
		args := []string{"-as", "mkisofs", "-quiet", "-o", tmp, "-V", "cidata", "-J", "-R"}
		args = append(args, names...)
		cmd := exec.Command("xorriso", args...)
		cmd.Dir = stage
		cmd.Env = env
		if err := runCmd(cmd); err != nil {
			return err
		}
	case FAT:
		// FAT12 holds a few MiB; leave room for a secrets bundle.
		size := (total/(1<<20) + 2) << 20
		f, err := os.Create(tmp)
		if err != nil {
			return err
		}
		if err := f.Truncate(size); err != nil {
			f.Close()
			return err
		}
		f.Close()
		if err := runCmd(envCmd(env, "mkfs.vfat", "--invariant", "-i", "c1da7a00", "-n", Label, tmp)); err != nil {
			return err
		}
		for _, n := range names {
			if err := runCmd(envCmd(env, "mcopy", "-o", "-i", tmp, filepath.Join(stage, n), "::/"+n)); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("unknown NoCloud volume format %q", opts.Format)
	}
	return os.Rename(tmp, out)
}

func envCmd(env []string, name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
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
