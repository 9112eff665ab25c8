package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// WriteWith is the build side's one way to make an output through a tool
// (disk.Write, cp, qemu-img): the tool creates tmp itself, even with
// O_EXCL, and nothing but the finished file is ever at path.
func TestWriteWith(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	p := filepath.Join(dir, "node.raw")
	err := WriteWith(p, 0o640, 0o755, func(tmp string) error {
		if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("tmp %s exists before write: %v", tmp, err)
		}
		return os.WriteFile(tmp, []byte("image"), 0o666)
	})
	if err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(p); string(data) != "image" {
		t.Errorf("content %q", data)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640", st.Mode().Perm())
	}
	failed := errors.New("qemu-img failed")
	err = WriteWith(p, 0o640, 0o755, func(tmp string) error {
		os.WriteFile(tmp, []byte("half"), 0o644)
		return failed
	})
	if !errors.Is(err, failed) {
		t.Errorf("err = %v", err)
	}
	if data, _ := os.ReadFile(p); string(data) != "image" {
		t.Errorf("a failed write replaced the file: %q", data)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("left behind: %v", entries)
	}
}

func TestMkdirAllNarrowsOnlyPrivateModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "d")
	os.Mkdir(dir, 0o755)
	os.Chmod(dir, 0o755)
	if err := MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o755 {
		t.Errorf("a public mode changed the directory to %v", st.Mode().Perm())
	}
	if err := MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Errorf("mode %v, want 0700", st.Mode().Perm())
	}
}
