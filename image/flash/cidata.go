package flash

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"
)

// The machine config of --config goes into a NoCloud volume (FAT, label
// CIDATA, made by image/cidata as kubeboot cidata makes it) in a GPT
// partition of its own at the end of the disk, after the image, where
// bootstrapd finds it as it finds a CIDATA disk. The partition has the
// type of a data partition, not Linux's: systemd-repart, which grows STATE
// on the first boot, leaves partitions it has no definition for alone, and
// grows STATE up to it.
const (
	// CIDATAPartitionType is "Microsoft basic data", what FAT data
	// partitions carry.
	CIDATAPartitionType = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
	CIDATAPartitionName = "CIDATA"
	align               = 1 << 20
	// gptBackup is the backup GPT at the end of a disk: 32 sectors of
	// entries and the header.
	gptBackup = 33 * 512
)

// CIDATASpace is what a volume of size bytes needs after the image.
func CIDATASpace(size int64) int64 {
	return roundUp(size, align) + align + gptBackup
}

func roundUp(n, to int64) int64 { return (n + to - 1) / to * to }

// AddCIDATA moves the backup GPT to the end of dev, adds a partition named
// CIDATA at the end of the disk holding the volume (a file), writes the
// volume there and reads it back. imageSize is the flashed image's size:
// the partition must start after it.
func AddCIDATA(ctx context.Context, dev *Device, imageSize int64, volume string) error {
	vol, err := os.ReadFile(volume)
	if err != nil {
		return err
	}
	size := roundUp(int64(len(vol)), align)
	start := (dev.Size - gptBackup - size) / align * align
	if start < roundUp(imageSize, align) {
		return fmt.Errorf("%s has no room for the CIDATA partition after the image: it needs %s more than the image's %s", dev.Path, HumanBytes(CIDATASpace(int64(len(vol)))), HumanBytes(imageSize))
	}
	sfdisk := func(stdin string, args ...string) error {
		cmd := exec.CommandContext(ctx, "sfdisk", append([]string{"--no-reread", "--no-tell-kernel", "--quiet"}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("sfdisk %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
		}
		return nil
	}
	if err := sfdisk("", "--relocate", "gpt-bak-std", dev.Path); err != nil {
		return err
	}
	if err := sfdisk(fmt.Sprintf("start=%d, size=%d, type=%s, name=%s\n", start/512, size/512, CIDATAPartitionType, CIDATAPartitionName), "--append", dev.Path); err != nil {
		return err
	}

	fd, err := unix.Open(dev.Path, unix.O_RDWR|unix.O_EXCL|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", dev.Path, err)
	}
	defer unix.Close(fd)
	buf, err := alignedBuffer(int(size))
	if err != nil {
		return err
	}
	defer unix.Munmap(buf)
	copy(buf, vol)
	clear(buf[len(vol):])
	want := sha256.Sum256(buf)
	if err := pwriteAll(fd, buf, start); err != nil {
		return fmt.Errorf("write the CIDATA partition of %s: %w", dev.Path, err)
	}
	if err := unix.Fsync(fd); err != nil {
		return err
	}
	clear(buf)
	if err := preadAll(fd, buf, start); err != nil {
		return fmt.Errorf("read back the CIDATA partition of %s: %w", dev.Path, err)
	}
	if sha256.Sum256(buf) != want {
		return fmt.Errorf("the CIDATA partition of %s reads back other data than was written", dev.Path)
	}
	// Let the kernel see the new table; a loop device without partition
	// scanning refuses, which changes nothing on the disk.
	_ = unix.IoctlSetInt(fd, unix.BLKRRPART, 0)
	return nil
}
