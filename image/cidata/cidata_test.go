package cidata

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"kubeboot.dev/kubeboot/bootstrapd/source"
)

// TestWriteReadByBootstrapd writes both volume formats and reads them back
// with bootstrapd's own NoCloud reader, as a node would.
func TestWriteReadByBootstrapd(t *testing.T) {
	userData, err := os.ReadFile("../../configs/controller.yaml")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"user-data": userData,
		"meta-data": []byte("instance-id: \"i-1\"\nlocal-hostname: \"controller.home.local\"\n"),
		// controller.yaml names a secrets bundle next to user-data.
		"secrets.yaml": []byte("# bundle\n"),
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
			if err := Write(out, files, Options{Format: format, SourceDateEpoch: 315532800}); err != nil {
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
			if out2 := filepath.Join(dir, "again-"+tc.out); Write(out2, files, Options{Format: format, SourceDateEpoch: 315532800}) == nil {
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
	if err := Write(filepath.Join(t.TempDir(), "x.iso"), map[string][]byte{"../etc": nil}, Options{Format: ISO}); err == nil {
		t.Error("a file name with a slash was accepted")
	}
}
