package build

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestStepCacheBuildsOnceAndNeverLeavesHalfEntries(t *testing.T) {
	c := stepCache{dir: t.TempDir()}
	calls := 0
	fill := func(dir string) error {
		calls++
		return os.WriteFile(filepath.Join(dir, "out"), []byte("x"), 0o644)
	}
	dir, cached, err := c.make("root", "k1", fill)
	if err != nil || cached || calls != 1 {
		t.Fatalf("first make: cached=%v calls=%d err=%v", cached, calls, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "out")); err != nil {
		t.Fatal(err)
	}
	if _, cached, err := c.make("root", "k1", fill); err != nil || !cached || calls != 1 {
		t.Fatalf("second make: cached=%v calls=%d err=%v", cached, calls, err)
	}
	// A failing step leaves nothing behind and is retried next time.
	boom := errors.New("boom")
	if _, _, err := c.make("root", "k2", func(dir string) error {
		os.WriteFile(filepath.Join(dir, "partial"), nil, 0o644)
		return boom
	}); !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	entries, _ := os.ReadDir(filepath.Join(c.dir, "root"))
	if len(entries) != 1 || entries[0].Name() != "k1" {
		t.Errorf("after a failed step the cache holds %v, want only k1", entries)
	}
	if _, ok := c.get("root", "k2"); ok {
		t.Error("failed entry reads as complete")
	}
}

func TestStepCachePrunesToTheTwoMostRecent(t *testing.T) {
	c := stepCache{dir: t.TempDir()}
	base := time.Now()
	for i, k := range []string{"a", "b", "c"} {
		timeNow = func() time.Time { return base.Add(time.Duration(i) * time.Second) }
		dir, _, err := c.make("root", k, func(string) error { return nil })
		if err != nil {
			t.Fatal(err)
		}
		at := base.Add(time.Duration(i) * time.Second)
		os.Chtimes(dir, at, at)
	}
	timeNow = time.Now
	// A leftover of a dead build is removed too.
	os.MkdirAll(filepath.Join(c.dir, "root", "d.tmp-999999999"), 0o755)
	c.prune("root", "c")
	var names []string
	entries, _ := os.ReadDir(filepath.Join(c.dir, "root"))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, ",") != "b,c" {
		t.Errorf("after pruning: %v, want b,c", names)
	}
}

func TestTreeHashSeesContentModeAndLinks(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "etc/x.conf")
	os.MkdirAll(filepath.Dir(f), 0o755)
	os.WriteFile(f, []byte("a"), 0o644)
	h0, err := treeHash(dir)
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := treeHash(dir); h != h0 {
		t.Error("hash is not stable")
	}
	os.WriteFile(f, []byte("b"), 0o644)
	h1, _ := treeHash(dir)
	os.Chmod(f, 0o755)
	h2, _ := treeHash(dir)
	os.Symlink("x.conf", filepath.Join(dir, "etc/y"))
	h3, _ := treeHash(dir)
	if h0 == h1 || h1 == h2 || h2 == h3 {
		t.Errorf("hash missed a change: %s %s %s %s", h0, h1, h2, h3)
	}
	if h, err := treeHash(filepath.Join(dir, "missing")); err != nil || h == "" {
		t.Errorf("missing tree: %q %v", h, err)
	}
}

func TestFileHashUsesCacheNames(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sha256")
	os.MkdirAll(dir, 0o755)
	name := strings.Repeat("ab", 32)
	os.WriteFile(filepath.Join(dir, name), []byte("not hashed"), 0o644)
	if h, err := fileHash(filepath.Join(dir, name)); err != nil || h != name {
		t.Errorf("fileHash = %s, %v; want the cache name", h, err)
	}
	other := filepath.Join(dir, "plain")
	os.WriteFile(other, []byte(""), 0o644)
	if h, _ := fileHash(other); h != "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" {
		t.Errorf("sha256 of empty file = %s", h)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"8GiB": 8 << 30, "8G": 8 << 30, "512MiB": 512 << 20, "1TB": 1 << 40} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%s) = %d, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "8", "8KiB", "-1G", "1.5G"} {
		if _, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q) accepted", bad)
		}
	}
}
