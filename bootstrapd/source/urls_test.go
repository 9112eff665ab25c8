package source

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func pinOf(data string) string {
	sum := sha256.Sum256([]byte(data))
	return hex.EncodeToString(sum[:])
}

// loadCmdline loads with a kernel command line, logging into log.
func loadCmdline(t *testing.T, cmdline string, client *http.Client, log *bytes.Buffer) (*Result, error) {
	t.Helper()
	root := t.TempDir()
	writeRootFile(t, root, "/proc/cmdline", cmdline)
	return Load(context.Background(), Options{Root: root, HTTP: client, HTTPAttempts: 3, HTTPBackoff: time.Millisecond,
		Log: slog.New(slog.NewTextHandler(log, nil))})
}

// Issue 10 item 6: a URL with a password that does not parse was printed
// whole; a signed URL's query was logged and recorded.
func TestURLSecretsAreRedacted(t *testing.T) {
	var log bytes.Buffer
	_, err := loadCmdline(t, "kubeboot.config=http://admin:hunter2/x@127.0.0.1:1/m.yaml", nil, &log)
	if err == nil || strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "admin") || !strings.Contains(err.Error(), "http://REDACTED") {
		t.Errorf("unparseable URL: err = %v, want it redacted", err)
	}
	_, err = loadCmdline(t, "kubeboot.config=ftp://admin:hunter2@10.0.0.1/m.yaml", nil, &log)
	if err == nil || strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), "expected an absolute path") {
		t.Errorf("other scheme: err = %v", err)
	}

	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) == 1 {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte(workerConfig))
	}))
	t.Cleanup(srv.Close)
	signed := strings.Replace(srv.URL, "http://", "http://admin:hunter2@", 1) + "/m.yaml?X-Amz-Credential=AKIAEXAMPLE&X-Amz-Signature=deadbeef"
	res, err := loadCmdline(t, "kubeboot.config="+signed, nil, &log)
	if err != nil {
		t.Fatal(err)
	}
	want := "kernel command line " + strings.Replace(srv.URL, "http://", "http://REDACTED@", 1) + "/m.yaml?X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED"
	if res.Source != want {
		t.Errorf("Source = %q, want %q", res.Source, want)
	}
	if !strings.Contains(log.String(), "attempt=1") {
		t.Errorf("the retry was not logged: %s", log.String())
	}
	for _, secret := range []string{"hunter2", "AKIAEXAMPLE", "deadbeef"} {
		if strings.Contains(log.String(), secret) || strings.Contains(res.Source, secret) {
			t.Errorf("%q leaked into the log or the source:\n%s", secret, log.String())
		}
	}
}

// Issue 10 item 7: redirects went from https to http, and the first URL
// was recorded as the source.
func TestRedirects(t *testing.T) {
	var plainHits atomic.Int32
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		plainHits.Add(1)
		w.Write([]byte(strings.Replace(workerConfig, "w1.home.local", "from-plain", 1)))
	}))
	t.Cleanup(plain.Close)
	var tlsHits atomic.Int32
	secure := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tlsHits.Add(1)
		http.Redirect(w, r, plain.URL+"/m.yaml?sig=secret", http.StatusFound)
	}))
	t.Cleanup(secure.Close)
	var log bytes.Buffer
	_, err := loadCmdline(t, "kubeboot.config="+secure.URL+"/m.yaml", secure.Client(), &log)
	if err == nil || !strings.Contains(err.Error(), "refusing the redirect") || !strings.Contains(err.Error(), "leaves https for http") ||
		strings.Contains(err.Error(), "secret") || !strings.Contains(err.Error(), "not retried") {
		t.Errorf("https -> http: err = %v", err)
	}
	if plainHits.Load() != 0 || tlsHits.Load() != 1 {
		t.Errorf("%d requests to https, %d to http; want 1 and 0 (a refused downgrade is not retried)", tlsHits.Load(), plainHits.Load())
	}

	// http -> another host is allowed; the source names both, and the pin
	// holds the bytes that came from the final one.
	redirector := httptest.NewServer(http.RedirectHandler(plain.URL+"/m.yaml?sig=secret", http.StatusFound))
	t.Cleanup(redirector.Close)
	served := strings.Replace(workerConfig, "w1.home.local", "from-plain", 1)
	res, err := loadCmdline(t, "kubeboot.config="+redirector.URL+"/m.yaml kubeboot.config.sha256="+pinOf(served), nil, &log)
	if err != nil {
		t.Fatal(err)
	}
	if want := "kernel command line " + redirector.URL + "/m.yaml (redirected to " + plain.URL + "/m.yaml?sig=REDACTED)"; res.Source != want || res.Config.Hostname != "from-plain" {
		t.Errorf("Source = %q, hostname %q; want %q", res.Source, res.Config.Hostname, want)
	}
	_, err = loadCmdline(t, "kubeboot.config="+redirector.URL+"/m.yaml kubeboot.config.sha256="+pinOf(workerConfig), nil, &log)
	if err == nil || !strings.Contains(err.Error(), plain.URL+"/m.yaml?sig=REDACTED: sha256 is "+pinOf(served)) {
		t.Errorf("pin against the redirect target's bytes: err = %v", err)
	}
}

// countingServer serves handler and counts its requests.
func countingServer(t *testing.T, handler http.HandlerFunc) (*httptest.Server, *atomic.Int32) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		handler(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

// Issue 10 item 9: a permanent error (4xx, a body over the limit) was
// retried six times.
func TestPermanentHTTPErrorsAreNotRetried(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		hits    int32
		want    string
	}{
		{"404", func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }, 1, "404 Not Found"},
		{"body too large", func(w http.ResponseWriter, r *http.Request) { w.Write(bytes.Repeat([]byte("#\n"), 100<<10)) }, 1, "larger than 128 KiB"},
		{"429 is retried", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "slow down", http.StatusTooManyRequests) }, 3, "gave up after 3 attempts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, hits := countingServer(t, tc.handler)
			var log bytes.Buffer
			_, err := loadCmdline(t, "kubeboot.config="+srv.URL+"/m.yaml", nil, &log)
			if err == nil || !strings.Contains(err.Error(), tc.want) || hits.Load() != tc.hits {
				t.Errorf("err = %v after %d requests; want %q after %d", err, hits.Load(), tc.want, tc.hits)
			}
		})
	}
}

// Issue 10 item 8: a pinned local file was checked on one read and parsed
// from a second. The file here is a FIFO whose writer gives the pinned
// config to the first reader and another config to a second one.
func TestPinnedFileIsReadOnce(t *testing.T) {
	root := t.TempDir()
	fifo := filepath.Join(root, "srv/node.yaml")
	if err := os.MkdirAll(filepath.Dir(fifo), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	pinned := workerConfig
	swapped := strings.Replace(workerConfig, "w1.home.local", "swapped", 1)
	done, stop := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for i, content := range []string{pinned, swapped} {
			f, err := os.OpenFile(fifo, os.O_WRONLY, 0) // blocks until a reader opens
			if err != nil {
				return
			}
			f.WriteString(content)
			f.Close()
			// Wait for the first reader to close, so the second content
			// goes to a second reader and not after the first's.
			for i == 0 {
				select {
				case <-stop:
					return
				default:
				}
				f, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0)
				if errors.Is(err, syscall.ENXIO) {
					break
				}
				if err == nil {
					f.Close()
				}
				time.Sleep(time.Millisecond)
			}
		}
	}()
	t.Cleanup(func() {
		// Stop the writer: waiting for the first reader to close, or
		// (opening a reader unblocks it) waiting for a second reader.
		close(stop)
		if f, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0); err == nil {
			defer f.Close()
		}
		<-done
	})
	writeRootFile(t, root, "/proc/cmdline", "kubeboot.config=/srv/node.yaml kubeboot.config.sha256=sha256:"+pinOf(pinned))
	res, err := Load(context.Background(), Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	if res.Config.Hostname != "w1.home.local" {
		t.Errorf("hostname %q: the config parsed is not the one whose pin was checked", res.Config.Hostname)
	}
}

func TestMalformedPin(t *testing.T) {
	var log bytes.Buffer
	_, err := loadCmdline(t, "kubeboot.config=/srv/node.yaml kubeboot.config.sha256=abc", nil, &log)
	if err == nil || !strings.Contains(err.Error(), "expected 64 hex digits") {
		t.Errorf("err = %v", err)
	}
}

// Issue 12: a config server that is slow, before its headers or in its
// body, holds a fetch for at most the client's timeout per attempt (30 s
// on a node, 300 ms here), and the fetch gives up after its attempts.
func TestSlowServerIsBounded(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		want    string
	}{
		{"no headers", func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }, "awaiting headers"},
		{"a byte every 50 ms", func(w http.ResponseWriter, r *http.Request) {
			for {
				if _, err := w.Write([]byte("#")); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
		}, "while reading body"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, hits := countingServer(t, tc.handler)
			var log bytes.Buffer
			start := time.Now()
			_, err := loadCmdline(t, "kubeboot.config="+srv.URL+"/m.yaml", &http.Client{Timeout: 300 * time.Millisecond}, &log)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "gave up after 3 attempts") || hits.Load() != 3 {
				t.Errorf("err = %v after %d requests; want %q, given up after 3", err, hits.Load(), tc.want)
			}
			// 3 attempts of 300 ms and two pauses of a few ms; a fetch
			// that waited for the server would still be running.
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("the fetch took %s", d)
			}
		})
	}
}
