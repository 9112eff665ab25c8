package build

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kubeboot.dev/kubeboot/image/bake"
)

// Issue 10 item 9: cached artifacts were trusted by name. A file named by
// its hash in the cache is pinned to that name for bake to re-hash; an
// image archive, hashed here, must match the hash its lock entry pins.
func TestArtifactsArePinnedForTheBake(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sha256")
	os.MkdirAll(dir, 0o755)
	name := strings.Repeat("ab", 32)
	os.WriteFile(filepath.Join(dir, name), []byte("kubelet"), 0o755)
	archive := filepath.Join(t.TempDir(), "archive.tar")
	os.WriteFile(archive, []byte("changed archive"), 0o644)

	var in inputs
	if err := in.addFile(bake.File{Path: "/usr/bin/kubelet", Source: filepath.Join(dir, name), Mode: 0o755}, "missing %s"); err != nil {
		t.Fatal(err)
	}
	if in.files[0].SHA256 != name {
		t.Errorf("cache file pinned to %q, want its name", in.files[0].SHA256)
	}
	err := in.addFile(bake.File{Path: "/var/lib/kubeboot/images/pause.tar", Source: archive, Mode: 0o644, SHA256: strings.Repeat("cd", 32)}, "missing %s")
	if err == nil || !strings.Contains(err.Error(), "not the "+strings.Repeat("cd", 32)+" the lock pins") {
		t.Errorf("changed archive: err = %v", err)
	}
}
