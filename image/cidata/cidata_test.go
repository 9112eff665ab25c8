package cidata

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"kubeboot.dev/kubeboot/bootstrapd/source"
	"kubeboot.dev/kubeboot/clustersecrets"
)

// TestWriteReadByBootstrapd writes both volume formats and reads them back
// with bootstrapd's own NoCloud reader, as a node would.
func TestWriteReadByBootstrapd(t *testing.T) {
	userData, err := os.ReadFile("../../configs/controller.yaml")
	if err != nil {
		t.Fatal(err)
	}
	secrets, err := clustersecrets.Generate()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"user-data": userData,
		"meta-data": []byte("instance-id: \"i-1\"\nlocal-hostname: \"controller.home.local\"\n"),
		// controller.yaml names a secrets bundle next to user-data.
		"secrets.yaml": clustersecrets.Marshal(secrets),
	}
	for _, tc := range []struct {
		out   string
		tools []string
	}{
		{"seed.iso", []string{"xorriso"}},
		{"seed.img", []string{"mkfs.vfat", "mcopy"}},
	} {
		t.Run(tc.out, func(t *testing.T) {
			for _, tool := range tc.tools {
				if _, err := exec.LookPath(tool); err != nil {
					t.Skipf("%s not installed (scripts/setup-host.sh)", tool)
				}
			}
			format, err := FormatFor(tc.out)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			out := filepath.Join(dir, tc.out)
			if err := Write(context.Background(), out, files, Options{Format: format, SourceDateEpoch: 315532800}); err != nil {
				t.Fatal(err)
			}
			// Every file reads back byte for byte with mtools/xorriso's
			// view (what cloud-init sees after mounting).
			for name, want := range files {
				var got []byte
				var err error
				if format == FAT {
					cmd := exec.Command("mtype", "-i", out, "::/"+name)
					cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
					got, err = cmd.Output()
				} else {
					got, err = exec.Command("xorriso", "-osirrox", "on", "-indev", out, "-extract", "/"+name, filepath.Join(dir, "x-"+name)).CombinedOutput()
					if err == nil {
						got, err = os.ReadFile(filepath.Join(dir, "x-"+name))
						os.Remove(filepath.Join(dir, "x-"+name))
					}
				}
				if err != nil || !bytes.Equal(got, want) {
					t.Errorf("%s reads back as %q (%v), want %q", name, got, err, want)
				}
			}
			// bootstrapd's own reader (go-diskfs, no mount).
			res, err := source.ReadNoCloud(out)
			if err != nil {
				t.Fatalf("bootstrapd cannot read %s: %v", tc.out, err)
			}
			if res.Config.Hostname != "controller.home.local" {
				t.Errorf("hostname %q", res.Config.Hostname)
			}
			if res.Secrets == nil || *res.Secrets != *secrets {
				t.Error("the bundle on the volume was not read")
			}
			// The volume holds secrets: private on the build host.
			if st, _ := os.Stat(out); st.Mode().Perm() != 0o600 {
				t.Errorf("volume mode %v, want 0600", st.Mode())
			}
			if out2 := filepath.Join(dir, "again-"+tc.out); Write(context.Background(), out2, files, Options{Format: format, SourceDateEpoch: 315532800}) == nil {
				a, _ := os.ReadFile(out)
				b, _ := os.ReadFile(out2)
				if !bytes.Equal(a, b) {
					t.Errorf("two %s volumes of the same files differ", format)
				}
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 2 {
				t.Errorf("temporary files left in %s: %v", dir, entries)
			}
		})
	}
}

func TestFormatFor(t *testing.T) {
	for name, want := range map[string]Format{"a.iso": ISO, "a.ISO": ISO, "a.img": FAT, "a.vfat": FAT} {
		if got, err := FormatFor(name); err != nil || got != want {
			t.Errorf("FormatFor(%s) = %s, %v", name, got, err)
		}
	}
	if _, err := FormatFor("seed.qcow2"); err == nil {
		t.Error("seed.qcow2 accepted")
	}
	if err := Write(context.Background(), filepath.Join(t.TempDir(), "x.iso"), map[string][]byte{"../etc": nil}, Options{Format: ISO}); err == nil {
		t.Error("a file name with a slash was accepted")
	}
}

// A missing output directory is made private; a cancelled write (Ctrl-C)
// leaves nothing behind, neither the volume nor the staged files.
func TestWritePrivateAndCancelled(t *testing.T) {
	if _, err := exec.LookPath("xorriso"); err != nil {
		t.Skip("xorriso not installed (scripts/setup-host.sh)")
	}
	files := map[string][]byte{"user-data": []byte("token: s3cr3t\n")}
	out := filepath.Join(t.TempDir(), "seeds", "seed.iso")
	if err := Write(context.Background(), out, files, Options{Format: ISO, SourceDateEpoch: 315532800}); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(filepath.Dir(out)); st.Mode().Perm() != 0o700 {
		t.Errorf("created directory mode %v, want 0700", st.Mode())
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	again := filepath.Join(filepath.Dir(out), "again.iso")
	if err := Write(ctx, again, files, Options{Format: ISO}); err == nil {
		t.Fatal("a cancelled write succeeded")
	}
	if entries, _ := os.ReadDir(filepath.Dir(out)); len(entries) != 1 {
		t.Errorf("a cancelled write left %v", entries)
	}
}
