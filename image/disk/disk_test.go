package disk

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

type sfdiskDump struct {
	PartitionTable struct {
		Label      string `json:"label"`
		ID         string `json:"id"`
		Partitions []struct {
			Start int64  `json:"start"`
			Size  int64  `json:"size"`
			Type  string `json:"type"`
			UUID  string `json:"uuid"`
			Name  string `json:"name"`
		} `json:"partitions"`
	} `json:"partitiontable"`
}

func testLayout(t *testing.T, dir string) Layout {
	t.Helper()
	esp := filepath.Join(dir, "esp.bin")
	root := filepath.Join(dir, "root.bin")
	if err := os.WriteFile(esp, bytes.Repeat([]byte("E"), 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(root, bytes.Repeat([]byte("R"), 3*MiB+17), 0o644); err != nil {
		t.Fatal(err)
	}
	return Layout{
		Seed: "test-seed",
		Partitions: []Partition{
			{Name: "ESP", Type: TypeESP, Size: 2 * MiB, Contents: esp},
			{Name: "ROOT-A", Type: TypeRootX86_64, Size: 4 * MiB, Contents: root},
			{Name: "ROOT-B", Type: TypeRootX86_64, Size: 4 * MiB},
			{Name: "STATE", Type: TypeLinuxData, Size: 8 * MiB},
		},
	}
}

func TestWriteVerifiedBySfdisk(t *testing.T) {
	if _, err := exec.LookPath("sfdisk"); err != nil {
		t.Skip("sfdisk not installed (package fdisk, scripts/setup-host.sh)")
	}
	dir := t.TempDir()
	l := testLayout(t, dir)
	img := filepath.Join(dir, "disk.raw")
	if err := Write(img, l); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("sfdisk", "--verify", img).CombinedOutput(); err != nil {
		t.Fatalf("sfdisk --verify: %v\n%s", err, out)
	}
	out, err := exec.Command("sfdisk", "-J", img).Output()
	if err != nil {
		t.Fatalf("sfdisk -J: %v", err)
	}
	var d sfdiskDump
	if err := json.Unmarshal(out, &d); err != nil {
		t.Fatalf("parse sfdisk -J: %v\n%s", err, out)
	}
	pt := d.PartitionTable
	if pt.Label != "gpt" || !strings.EqualFold(pt.ID, GUID("test-seed", "disk")) {
		t.Errorf("label %s id %s, want gpt %s", pt.Label, pt.ID, GUID("test-seed", "disk"))
	}
	if len(pt.Partitions) != 4 {
		t.Fatalf("%d partitions, want 4: %s", len(pt.Partitions), out)
	}
	start := int64(MiB / sectorSize)
	for i, p := range pt.Partitions {
		want := l.Partitions[i]
		if p.Name != want.Name || !strings.EqualFold(p.Type, string(want.Type)) || p.Size*sectorSize != want.Size || p.Start != start {
			t.Errorf("partition %d = %+v, want name %s type %s size %d start %d", i+1, p, want.Name, want.Type, want.Size/sectorSize, start)
		}
		if !strings.EqualFold(p.UUID, GUID("test-seed", "partition\x00"+want.Name)) {
			t.Errorf("partition %d uuid %s is not derived from the seed", i+1, p.UUID)
		}
		start += p.Size
	}
	st, _ := os.Stat(img)
	if st.Size() != l.Size() {
		t.Errorf("image is %d bytes, layout says %d", st.Size(), l.Size())
	}
	// The contents sit at the partition's offset.
	data, _ := os.ReadFile(img)
	rootOff := int64(MiB + 2*MiB)
	if !bytes.Equal(data[rootOff:rootOff+3*MiB+17], bytes.Repeat([]byte("R"), 3*MiB+17)) || data[rootOff+3*MiB+17] != 0 {
		t.Error("ROOT-A contents are not at the partition start")
	}
}

func TestWriteIsReproducible(t *testing.T) {
	dir := t.TempDir()
	l := testLayout(t, dir)
	var sums [][32]byte
	for _, name := range []string{"a.raw", "b.raw"} {
		p := filepath.Join(dir, name)
		if err := Write(p, l); err != nil {
			t.Fatal(err)
		}
		data, _ := os.ReadFile(p)
		sums = append(sums, sha256.Sum256(data))
	}
	if sums[0] != sums[1] {
		t.Error("two writes of the same layout differ")
	}
	l.Seed = "other"
	p := filepath.Join(dir, "c.raw")
	if err := Write(p, l); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(p)
	if sha256.Sum256(data) == sums[0] {
		t.Error("a different seed gave the same image")
	}
}

func TestWriteRefusesBadLayouts(t *testing.T) {
	dir := t.TempDir()
	l := testLayout(t, dir)
	l.Partitions[1].Size = 2 * MiB // contents are 3 MiB
	err := Write(filepath.Join(dir, "x.raw"), l)
	if err == nil || !strings.Contains(err.Error(), "ROOT-A") || !strings.Contains(err.Error(), "larger than the partition") {
		t.Errorf("oversized contents: err = %v", err)
	}
	l = testLayout(t, dir)
	l.Partitions[0].Size = MiB + 1
	if err := Write(filepath.Join(dir, "y.raw"), l); err == nil || !strings.Contains(err.Error(), "multiple of 1 MiB") {
		t.Errorf("unaligned size: err = %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "y.raw")); !os.IsNotExist(err) {
		t.Error("a refused layout left an image behind")
	}
	if err := Write(filepath.Join(dir, "y.raw"), testLayout(t, dir)); err != nil {
		t.Fatal(err)
	}
	if err := Write(filepath.Join(dir, "y.raw"), testLayout(t, dir)); err == nil {
		t.Error("Write overwrote an existing image")
	}
}

// TestWriteKeepsHolesAndZerosSparse: a sparse partition image (STATE's is
// mostly holes) is copied byte for byte, and neither its holes nor a MiB
// of written zeros take space in the disk image.
func TestWriteKeepsHolesAndZerosSparse(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "state.img")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	// data at 0, a hole, a written MiB of zeros at 3 MiB, data at 6 MiB + 5.
	for off, data := range map[int64][]byte{0: []byte("head"), 3 * MiB: make([]byte, MiB), 6*MiB + 5: []byte("tail")} {
		if _, err := f.WriteAt(data, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(8 * MiB); err != nil {
		t.Fatal(err)
	}
	f.Close()
	img := filepath.Join(dir, "disk.raw")
	l := Layout{Seed: "s", Partitions: []Partition{{Name: "STATE", Type: TypeLinuxData, Size: 8 * MiB, Contents: src}}}
	if err := Write(img, l); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(src)
	if !bytes.Equal(got[MiB:9*MiB], want) {
		t.Error("the partition's bytes differ from its contents")
	}
	var st syscall.Stat_t
	if err := syscall.Stat(img, &st); err != nil {
		t.Fatal(err)
	}
	// GPT header + backup (one MiB each at most) + the two data MiBs.
	if used := st.Blocks * 512; used > 4*MiB {
		t.Errorf("the disk image allocates %d bytes, want the two MiBs with data and the GPTs only", used)
	}
}
