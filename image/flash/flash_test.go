package flash_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"kubeboot.dev/kubeboot/bootstrapd/source"
	"kubeboot.dev/kubeboot/image/cidata"
	"kubeboot.dev/kubeboot/image/flash"
	"kubeboot.dev/kubeboot/image/progress"
	. "kubeboot.dev/kubeboot/internal/flashtest"
	"kubeboot.dev/kubeboot/internal/netnstest"
)

// fileSHA256 is the sha256 of the first n bytes of the file at p.
func fileSHA256(t *testing.T, p string, n int64) [32]byte {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyN(h, f, n); err != nil {
		t.Fatal(err)
	}
	return [32]byte(h.Sum(nil))
}

// headerFrame is the size of the raw.zst's header frame: magic, length
// and the five lines of the header.
const headerFrame = 8 + 236

func compress(t *testing.T, raw string) string {
	t.Helper()
	zst := raw + ".zst"
	if _, err := flash.Compress(context.Background(), raw, zst); err != nil {
		t.Fatal(err)
	}
	return zst
}

// The compressed image: what zstd decompresses is the raw; a truncated or
// changed file is refused by Open, before any device is touched.
func TestCompressedImage(t *testing.T) {
	if _, err := exec.LookPath("sfdisk"); err != nil {
		t.Skip("sfdisk not installed")
	}
	dir := t.TempDir()
	raw := Image(t, dir)
	zst := compress(t, raw)
	img, err := flash.Open(zst)
	if err != nil {
		t.Fatal(err)
	}
	if img.Size != ImageSize || !img.Compressed || img.Stored > 20*MiB {
		t.Errorf("Open = %+v: want the raw's size and a compressed file under 20 MiB", img)
	}
	if _, err := exec.LookPath("zstd"); err == nil {
		out := filepath.Join(dir, "plain.raw")
		netnstest.Run(t, "zstd", "-q", "-d", zst, "-o", out)
		if fileSHA256(t, out, ImageSize) != fileSHA256(t, raw, ImageSize) {
			t.Error("zstd -d does not give the raw image back")
		}
	}

	data, err := os.ReadFile(zst)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"truncated", data[:len(data)-1000], "is truncated"},
		{"corrupt", flip(data, len(data)/2), "is corrupt"},
		{"appended to", append(bytes.Clone(data), "more"...), "bytes after the compressed image"},
		{"header damaged", flip(data, 40), "header is damaged"},
		{"no header", data[headerFrame:], "not a kubeboot raw.zst"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "bad.raw.zst")
			if err := os.WriteFile(p, tc.data, 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := flash.Open(p); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Open: %v, want %q", err, tc.want)
			}
		})
	}
}

func flip(data []byte, i int) []byte {
	d := bytes.Clone(data)
	d[i] ^= 0x55
	return d
}

// TestFlash writes the raw and the compressed image onto loop devices over
// files full of old data, with the device's discard (a hole punched in the
// file), its write-zeroes, and with zeros written only over old data: each
// time the device reads back as the image, and discard keeps the file sparse.
func TestFlash(t *testing.T) {
	NeedRoot(t)
	dir := t.TempDir()
	raw := Image(t, dir)
	zst := compress(t, raw)
	want := fileSHA256(t, raw, ImageSize)
	for _, path := range []string{raw, zst} {
		for _, mode := range []string{"discard", "write-zeroes", "zeros written"} {
			writeZeroes, discard := mode != "zeros written", mode == "discard"
			name := filepath.Base(path) + " " + mode
			t.Run(name, func(t *testing.T) {
				dev, backing := Loop(t, t.TempDir(), ImageSize+64*MiB)
				d, err := flash.Inspect(dev, "", "")
				if err != nil {
					t.Fatal(err)
				}
				if writeZeroes && !d.WriteZeroes {
					t.Skipf("%s has no write-zeroes on this kernel", dev)
				}
				if !d.DiscardZeroes {
					t.Errorf("%s: a loop device's discard punches holes, but DiscardZeroes is false", dev)
				}
				// Discard (the default on a loop device), write-zeroes,
				// or zeros written over old data.
				d.DiscardZeroes = writeZeroes && discard
				d.WriteZeroes = writeZeroes
				img, err := flash.Open(path)
				if err != nil {
					t.Fatal(err)
				}
				res, err := flash.Write(context.Background(), img, d, progress.Discard)
				if err != nil {
					t.Fatal(err)
				}
				if got := fileSHA256(t, backing, ImageSize); got != want {
					t.Errorf("the device does not hold the image")
				}
				if st, err := os.Stat(backing); err == nil && discard && st.Sys().(*syscall.Stat_t).Blocks*512 > 64*MiB {
					t.Errorf("after discard the disk's file holds %d bytes, want the image's data only", st.Sys().(*syscall.Stat_t).Blocks*512)
				}
				// Only the 64 KiB blocks with data are written: the GPT, the
				// ESP's 5 MiB, STATE's 3 MiB + 4 KiB and 8 MiB, the backup GPT.
				if res.Data > 17*MiB {
					t.Errorf("wrote %d bytes of data, want at most 17 MiB", res.Data)
				}
				if res.Data+res.Zeroed != ImageSize {
					t.Errorf("data %d + zeroed %d != image size %d", res.Data, res.Zeroed, int64(ImageSize))
				}
				// The old data under the image's zero ranges (4 MiB every
				// 64 MiB, minus what the image's data covers) was zeroed.
				if !writeZeroes && (res.ZeroWritten < 8*MiB || res.ZeroWritten > 80*MiB) {
					t.Errorf("wrote %d bytes of zeros, want the old data's chunks only", res.ZeroWritten)
				}
			})
		}
	}
}

// A compressed image whose header matches its damaged stream (a file
// rewritten by someone) passes Open but fails the write: the device is
// reported as not flashed.
func TestFlashDamagedStream(t *testing.T) {
	NeedRoot(t)
	dir := t.TempDir()
	raw := Image(t, dir)
	// The same image with other data in STATE, under the first one's header.
	zst := compress(t, raw)
	if err := os.Rename(zst, zst+".first"); err != nil {
		t.Fatal(err)
	}
	zst += ".first"
	WriteRandom(t, raw, 600*MiB, MiB)
	other := compress(t, raw)
	a, _ := os.ReadFile(zst)
	b, _ := os.ReadFile(other)
	forged := filepath.Join(dir, "forged.raw.zst")
	// other's header except raw-sha256, which is zst's.
	hdr := bytes.Clone(b[:headerFrame])
	i := bytes.Index(hdr, []byte("raw-sha256 ")) + len("raw-sha256 ")
	copy(hdr[i:i+64], a[i:i+64])
	if err := os.WriteFile(forged, append(hdr, b[headerFrame:]...), 0o644); err != nil {
		t.Fatal(err)
	}
	img, err := flash.Open(forged)
	if err != nil {
		t.Fatal(err)
	}
	dev, _ := Loop(t, t.TempDir(), ImageSize+64*MiB)
	d, err := flash.Inspect(dev, "", "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = flash.Write(context.Background(), img, d, progress.Discard)
	var nf *flash.NotFlashed
	if !errors.As(err, &nf) || !strings.Contains(err.Error(), "sha256 is not the one in its header") || !strings.Contains(err.Error(), dev+" is NOT flashed") {
		t.Errorf("Write: %v, want a not-flashed error naming the header's sha256", err)
	}
}

// Inspect refuses what must not be written.
func TestInspectRefuses(t *testing.T) {
	NeedRoot(t, "mkfs.ext4", "partx")
	dir := t.TempDir()
	raw := Image(t, dir)
	dev, _ := Loop(t, dir, ImageSize+64*MiB)
	img, _ := flash.Open(raw)
	if _, err := flash.Inspect(raw, "", ""); err == nil || !strings.Contains(err.Error(), "is not a block device") {
		t.Errorf("a file: %v", err)
	}
	// The image's table on the device, its first partition formatted and mounted.
	d, err := flash.Inspect(dev, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := flash.Write(context.Background(), img, d, progress.Discard); err != nil {
		t.Fatal(err)
	}
	netnstest.Run(t, "partx", "--update", dev)
	part := dev + "p1"
	if _, err := flash.Inspect(part, "", ""); err == nil || !strings.Contains(err.Error(), "is a partition of "+dev+"; flash writes the whole disk: --device "+dev) {
		t.Errorf("a partition: %v", err)
	}
	netnstest.Run(t, "mkfs.ext4", "-q", part)
	mnt := t.TempDir()
	netnstest.Run(t, "mount", part, mnt)
	defer netnstest.Run(t, "umount", mnt)
	if _, err := flash.Inspect(dev, "", ""); err == nil || !strings.Contains(err.Error(), part+" mounted at "+mnt) {
		t.Errorf("a disk with a mounted partition: %v", err)
	}
	// The kernel's exclusive claim backs this up should a mount appear
	// after Inspect.
	if _, err := flash.Write(context.Background(), img, d, progress.Discard); err == nil || !strings.Contains(err.Error(), "is in use") {
		t.Errorf("Write onto a disk with a mounted partition: %v", err)
	}
	small, _ := Loop(t, dir, 512*MiB)
	sd, err := flash.Inspect(small, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := flash.CheckFits(img, sd, 0); err == nil || !strings.Contains(err.Error(), "needs 1.1 GiB, "+small+" has 512.0 MiB") {
		t.Errorf("a disk smaller than the image: %v", err)
	}
}

// The disk under / is refused (this machine's own; nothing is written).
func TestInspectRefusesTheRootDisk(t *testing.T) {
	NeedRoot(t)
	root := rootDisk(t)
	if _, err := flash.Inspect(root, "", ""); err == nil || !strings.Contains(err.Error(), "holds / of this machine") {
		t.Errorf("Inspect(%s), the disk under /: %v", root, err)
	}
}

// rootDisk is the whole disk under / per lsblk, or skips.
func rootDisk(t *testing.T) string {
	out, err := exec.Command("findmnt", "--noheadings", "--output", "SOURCE", "--target", "/").Output()
	src := strings.TrimSpace(string(out))
	if err != nil || !strings.HasPrefix(src, "/dev/") {
		t.Skipf("/ is not on a block device here (%q)", src)
	}
	out, err = exec.Command("lsblk", "--noheadings", "--inverse", "--list", "--output", "NAME,TYPE", src).Output()
	if err != nil {
		t.Skipf("lsblk %s: %v", src, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[1] == "disk" {
			return "/dev/" + f[0]
		}
	}
	t.Skipf("no disk under %s", src)
	return ""
}

// TestCIDATAPartition adds the config partition after a flashed image: the
// table verifies, bootstrapd's NoCloud reader reads the config from the
// partition, and systemd-repart with the node's definitions grows STATE up
// to the partition and leaves it alone.
func TestCIDATAPartition(t *testing.T) {
	NeedRoot(t, "mkfs.vfat", "mcopy")
	dir := t.TempDir()
	raw := Image(t, dir)
	img, _ := flash.Open(raw)
	dev, backing := Loop(t, dir, ImageSize+512*MiB)
	d, err := flash.Inspect(dev, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := flash.Write(context.Background(), img, d, progress.Discard); err != nil {
		t.Fatal(err)
	}
	userData := "apiVersion: kubeboot.dev/v1alpha1\nkind: MachineConfig\nrole: init\nhostname: n1.example.com\n" +
		"kubernetes:\n  version: v1.37.2\n  controlPlaneEndpoint: n1.example.com:6443\n"
	vol := filepath.Join(dir, "seed.img")
	if err := cidata.Write(context.Background(), vol, map[string][]byte{"user-data": []byte(userData), "meta-data": []byte("instance-id: i-1\n")}, cidata.Options{Format: cidata.FAT}); err != nil {
		t.Fatal(err)
	}
	if err := flash.AddCIDATA(context.Background(), d, img.Size, vol); err != nil {
		t.Fatal(err)
	}
	netnstest.Run(t, "sfdisk", "--verify", dev)
	parts := table(t, dev)
	if len(parts) != 3 || parts[2].Name != "CIDATA" || parts[2].Type != flash.CIDATAPartitionType {
		t.Fatalf("partitions %+v: want ESP, STATE and CIDATA", parts)
	}
	c := parts[2]
	if end := (c.Start + c.Size) * 512; end > d.Size-33*512 || c.Start*512 < ImageSize {
		t.Errorf("CIDATA at sectors %d+%d: want between the image and the backup GPT", c.Start, c.Size)
	}
	// bootstrapd's reader on the partition's bytes.
	part := filepath.Join(dir, "cidata.part")
	netnstest.Run(t, "dd", "if="+backing, "of="+part, "bs=512", "skip="+itoa(c.Start), "count="+itoa(c.Size), "status=none")
	res, err := source.ReadNoCloud(part)
	if err != nil {
		t.Fatal(err)
	}
	if res.Config.Hostname != "n1.example.com" || res.InstanceID != "i-1" {
		t.Errorf("ReadNoCloud: hostname %q, instance id %q", res.Config.Hostname, res.InstanceID)
	}

	if _, err := exec.LookPath("systemd-repart"); err != nil {
		t.Skip("systemd-repart not installed: the growth of STATE up to CIDATA is not checked")
	}
	before := fileSHA256(t, part, c.Size*512)
	netnstest.Run(t, "systemd-repart", "--dry-run=no", "--no-pager", "--definitions=../../overlays/usr/lib/kubeboot/repart.d", dev)
	after := table(t, dev)
	if len(after) != 3 || after[2] != c {
		t.Fatalf("after repart: %+v, want CIDATA unchanged %+v", after, c)
	}
	if s := after[1]; s.Name != "STATE" || (s.Start+s.Size)*512 < c.Start*512-2*MiB || s.Start+s.Size > c.Start {
		t.Errorf("STATE after repart ends at sector %d, want it grown up to CIDATA at %d", s.Start+s.Size, c.Start)
	}
	netnstest.Run(t, "dd", "if="+backing, "of="+part, "bs=512", "skip="+itoa(c.Start), "count="+itoa(c.Size), "status=none")
	if fileSHA256(t, part, c.Size*512) != before {
		t.Error("repart changed the CIDATA partition's contents")
	}
}

type partition struct {
	Start, Size int64
	Type, Name  string
}

func table(t *testing.T, dev string) []partition {
	t.Helper()
	var pt struct {
		PartitionTable struct{ Partitions []partition }
	}
	if err := json.Unmarshal([]byte(netnstest.Run(t, "sfdisk", "--json", dev)), &pt); err != nil {
		t.Fatal(err)
	}
	return pt.PartitionTable.Partitions
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
