package source

import (
	"os"
	"path/filepath"
	"testing"

	"kubeboot.dev/kubeboot/clustersecrets"
	"kubeboot.dev/kubeboot/machineconfig"
)

// Issue 10 item 9, the same class as the state directory: a secrets
// directory that exists 0755 (made by hand, or by an older initrd) with
// the bundle already in it is made 0700 too.
func TestInstallMakesAnExistingBundleDirPrivate(t *testing.T) {
	root := t.TempDir()
	p := filepath.Join(root, BundlePath)
	secrets, err := clustersecrets.Generate()
	if err != nil {
		t.Fatal(err)
	}
	res := &Result{Secrets: secrets.ForRole(machineconfig.RoleWorker)}
	bundle := clustersecrets.Marshal(res.Secrets)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, bundle, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := res.Install(root); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(filepath.Dir(p)); st.Mode().Perm() != 0o700 {
		t.Errorf("secrets directory mode %v, want 0700", st.Mode().Perm())
	}
}
