// Package squashfs packs the root filesystem with mksquashfs (Debian's
// squashfs-tools; go-diskfs's squashfs writer corrupts large directories).
// Every inode time and the superblock time are set to SOURCE_DATE_EPOCH, so
// the same tree always gives the same bytes.
package squashfs

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// Options for Build.
type Options struct {
	SourceDateEpoch int64
	// ZstdLevel is the zstd compression level (1-22); 0 means 6, which packs
	// a Debian node root in seconds at a size close to level 15's.
	ZstdLevel int
}

// Args are the mksquashfs arguments Build uses (also used by the benchmark
// that runs mksquashfs bare).
func Args(dir, out string, opts Options) []string {
	level := opts.ZstdLevel
	if level == 0 {
		level = 6
	}
	epoch := strconv.FormatInt(opts.SourceDateEpoch, 10)
	return []string{dir, out, "-noappend", "-comp", "zstd", "-Xcompression-level", strconv.Itoa(level),
		"-all-time", epoch, "-mkfs-time", epoch, "-no-progress", "-quiet"}
}

// Build packs dir into the squashfs image out (replaced if present),
// keeping owners, modes and extended attributes (file capabilities).
func Build(ctx context.Context, dir, out string, opts Options) error {
	if err := os.Remove(out); err != nil && !os.IsNotExist(err) {
		return err
	}
	cmd := exec.CommandContext(ctx, "mksquashfs", Args(dir, out, opts)...)
	// mksquashfs refuses SOURCE_DATE_EPOCH together with -all-time.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SOURCE_DATE_EPOCH=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("mksquashfs %s: %w: %s", dir, err, strings.TrimSpace(log.String()))
	}
	return nil
}
