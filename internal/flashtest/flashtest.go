// Package flashtest makes what kubeboot flash tests write: a small sparse
// GPT image shaped like a node image (an ESP, and STATE of type
// linux-generic as systemd-repart finds it), and loop devices over files
// holding old data, detached when the test ends.
package flashtest

import (
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"kubeboot.dev/kubeboot/internal/netnstest"
)

// MiB is a mebibyte.
const MiB = 1 << 20

// ImageSize is the apparent size of Image's image: STATE must be at least
// 1 GiB for systemd-repart (overlays/usr/lib/kubeboot/repart.d).
const ImageSize = 1100 * MiB

// NeedRoot skips the test unless it runs as root with the tools.
func NeedRoot(tb testing.TB, tools ...string) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root: loop devices")
	}
	for _, tool := range append([]string{"losetup", "sfdisk"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			tb.Skipf("%s not installed (scripts/setup-host.sh installs it)", tool)
		}
	}
}

// WriteRandom writes n random bytes at off of the file at path.
func WriteRandom(tb testing.TB, path string, off, n int64) {
	tb.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	rand.Read(b)
	if _, err := f.WriteAt(b, off); err != nil {
		tb.Fatal(err)
	}
}

// Image writes dir/node.raw: ImageSize bytes, a GPT with ESP (16 MiB,
// some data) and STATE (the rest, data at its start and in its middle),
// everything else holes.
func Image(tb testing.TB, dir string) string {
	tb.Helper()
	p := filepath.Join(dir, "node.raw")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		tb.Fatal(err)
	}
	if err := os.Truncate(p, ImageSize); err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command("sfdisk", "--quiet", p)
	cmd.Stdin = strings.NewReader("label: gpt\nstart=2048, size=32768, type=uefi, name=ESP\nstart=34816, type=linux, name=STATE\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("sfdisk: %v\n%s", err, out)
	}
	WriteRandom(tb, p, 1*MiB, 5*MiB)       // ESP
	WriteRandom(tb, p, 17*MiB, 3*MiB+4096) // STATE's start, ending off a chunk boundary
	WriteRandom(tb, p, 600*MiB, 8*MiB)     // STATE's middle
	return p
}

// Loop attaches a loop device (with partition scanning) to a new file of
// size bytes in dir whose every 64 MiB starts with 4 MiB of old data, and
// returns the device and the file. It is detached when the test ends.
func Loop(tb testing.TB, dir string, size int64) (dev, backing string) {
	tb.Helper()
	f, err := os.CreateTemp(dir, "disk-*.img")
	if err != nil {
		tb.Fatal(err)
	}
	backing = f.Name()
	f.Close()
	if err := os.Truncate(backing, size); err != nil {
		tb.Fatal(err)
	}
	for off := int64(0); off+4*MiB <= size; off += 64 * MiB {
		WriteRandom(tb, backing, off, 4*MiB)
	}
	dev = strings.TrimSpace(netnstest.Run(tb, "losetup", "--find", "--show", "--partscan", backing))
	tb.Cleanup(func() {
		if out, err := exec.Command("losetup", "--detach", dev).CombinedOutput(); err != nil {
			tb.Errorf("losetup --detach %s: %v\n%s", dev, err, out)
		}
	})
	return dev, backing
}
