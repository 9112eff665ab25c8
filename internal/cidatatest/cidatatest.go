// Package cidatatest makes real NoCloud volumes for tests, with the tools
// users make them with (mkfs.vfat + mcopy, xorriso as cloud-localds runs
// it), and breaks them the way an attacker who controls the disk would:
// a FAT cluster chain that loops, an ISO9660 record claiming more bytes
// than the volume has.
package cidatatest

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// Need skips the test when a tool is missing.
func Need(tb testing.TB, tools ...string) {
	tb.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			tb.Skipf("%s not installed (scripts/setup-host.sh installs it)", tool)
		}
	}
}

func run(tb testing.TB, name string, args ...string) string {
	tb.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		tb.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// sortedNames lists a map's keys so that volumes are made in a fixed order.
func sortedNames(files map[string][]byte) []string {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// FAT makes a FAT volume labelled CIDATA of sizeKiB holding files; a name
// may hold directories ("sub/f"). bits is 12, 16 or 32, or 0 to let
// mkfs.vfat choose as `kubeboot cidata` does. FAT16 needs about 2.1 MiB and
// FAT32 about 33 MiB (the image is sparse).
func FAT(tb testing.TB, bits, sizeKiB int, files map[string][]byte) string {
	tb.Helper()
	Need(tb, "mkfs.vfat", "mcopy", "mmd")
	dir := tb.TempDir()
	img := filepath.Join(dir, "cidata.img")
	args := []string{"-n", "CIDATA", "-C", img, strconv.Itoa(sizeKiB)}
	if bits != 0 {
		args = append([]string{"-F", strconv.Itoa(bits), "-s", "1"}, args...)
	}
	run(tb, "mkfs.vfat", args...)
	made := map[string]bool{}
	for _, name := range sortedNames(files) {
		if d := filepath.Dir(name); d != "." && !made[d] {
			run(tb, "mmd", "-i", img, "::"+d)
			made[d] = true
		}
		src := filepath.Join(dir, "src")
		if err := os.WriteFile(src, files[name], 0o600); err != nil {
			tb.Fatal(err)
		}
		run(tb, "mcopy", "-i", img, src, "::"+name)
	}
	return img
}

var clusterRE = regexp.MustCompile(`<(\d+)[->]`)

// FirstCluster is the first cluster of a file on a FAT volume (mshowfat).
func FirstCluster(tb testing.TB, img, name string) uint32 {
	tb.Helper()
	Need(tb, "mshowfat")
	out := run(tb, "mshowfat", "-i", img, "::"+name)
	m := clusterRE.FindStringSubmatch(out)
	if m == nil {
		tb.Fatalf("mshowfat ::%s: no cluster in %q", name, out)
	}
	n, _ := strconv.ParseUint(m[1], 10, 32)
	return uint32(n)
}

// SetFAT writes value into the entry of cluster in every FAT of a volume
// made by FAT with the same bits.
func SetFAT(tb testing.TB, img string, bits int, cluster, value uint32) {
	tb.Helper()
	b, err := os.ReadFile(img)
	if err != nil {
		tb.Fatal(err)
	}
	sector := int(binary.LittleEndian.Uint16(b[11:]))
	reserved := int(binary.LittleEndian.Uint16(b[14:]))
	fats := int(b[16])
	fatSize := int(binary.LittleEndian.Uint16(b[22:]))
	if fatSize == 0 {
		fatSize = int(binary.LittleEndian.Uint32(b[36:]))
	}
	for i := range fats {
		fat := b[(reserved+i*fatSize)*sector:]
		switch bits {
		case 12:
			off := int(cluster + cluster/2)
			v := binary.LittleEndian.Uint16(fat[off:])
			if cluster%2 == 0 {
				v = v&0xF000 | uint16(value&0xFFF)
			} else {
				v = v&0x000F | uint16(value&0xFFF)<<4
			}
			binary.LittleEndian.PutUint16(fat[off:], v)
		case 16:
			binary.LittleEndian.PutUint16(fat[2*cluster:], uint16(value))
		case 32:
			binary.LittleEndian.PutUint32(fat[4*cluster:], value)
		default:
			tb.Fatalf("SetFAT: %d-bit FAT", bits)
		}
	}
	if err := os.WriteFile(img, b, 0o600); err != nil {
		tb.Fatal(err)
	}
}

// ISO makes an ISO9660 volume labelled cidata with Joliet and, when rock is
// set, Rock Ridge, as cloud-localds does (xorriso -as mkisofs -J -r),
// holding files and the symbolic links links (name -> target).
func ISO(tb testing.TB, rock bool, files map[string][]byte, links map[string]string) string {
	tb.Helper()
	Need(tb, "xorriso")
	dir := tb.TempDir()
	src := filepath.Join(dir, "src")
	for name, data := range files {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	for name, target := range links {
		if err := os.MkdirAll(src, 0o700); err != nil {
			tb.Fatal(err)
		}
		if err := os.Symlink(target, filepath.Join(src, name)); err != nil {
			tb.Fatal(err)
		}
	}
	img := filepath.Join(dir, "cidata.iso")
	args := []string{"-as", "mkisofs", "-quiet", "-V", "cidata", "-J", "-r"}
	if !rock {
		args = append(args, "--norock") // xorriso writes Rock Ridge unless told not to
	}
	run(tb, "xorriso", append(args, "-o", img, src)...)
	return img
}

// SetISOSize makes every directory record of the file whose content is
// content (in the ISO9660, Joliet and Rock Ridge views alike) claim size
// bytes. content must be unique in the image and start a block.
func SetISOSize(tb testing.TB, img string, content []byte, size uint32) {
	tb.Helper()
	patchISORecords(tb, img, content, func(rec []byte) {
		binary.LittleEndian.PutUint32(rec[10:], size)
		binary.BigEndian.PutUint32(rec[14:], size)
	})
}

// SetISOFlags sets the file flags byte of the same records (0x80: the file
// continues in another extent).
func SetISOFlags(tb testing.TB, img string, content []byte, flags byte) {
	tb.Helper()
	patchISORecords(tb, img, content, func(rec []byte) { rec[25] = flags })
}

// patchISORecords calls patch on every directory record whose extent holds
// content.
func patchISORecords(tb testing.TB, img string, content []byte, patch func(rec []byte)) {
	tb.Helper()
	b, err := os.ReadFile(img)
	if err != nil {
		tb.Fatal(err)
	}
	at := bytes.Index(b, content)
	if at < 0 || at%2048 != 0 {
		tb.Fatalf("content not found at a block start (offset %d)", at)
	}
	// A record holds the extent as both-endian 32-bit values at offset 2.
	var ext [8]byte
	binary.LittleEndian.PutUint32(ext[:4], uint32(at/2048))
	binary.BigEndian.PutUint32(ext[4:], uint32(at/2048))
	patched := 0
	for i := 0; ; {
		j := bytes.Index(b[i:], ext[:])
		if j < 0 {
			break
		}
		rec := i + j - 2
		i += j + 1
		if rec < 0 || int(b[rec]) < 34 {
			continue
		}
		patch(b[rec : rec+34])
		patched++
	}
	if patched == 0 {
		tb.Fatal("no directory record found")
	}
	if err := os.WriteFile(img, b, 0o600); err != nil {
		tb.Fatal(err)
	}
}
