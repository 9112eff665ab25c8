package bootstrapd

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Issue 10 items 6 and 7: the source recorded in source.json (and shown by
// bootstrapd status) held a signed URL's query, and named the first URL
// although the bytes came from a redirect target.
func TestRecordedSourceIsRedactedAndFinal(t *testing.T) {
	// configs/worker.yaml with its credentials inline: a config from a URL
	// cannot name a bundle next to it.
	data, err := os.ReadFile("../configs/worker.yaml")
	if err != nil {
		t.Fatal(err)
	}
	config := []byte(strings.Replace(string(data), "    secretsBundle: secrets.yaml\n",
		"    token: abcdef.0123456789abcdef\n    caCertHashes: [\"sha256:"+strings.Repeat("ab", 32)+"\"]\n", 1))
	final := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(config) }))
	t.Cleanup(final.Close)
	first := httptest.NewServer(http.RedirectHandler(final.URL+"/worker.yaml?X-Amz-Signature=deadbeef", http.StatusFound))
	t.Cleanup(first.Close)

	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "proc"), 0o755); err != nil {
		t.Fatal(err)
	}
	u := strings.Replace(first.URL, "http://", "http://admin:hunter2@", 1) + "/m.yaml?token=s3cret"
	if err := os.WriteFile(filepath.Join(root, "proc/cmdline"), []byte("kubeboot.config="+u), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Prepare(context.Background(), Options{Root: root, Log: slog.New(slog.DiscardHandler)}, true); err != nil {
		t.Fatal(err)
	}
	rec, err := os.ReadFile(filepath.Join(root, "var/lib/kubeboot/source.json"))
	if err != nil {
		t.Fatal(err)
	}
	want := "kernel command line " + strings.Replace(first.URL, "http://", "http://REDACTED@", 1) + "/m.yaml?token=REDACTED (redirected to " + final.URL + "/worker.yaml?X-Amz-Signature=REDACTED)"
	if !strings.Contains(string(rec), want) {
		t.Errorf("source.json = %s\nwant the source %q", rec, want)
	}
	for _, secret := range []string{"hunter2", "admin", "s3cret", "deadbeef"} {
		if strings.Contains(string(rec), secret) {
			t.Errorf("source.json holds %q: %s", secret, rec)
		}
	}
}
