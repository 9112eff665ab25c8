package atomicfile

import (
	"errors"
	"io/fs"
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

// WriteNew never replaces a file and leaves no temporary file behind.
func TestWriteNew(t *testing.T) {
	p := filepath.Join(t.TempDir(), "d", "secret")
	if err := WriteNew(p, []byte("one"), 0o600, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := WriteNew(p, []byte("two"), 0o600, 0o700); !errors.Is(err, fs.ErrExist) {
		t.Errorf("second WriteNew: %v, want fs.ErrExist", err)
	}
	if data, _ := os.ReadFile(p); string(data) != "one" {
		t.Errorf("content %q, want the first", data)
	}
	for path, want := range map[string]fs.FileMode{p: 0o600, filepath.Dir(p): 0o700} {
		if st, err := os.Stat(path); err != nil || st.Mode().Perm() != want {
			t.Errorf("%s: %v %v, want %o", path, st, err, want)
		}
	}
	if entries, _ := os.ReadDir(filepath.Dir(p)); len(entries) != 1 {
		t.Errorf("left behind: %v", entries)
	}
}

// A private file (a disk image holding a baked config) is private while
// and after it is written, even when the tool writing it ignores the mode;
// an interrupted write leaves nothing beside it.
func TestWriteWithPrivate(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out", "node.raw")
	err := WriteWith(out, 0o600, 0o700, func(tmp string) error {
		if st, err := os.Stat(filepath.Dir(tmp)); err != nil || st.Mode().Perm() != 0o700 {
			t.Errorf("tmp's directory %v %v, want 0700", st, err)
		}
		return os.WriteFile(tmp, []byte("disk"), 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{out: 0o600, filepath.Dir(out): 0o700} {
		if st, err := os.Stat(p); err != nil || st.Mode().Perm() != want {
			t.Errorf("%s: %v %v, want %o", p, st, err, want)
		}
	}
	if err := WriteWith(filepath.Join(filepath.Dir(out), "x.raw"), 0o600, 0o700, func(string) error { return errors.New("interrupted") }); err == nil {
		t.Error("a failed write succeeded")
	}
	if entries, _ := os.ReadDir(filepath.Dir(out)); len(entries) != 1 {
		t.Errorf("left behind: %v", entries)
	}
}
