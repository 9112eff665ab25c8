package flash

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Device is a whole disk that may be flashed.
type Device struct {
	Path  string // as given, e.g. /dev/sdb
	Name  string // the kernel's name, e.g. sdb
	Size  int64
	Model string // "" when the kernel has none (loop, virtio)
	// LogicalBlock is the device's sector size: O_DIRECT I/O is aligned to it.
	LogicalBlock int64
	// WriteZeroes says the device zeroes ranges without being sent the
	// zeros (REQ_OP_WRITE_ZEROES: NVMe, SCSI WRITE SAME, virtio-blk, loop).
	WriteZeroes bool
	// DiscardZeroes says a discarded range reads as zeros: a loop device
	// over a file punches a hole, so the file stays sparse (its
	// write-zeroes allocates the range).
	DiscardZeroes bool
}

func (d *Device) String() string {
	s := fmt.Sprintf("%s (%s", d.Path, HumanBytes(d.Size))
	if d.Model != "" {
		s += ", " + d.Model
	}
	return s + ")"
}

// Inspect checks that path is a whole disk nothing on this machine uses:
// not a partition, not read-only, not the disk holding /, none of its
// partitions mounted, used as swap or held by another device (device
// mapper, LVM, md). sys and proc are sysfs and procfs ("" for /sys, /proc).
func Inspect(path, sys, proc string) (*Device, error) {
	sys, proc = orDefault(sys, "/sys"), orDefault(proc, "/proc")
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nil, fmt.Errorf("device %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return nil, fmt.Errorf("%s is not a block device; flash writes whole disks such as /dev/sdb (for a VM disk file, use out/node.qcow2 or qemu-img convert)", path)
	}
	dev := devNumber(st.Rdev)
	sysDir, err := filepath.EvalSymlinks(filepath.Join(sys, "dev/block", dev))
	if err != nil {
		return nil, fmt.Errorf("%s: no sysfs entry for block device %s: %w", path, dev, err)
	}
	d := &Device{Path: path, Name: filepath.Base(sysDir)}
	if exists(filepath.Join(sysDir, "partition")) {
		parent := filepath.Base(filepath.Dir(sysDir))
		return nil, fmt.Errorf("%s is a partition of /dev/%s; flash writes the whole disk: --device /dev/%s", path, parent, parent)
	}
	if readSys(sysDir, "ro") == "1" {
		return nil, fmt.Errorf("%s is read-only (a write-protect switch?)", path)
	}
	sectors, err := strconv.ParseInt(readSys(sysDir, "size"), 10, 64)
	if err != nil || sectors == 0 {
		return nil, fmt.Errorf("%s has no medium (size 0)", path)
	}
	d.Size = sectors * 512
	d.LogicalBlock, _ = strconv.ParseInt(readSys(sysDir, "queue/logical_block_size"), 10, 64)
	if d.LogicalBlock <= 0 {
		d.LogicalBlock = 512
	}
	wz, _ := strconv.ParseInt(readSys(sysDir, "queue/write_zeroes_max_bytes"), 10, 64)
	d.WriteZeroes = wz > 0
	discard, _ := strconv.ParseInt(readSys(sysDir, "queue/discard_max_bytes"), 10, 64)
	d.DiscardZeroes = discard > 0 && readSys(sysDir, "loop/backing_file") != ""
	d.Model = strings.TrimSpace(strings.TrimSpace(readSys(sysDir, "device/vendor")) + " " + strings.TrimSpace(readSys(sysDir, "device/model")))

	// The disk and its partitions: kernel names and device numbers.
	names := []string{d.Name}
	nums := []string{dev}
	entries, _ := os.ReadDir(sysDir)
	for _, e := range entries {
		if exists(filepath.Join(sysDir, e.Name(), "partition")) {
			names = append(names, e.Name())
			nums = append(nums, readSys(sysDir, e.Name()+"/dev"))
		}
	}

	rootDisks, err := disksUnderRoot(sys, proc)
	if err != nil {
		return nil, err
	}
	if slices.Contains(rootDisks, d.Name) {
		return nil, fmt.Errorf("%s holds / of this machine; flash would destroy the running system", path)
	}
	mounts, err := mountsOf(proc, names, nums)
	if err != nil {
		return nil, err
	}
	if len(mounts) > 0 {
		return nil, fmt.Errorf("%s is in use: %s mounted at %s; unmount it first (umount %s)", path, mounts[0].source, mounts[0].point, mounts[0].point)
	}
	if sw := swapsOf(proc, names); sw != "" {
		return nil, fmt.Errorf("%s is in use: %s is active swap; swapoff %s first", path, sw, sw)
	}
	for _, n := range names {
		dir := sysDir
		if n != d.Name {
			dir = filepath.Join(sysDir, n)
		}
		if hs, _ := os.ReadDir(filepath.Join(dir, "holders")); len(hs) > 0 {
			return nil, fmt.Errorf("%s is in use: /dev/%s is held by /dev/%s (device mapper, LVM, RAID or crypt); stop that first", path, n, hs[0].Name())
		}
	}
	return d, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func devNumber(rdev uint64) string {
	return fmt.Sprintf("%d:%d", unix.Major(rdev), unix.Minor(rdev))
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func readSys(dir, name string) string {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

type mount struct{ source, point string }

// mountinfoFields are a /proc/self/mountinfo line's device number, mount
// point and source (proc(5)); fields are octal-escaped.
func mountinfoFields(line string) (dev, point, source string, ok bool) {
	pre, post, found := strings.Cut(line, " - ")
	f, g := strings.Fields(pre), strings.Fields(post)
	if !found || len(f) < 5 || len(g) < 2 {
		return "", "", "", false
	}
	return f[2], unescape(f[4]), unescape(g[1]), true
}

func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mountsOf lists the mounts of the devices by number or by source path
// (btrfs reports an anonymous device number).
func mountsOf(proc string, names, nums []string) ([]mount, error) {
	f, err := os.Open(filepath.Join(proc, "self/mountinfo"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mount
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		dev, point, source, ok := mountinfoFields(sc.Text())
		if !ok {
			continue
		}
		if slices.Contains(nums, dev) || slices.Contains(names, kernelName(source)) {
			out = append(out, mount{source, point})
		}
	}
	return out, sc.Err()
}

// kernelName is the kernel name of a /dev path (links resolved), or "".
func kernelName(p string) string {
	if !strings.HasPrefix(p, "/dev/") {
		return ""
	}
	if r, err := filepath.EvalSymlinks(p); err == nil {
		p = r
	}
	return strings.TrimPrefix(p, "/dev/")
}

func swapsOf(proc string, names []string) string {
	b, err := os.ReadFile(filepath.Join(proc, "swaps"))
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(b), "\n")[1:] {
		if f := strings.Fields(l); len(f) > 0 && slices.Contains(names, kernelName(unescape(f[0]))) {
			return f[0]
		}
	}
	return ""
}

// disksUnderRoot are the whole disks beneath the file system mounted on /:
// its device, through device-mapper and md slaves, up to the disks.
func disksUnderRoot(sys, proc string) ([]string, error) {
	f, err := os.Open(filepath.Join(proc, "self/mountinfo"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var rootDev string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if dev, point, _, ok := mountinfoFields(sc.Text()); ok && point == "/" {
			rootDev = dev // the last mount on / is the one in effect
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	var disks []string
	var walk func(dir string, depth int)
	walk = func(dir string, depth int) {
		if depth > 8 {
			return
		}
		if exists(filepath.Join(dir, "partition")) {
			dir = filepath.Dir(dir)
		}
		slaves, _ := os.ReadDir(filepath.Join(dir, "slaves"))
		if len(slaves) == 0 {
			disks = append(disks, filepath.Base(dir))
			return
		}
		for _, s := range slaves {
			if r, err := filepath.EvalSymlinks(filepath.Join(dir, "slaves", s.Name())); err == nil {
				walk(r, depth+1)
			}
		}
	}
	if dir, err := filepath.EvalSymlinks(filepath.Join(sys, "dev/block", rootDev)); err == nil {
		walk(dir, 0)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	return disks, nil
}

// HumanBytes is n in GiB, MiB or bytes.
func HumanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d bytes", n)
}
