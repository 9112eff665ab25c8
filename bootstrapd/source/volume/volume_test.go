package volume

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"kubeboot.dev/kubeboot/internal/cidatatest"
	"kubeboot.dev/kubeboot/internal/rlimittest"
)

// content is n bytes that differ from block to block, so a reader that
// takes the wrong cluster or block is caught.
func content(tag string, n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "%s line %06d\n", tag, i)
	}
	return b.Bytes()[:n]
}

func files() map[string][]byte {
	return map[string][]byte{
		"user-data":       content("user-data", 5000), // several clusters and blocks
		"meta-data":       []byte("instance-id: iid-1\n"),
		"network-config":  content("network-config", 300),
		"empty":           {},
		"sub/bundle.yaml": content("bundle", 2100),
	}
}

func TestReadsRealVolumes(t *testing.T) {
	for _, tc := range []struct {
		name, typ, label string
		img              func(t *testing.T) string
	}{
		{"FAT12 as kubeboot cidata makes it", "fat12", "CIDATA", func(t *testing.T) string { return cidatatest.FAT(t, 0, 2048, files()) }},
		{"FAT16", "fat16", "CIDATA", func(t *testing.T) string { return cidatatest.FAT(t, 16, 4096, files()) }},
		{"FAT32", "fat32", "CIDATA", func(t *testing.T) string { return cidatatest.FAT(t, 32, 34000, files()) }},
		{"ISO9660 Rock Ridge and Joliet", "iso9660", "cidata", func(t *testing.T) string { return cidatatest.ISO(t, true, files(), nil) }},
		{"ISO9660 Joliet only", "iso9660", "cidata", func(t *testing.T) string { return cidatatest.ISO(t, false, files(), nil) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, closeFn, err := OpenFile(tc.img(t))
			if err != nil {
				t.Fatal(err)
			}
			defer closeFn()
			if v.Type() != tc.typ || v.Label() != tc.label {
				t.Errorf("type %q label %q, want %q %q", v.Type(), v.Label(), tc.typ, tc.label)
			}
			for name, want := range files() {
				got, err := v.ReadFile(name, 1<<20)
				if err != nil || !bytes.Equal(got, want) {
					t.Errorf("%s: %d bytes, err %v; want %d bytes", name, len(got), err, len(want))
				}
			}
			if _, err := v.ReadFile("./sub/../user-data", 1<<20); err != nil {
				t.Errorf("a path with .. inside the volume: %v", err)
			}
			if _, err := v.ReadFile("missing", 1<<20); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("missing file: err = %v, want fs.ErrNotExist", err)
			}
			if _, err := v.ReadFile("user-data", 4999); !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "5000 bytes, more than the 4999 allowed") {
				t.Errorf("over the limit: err = %v", err)
			}
			if _, err := v.ReadFile("sub", 1<<20); err == nil || !strings.Contains(err.Error(), "is a directory") {
				t.Errorf("a directory: err = %v", err)
			}
			if _, err := v.ReadFile("user-data/x", 1<<20); err == nil || !strings.Contains(err.Error(), "not a directory") {
				t.Errorf("a file as a directory: err = %v", err)
			}
		})
	}
}

func TestFATNamesIgnoreCase(t *testing.T) {
	v, closeFn, err := OpenFile(cidatatest.FAT(t, 0, 2048, map[string][]byte{"USER-DATA": []byte("x"), "META.TXT": []byte("y")}))
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn()
	for _, name := range []string{"user-data", "User-Data", "meta.txt"} {
		if _, err := v.ReadFile(name, 10); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// readerEnv asks TestMain to read one file in this process and exit: the
// hostile volumes are read in a child process under prlimit, so that a
// reader that loops or over-allocates fails the test instead of taking
// the machine's memory.
const readerEnv = "KUBEBOOT_TEST_VOLUME_READ"

func TestMain(m *testing.M) {
	if img := os.Getenv(readerEnv); img != "" {
		name := os.Getenv(readerEnv + "_NAME")
		max, _ := strconv.ParseInt(os.Getenv(readerEnv+"_MAX"), 10, 64)
		v, closeFn, err := OpenFile(img)
		if err == nil {
			var data []byte
			data, err = v.ReadFile(name, max)
			closeFn()
			if err == nil {
				fmt.Printf("read %d bytes\n", len(data))
			}
		}
		if err != nil {
			fmt.Printf("error: %v\n", err)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// maxChildRSS is the peak RSS every hostile volume is read within.
const maxChildRSS = 100 << 20

// readIsolated reads name from img in a child process under
// rlimittest.Default and returns what it printed.
func readIsolated(t *testing.T, img, name string, max int64) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), readerEnv+"="+img, readerEnv+"_NAME="+name, readerEnv+"_MAX="+strconv.FormatInt(max, 10))
	r := rlimittest.Run(t, cmd, rlimittest.Default)
	rlimittest.Check(t, "reading "+name, r, maxChildRSS)
	return strings.TrimSpace(r.Stdout)
}

func TestHostileVolumes(t *testing.T) {
	fat := func(t *testing.T, name string, size int, patch func(img string)) string {
		img := cidatatest.FAT(t, 0, 2048, map[string][]byte{name: content(name, size), "sub/x": content("x", 10)})
		patch(img)
		return img
	}
	const limit = 256 << 10
	for _, tc := range []struct {
		name, file string
		img        func(t *testing.T) string
		max        int64
		want       string
	}{
		{"FAT file chain loops (c+1 -> c+1)", "user-data", func(t *testing.T) string {
			return fat(t, "user-data", 5000, func(img string) {
				c := cidatatest.FirstCluster(t, img, "user-data")
				cidatatest.SetFAT(t, img, 12, c+1, c+1)
			})
		}, limit, "cluster chain loops back to cluster"},
		{"FAT file chain ends early", "user-data", func(t *testing.T) string {
			return fat(t, "user-data", 5000, func(img string) {
				cidatatest.SetFAT(t, img, 12, cidatatest.FirstCluster(t, img, "user-data"), 0xFFF)
			})
		}, limit, "cluster chain ends after 1 clusters; the size needs 3"},
		{"FAT file chain leaves the volume", "user-data", func(t *testing.T) string {
			return fat(t, "user-data", 5000, func(img string) {
				cidatatest.SetFAT(t, img, 12, cidatatest.FirstCluster(t, img, "user-data"), 0xF00)
			})
		}, limit, "outside 2-"},
		{"FAT directory chain loops", "sub/x", func(t *testing.T) string {
			return fat(t, "user-data", 10, func(img string) {
				c := cidatatest.FirstCluster(t, img, "sub")
				cidatatest.SetFAT(t, img, 12, c, c)
			})
		}, limit, "cluster chain loops back to cluster"},
		{"FAT32 root directory chain loops", "user-data", func(t *testing.T) string {
			img := cidatatest.FAT(t, 32, 34000, map[string][]byte{"user-data": []byte("x")})
			cidatatest.SetFAT(t, img, 32, 2, 2) // mkfs.vfat puts the root at cluster 2
			return img
		}, limit, "cluster chain loops back to cluster 2"},
		{"32 MB user-data on FAT", "user-data", func(t *testing.T) string {
			return cidatatest.FAT(t, 0, 40<<10, map[string][]byte{"user-data": content("big", 32<<20)})
		}, limit, "33554432 bytes, more than the 262144 allowed"},
		{"ISO record claims 1 GiB", "user-data", func(t *testing.T) string {
			ud := content("user-data", 5000)
			img := cidatatest.ISO(t, true, map[string][]byte{"user-data": ud}, nil)
			cidatatest.SetISOSize(t, img, ud, 1<<30)
			return img
		}, 2 << 30, "the volume says 1073741824 bytes at block"},
		{"ISO record claims 1 GiB, within the cap", "user-data", func(t *testing.T) string {
			ud := content("user-data", 5000)
			img := cidatatest.ISO(t, true, map[string][]byte{"user-data": ud}, nil)
			cidatatest.SetISOSize(t, img, ud, 1<<30)
			return img
		}, limit, "1073741824 bytes, more than the 262144 allowed"},
		{"ISO multi-extent file", "user-data", func(t *testing.T) string {
			ud := content("user-data", 5000)
			img := cidatatest.ISO(t, true, map[string][]byte{"user-data": ud}, nil)
			cidatatest.SetISOFlags(t, img, ud, 0x80)
			return img
		}, limit, "user-data: multi-extent files are not supported"},
		{"ISO symbolic link to a node file", "secrets.yaml", func(t *testing.T) string {
			return cidatatest.ISO(t, true, map[string][]byte{"user-data": []byte("x")}, map[string]string{"secrets.yaml": "/etc/shadow"})
		}, limit, "is a symbolic link"},
		{"random bytes", "user-data", func(t *testing.T) string {
			img := t.TempDir() + "/random.img"
			if err := os.WriteFile(img, content("random", 1<<20), 0o600); err != nil {
				t.Fatal(err)
			}
			return img
		}, limit, "no FAT or ISO9660 file system"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := readIsolated(t, tc.img(t), tc.file, tc.max)
			if !strings.HasPrefix(out, "error: ") || !strings.Contains(out, tc.want) {
				t.Errorf("got %q, want an error containing %q", out, tc.want)
			}
		})
	}
}
