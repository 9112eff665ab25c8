package volume

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzReadFile reads the NoCloud files from arbitrary volumes. No input may
// panic, return more than the limit, or make the reader read more than its
// limits allow: the memory and time bounds of the package doc hold for
// any bytes.
//
// Seeds (testdata): fat12.img, a FAT12 volume made by mkfs.vfat -r 16 -s 1
// and mcopy, cut to its 14 used sectors (TotSec16 patched) so mutations
// land on structure rather than on free space; fat12-loop.img, the same
// with user-data's chain looping (3 -> 3); and two ISO9660 volumes made by
// xorriso -as mkisofs -J [-r|--norock] -no-pad, stored without their 32 KiB
// system area of zeros, which the target puts back when iso is set.
func FuzzReadFile(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("testdata", "*"))
	for _, p := range seeds {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(strings.HasSuffix(p, ".iso-without-system-area"), data)
	}
	const limit = 64 << 10
	f.Fuzz(func(t *testing.T, iso bool, data []byte) {
		if iso {
			data = append(make([]byte, 16*isoSector), data...)
		}
		r := &countingReader{r: bytes.NewReader(data)}
		v, err := Open(r, int64(len(data)))
		if err != nil {
			return
		}
		_, _ = v.Type(), v.Label()
		for _, name := range []string{"user-data", "meta-data", "network-config", "sub/bundle.yaml"} {
			got, err := v.ReadFile(name, limit)
			if err == nil && len(got) > limit {
				t.Fatalf("%s: %d bytes, over the %d limit", name, len(got), limit)
			}
		}
		// Four files, each at most the limit plus a directory per path
		// component and the super block: whatever the volume claims.
		if max := int64(4*(limit+maxDepth*maxDirBytes) + 64<<10); r.bytes > max {
			t.Fatalf("read %d bytes of a %d-byte volume", r.bytes, len(data))
		}
	})
}

type countingReader struct {
	r     *bytes.Reader
	bytes int64
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	c.bytes += int64(len(p))
	return c.r.ReadAt(p, off)
}
