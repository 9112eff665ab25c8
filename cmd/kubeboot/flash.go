package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/term"

	"kubeboot.dev/kubeboot/image/cidata"
	"kubeboot.dev/kubeboot/image/flash"
	"kubeboot.dev/kubeboot/image/progress"
)

const flashUsage = `usage: kubeboot flash --image out/node.raw|out/node.raw.zst --device /dev/X [--config FILE] [--yes]

Writes a node image onto a whole disk (a USB stick, a server's disk, a VM's
block device), then reads the disk back and compares it with the image.
Only the image's data is sent to the disk: its holes, and the zero runs of a
.zst, are zeroed without sending zeros when the disk can (write-zeroes; a
loop device's discard), else written only where the disk holds something
else. A .zst is checked whole against
its header before the disk is touched.

Refused: a partition, a read-only disk, the disk holding /, a disk with a
mounted partition, active swap or a holder (LVM, RAID, crypt). Asks before
writing unless --yes; without --yes stdin must be a terminal.

With --config, the machine config goes into a NoCloud volume (checked and
built as kubeboot cidata builds it, with the secrets bundle the config
names) in a small CIDATA partition added after the image, so the node
needs no seed disk; the disk must be a little larger than the image.

flags:`

func runFlash(args []string) int {
	fs := flag.NewFlagSet("kubeboot flash", flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	fs.Usage = func() { fmt.Fprintln(os.Stderr, flashUsage); fs.PrintDefaults() }
	imagePath := fs.String("image", "", "raw image (out/node.raw) or compressed image (out/node.raw.zst)")
	device := fs.String("device", "", "whole disk to write, e.g. /dev/sdb")
	config := fs.String("config", "", "machine config to put in a CIDATA partition on the disk")
	yes := fs.Bool("yes", false, "do not ask before writing")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if *imagePath == "" || *device == "" || fs.NArg() > 0 {
		fs.Usage()
		return exitUsage
	}
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "kubeboot flash:", err)
		return exitFail
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// Everything is checked before the disk is touched: the config, the
	// image (a .zst read whole), the disk.
	var volume string
	var volumeSize int64
	if *config != "" {
		files, _, err := seedFiles("kubeboot flash", *config, "", nil, "")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return exitFail
		}
		work, err := os.MkdirTemp("", "kubeboot-flash-")
		if err != nil {
			return fail(err)
		}
		defer os.RemoveAll(work)
		volume = filepath.Join(work, "cidata.img")
		if err := cidata.Write(ctx, volume, files, cidata.Options{Format: cidata.FAT, SourceDateEpoch: sourceDateEpoch()}); err != nil {
			return fail(fmt.Errorf("--config: %w", err))
		}
		st, err := os.Stat(volume)
		if err != nil {
			return fail(err)
		}
		volumeSize = flash.CIDATASpace(st.Size())
	}
	img, err := flash.Open(*imagePath)
	if err != nil {
		return fail(err)
	}
	dev, err := flash.Inspect(*device, "", "")
	if err != nil {
		return fail(err)
	}
	if err := flash.CheckFits(img, dev, volumeSize); err != nil {
		return fail(err)
	}
	if !*yes {
		if !term.IsTerminal(int(os.Stdin.Fd())) {
			fmt.Fprintln(os.Stderr, "kubeboot flash: stdin is not a terminal, so there is no one to ask; pass --yes to write without asking")
			return exitUsage
		}
		ok, err := confirm(os.Stdin, os.Stderr, fmt.Sprintf("Write %s (%s, %s to send) to %s? Everything on %s is lost.", img.Path, flash.HumanBytes(img.Size), flash.HumanBytes(img.Stored), dev, dev.Path))
		if err != nil {
			return fail(err)
		}
		if !ok {
			fmt.Fprintln(os.Stderr, "kubeboot flash: not confirmed; nothing was written")
			return exitFail
		}
	}

	start := time.Now()
	res, err := flash.Write(ctx, img, dev, progress.For(os.Stderr))
	if err != nil {
		return fail(err)
	}
	zeroed := "with the disk's write-zeroes"
	if dev.DiscardZeroes {
		zeroed = "discarded: the loop device's file stays sparse"
	} else if !dev.WriteZeroes {
		zeroed = fmt.Sprintf("%s of it written as zeros over old data", flash.HumanBytes(res.ZeroWritten))
	}
	fmt.Printf("flashed %s to %s in %s: %s of data written, %s of zeros (%s); read back: chunked sha256 %s\n",
		img.Path, dev.Path, time.Since(start).Round(100*time.Millisecond), flash.HumanBytes(res.Data), flash.HumanBytes(res.Zeroed), zeroed, res.Digest)
	if volume != "" {
		if err := flash.AddCIDATA(ctx, dev, img.Size, volume); err != nil {
			return fail(fmt.Errorf("the image is on %s, but its machine config is not: %w", dev.Path, err))
		}
		fmt.Printf("added partition %s (label %s) at the end of %s with the machine config %s\n", flash.CIDATAPartitionName, cidata.Label, dev.Path, *config)
	}
	return exitOK
}

// confirm asks question on w and reads y or yes (any case) from r; anything
// else, an empty line included, is no.
func confirm(r io.Reader, w io.Writer, question string) (bool, error) {
	fmt.Fprintf(w, "%s [y/N] ", question)
	line, err := bufio.NewReader(io.LimitReader(r, 256)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return false, err
	}
	a := strings.ToLower(strings.TrimSpace(line))
	return a == "y" || a == "yes", nil
}
