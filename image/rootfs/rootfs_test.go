package rootfs

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestPackageListKeyAndArgs(t *testing.T) {
	o := Options{Suite: "trixie", Mirror: "http://mirror.invalid/debian", Packages: []string{"less", "systemd", "iproute2"}, SourceDateEpoch: 315532800}
	list := o.PackageList()
	if !slices.IsSorted(list) {
		t.Errorf("package list not sorted: %v", list)
	}
	for _, p := range append([]string{"less", "iproute2"}, Required...) {
		if !slices.Contains(list, p) {
			t.Errorf("package list lacks %s", p)
		}
	}
	if n := strings.Count(","+strings.Join(list, ",")+",", ",systemd,"); n != 1 {
		t.Errorf("systemd listed %d times", n)
	}
	args := o.Args("/tmp/x")
	if !slices.Contains(args, "--include="+strings.Join(list, ",")) || args[len(args)-3] != "trixie" || args[len(args)-1] != o.Mirror {
		t.Errorf("args %v", args)
	}
	k := o.Key()
	same := o
	same.Packages = []string{"iproute2", "less", "systemd", "less"}
	if same.Key() != k {
		t.Error("the key depends on package order or duplicates")
	}
	for _, change := range []func(*Options){
		func(c *Options) { c.Packages = append(c.Packages, "jq") },
		func(c *Options) { c.Mirror = "http://mirror.example/debian" },
		func(c *Options) { c.Suite = "forky" },
		func(c *Options) { c.SourceDateEpoch++ },
	} {
		c := o
		c.Packages = slices.Clone(o.Packages)
		change(&c)
		if c.Key() == k {
			t.Errorf("key unchanged after changing %+v", c)
		}
	}
}

// TestVersions reads a dpkg status database with the real dpkg-query.
func TestVersions(t *testing.T) {
	if _, err := exec.LookPath("dpkg-query"); err != nil {
		t.Skip("dpkg-query not installed")
	}
	dir := t.TempDir()
	admin := filepath.Join(dir, "var/lib/dpkg")
	if err := os.MkdirAll(filepath.Join(admin, "info"), 0o755); err != nil {
		t.Fatal(err)
	}
	status := `Package: zstd
Status: install ok installed
Architecture: amd64
Version: 1.5.6+dfsg-2

Package: base-files
Status: install ok installed
Architecture: amd64
Version: 13.8+deb13u1

`
	if err := os.WriteFile(filepath.Join(admin, "status"), []byte(status), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := Versions(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := "base-files 13.8+deb13u1 amd64\nzstd 1.5.6+dfsg-2 amd64\n"
	if got != want {
		t.Errorf("Versions = %q, want %q", got, want)
	}
	if _, err := Versions(filepath.Join(dir, "missing")); err == nil {
		t.Error("a rootfs without a dpkg database gave no error")
	}
}
