package esp

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

func needTools(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"mkfs.vfat", "fsck.vfat", "mcopy", "mmd", "mtype"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (dosfstools, mtools: scripts/setup-host.sh)", tool)
		}
	}
}

func TestBuildIsCleanReadableAndReproducible(t *testing.T) {
	needTools(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "kernel")
	if err := os.WriteFile(src, bytes.Repeat([]byte{0x4d, 0x5a}, 300000), 0o644); err != nil {
		t.Fatal(err)
	}
	files := func() []File {
		return []File{
			{Path: "/loader/loader.conf", Data: []byte("timeout 0\n")},
			{Path: "/EFI/BOOT/BOOTX64.EFI", Source: src},
			{Path: "/loader/entries/a.conf", Data: []byte("title a\n")},
			{Path: "/kubeboot/a/vmlinuz", Source: src},
		}
	}
	opts := Options{Size: 64 << 20, VolumeID: 0x12345678, Label: "ESP", SourceDateEpoch: 1700000000}
	a := filepath.Join(dir, "a.img")
	if err := Build(a, opts, files()); err != nil {
		t.Fatal(err)
	}
	// Different source mtimes and a second later must not change a byte.
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(src, later, later); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	b := filepath.Join(dir, "b.img")
	if err := Build(b, opts, files()); err != nil {
		t.Fatal(err)
	}
	da, _ := os.ReadFile(a)
	db, _ := os.ReadFile(b)
	if !bytes.Equal(da, db) {
		t.Error("two builds of the same ESP differ")
	}
	if out, err := exec.Command("fsck.vfat", "-n", a).CombinedOutput(); err != nil {
		t.Errorf("fsck.vfat -n: %v\n%s", err, out)
	}
	cmd := exec.Command("mtype", "-i", a, "::/loader/loader.conf")
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
	out, err := cmd.Output()
	if err != nil || string(out) != "timeout 0\n" {
		t.Errorf("loader.conf reads %q (%v)", out, err)
	}
	cmd = exec.Command("mcopy", "-i", a, "::/EFI/BOOT/BOOTX64.EFI", filepath.Join(dir, "back"))
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mcopy back: %v %s", err, out)
	}
	back, _ := os.ReadFile(filepath.Join(dir, "back"))
	orig, _ := os.ReadFile(src)
	if !bytes.Equal(back, orig) {
		t.Error("BOOTX64.EFI read back differs")
	}
	// Volume id at offset 67 (FAT32 BPB), little endian.
	if got := uint32(da[67]) | uint32(da[68])<<8 | uint32(da[69])<<16 | uint32(da[70])<<24; got != 0x12345678 {
		t.Errorf("volume id %08x, want 12345678", got)
	}
}

func TestBuildRejectsBadOptions(t *testing.T) {
	dir := t.TempDir()
	if err := Build(filepath.Join(dir, "x"), Options{Size: 1 << 20, Label: "ESP"}, nil); err == nil {
		t.Error("a 1 MiB FAT32 was accepted")
	}
	if err := Build(filepath.Join(dir, "x"), Options{Size: 64 << 20, Label: "TWELVE-CHARS"}, nil); err == nil {
		t.Error("a 12-character label was accepted")
	}
}
