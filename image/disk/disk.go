// Package disk writes the node's GPT disk image: the partition table with
// GUIDs derived from a seed (so two builds of the same inputs are
// byte-identical) and each partition's prepared contents.
package disk

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/google/uuid"
	"golang.org/x/sys/unix"
)

// Partition type GUIDs used by the node image.
const (
	// TypeESP is the EFI System Partition.
	TypeESP = gpt.EFISystemPartition
	// TypeRootX86_64 is the Discoverable Partitions root type for x86-64.
	TypeRootX86_64 = gpt.LinuxRootX86_64
	// TypeLinuxData is the generic Linux data type (STATE).
	TypeLinuxData = gpt.LinuxFilesystem
)

const (
	sectorSize = 512
	// MiB is the alignment of every partition start and size.
	MiB = 1 << 20
	// gptReserve is room for the backup GPT (header + 128 entries) at the end.
	gptReserve = 33 * sectorSize
)

// Partition is one GPT entry.
type Partition struct {
	Name     string   // GPT partition name (PARTLABEL), at most 36 characters
	Type     gpt.Type // type GUID
	Size     int64    // bytes, a multiple of MiB
	Contents string   // file copied to the start of the partition; "" leaves it zeroed
}

// Layout is the whole disk.
type Layout struct {
	// Seed makes the disk and partition GUIDs: same seed, same GUIDs.
	Seed string
	// Partitions in disk order, starting at 1 MiB; the backup GPT follows
	// the last one.
	Partitions []Partition
}

// GUID derives a stable GUID for name from seed (an RFC 4122 name-based
// UUID over SHA-256, version bits set as for version 5).
func GUID(seed, name string) string {
	sum := sha256.Sum256([]byte("kubeboot-gpt\x00" + seed + "\x00" + name))
	var u uuid.UUID
	copy(u[:], sum[:16])
	u[6] = (u[6] & 0x0f) | 0x50
	u[8] = (u[8] & 0x3f) | 0x80
	return u.String()
}

// Size is the byte size of the disk that l describes.
func (l Layout) Size() int64 {
	total := int64(MiB) // GPT header and entries, aligned
	for _, p := range l.Partitions {
		total += p.Size
	}
	return total + MiB // backup GPT, aligned
}

// Write creates the disk image at path (which must not exist) and fills it.
// Unwritten areas stay sparse.
func Write(path string, l Layout) (err error) {
	if len(l.Partitions) == 0 {
		return errors.New("disk layout has no partitions")
	}
	table := &gpt.Table{
		LogicalSectorSize:  sectorSize,
		PhysicalSectorSize: sectorSize,
		ProtectiveMBR:      true,
		GUID:               GUID(l.Seed, "disk"),
	}
	start := int64(MiB)
	for i, p := range l.Partitions {
		if p.Size <= 0 || p.Size%MiB != 0 {
			return fmt.Errorf("partition %d (%s): size %d is not a positive multiple of 1 MiB", i+1, p.Name, p.Size)
		}
		if len([]rune(p.Name)) > 36 {
			return fmt.Errorf("partition %d: name %q is longer than 36 characters", i+1, p.Name)
		}
		table.Partitions = append(table.Partitions, &gpt.Partition{
			Index: i + 1,
			Start: uint64(start / sectorSize),
			End:   uint64((start+p.Size)/sectorSize - 1),
			Size:  uint64(p.Size),
			Type:  p.Type,
			Name:  p.Name,
			GUID:  GUID(l.Seed, "partition\x00"+p.Name),
		})
		start += p.Size
	}
	size := l.Size()

	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("create disk image: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("close disk image %s: %w", path, cerr)
		}
	}()
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("size disk image %s to %d bytes: %w", path, size, err)
	}
	if err := table.Write(f, size); err != nil {
		return fmt.Errorf("write GPT to %s: %w", path, err)
	}
	start = MiB
	for i, p := range l.Partitions {
		if p.Contents != "" {
			if err := copyInto(f, start, p.Size, p.Contents); err != nil {
				return fmt.Errorf("partition %d (%s): %w", i+1, p.Name, err)
			}
		}
		start += p.Size
	}
	return nil
}

// copyInto copies the file src to offset off of f, refusing more than limit bytes.
func copyInto(f *os.File, off, limit int64, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("open contents: %w", err)
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	if st.Size() > limit {
		return fmt.Errorf("contents %s are %d bytes, larger than the partition (%d bytes): raise the partition size", src, st.Size(), limit)
	}
	// Only the source's data extents are read (SEEK_DATA/SEEK_HOLE: STATE's
	// image is mostly holes), and 1 MiB chunks of zeros in them are skipped,
	// not written: the image file stays sparse there (the disk was
	// truncated to size, so they read as zeros).
	const chunk = 1 << 20
	buf, zero := make([]byte, chunk), make([]byte, chunk)
	fd, size := int(in.Fd()), st.Size()
	for done := int64(0); done < size; {
		data, err := unix.Seek(fd, done, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			return nil // only a hole is left
		}
		if err != nil {
			return fmt.Errorf("copy %s: %w", src, err)
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("copy %s: %w", src, err)
		}
		for c := max(data&^(chunk-1), done); c < hole; c += chunk {
			n, err := in.ReadAt(buf[:min(chunk, size-c)], c)
			if err != nil && !(errors.Is(err, io.EOF) && n > 0) {
				return fmt.Errorf("copy %s: %w", src, err)
			}
			if !bytes.Equal(buf[:n], zero[:n]) {
				if _, err := f.WriteAt(buf[:n], off+c); err != nil {
					return fmt.Errorf("copy %s: %w", src, err)
				}
			}
			done = c + int64(n)
		}
	}
	return nil
}
