package fetch

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// Issue 10 item 9: the artifact fetch used a client with no timeout. A
// server that sends part of a body and then nothing fails the download
// after the stall time; nothing is cached.
func TestStalledDownloadFails(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		w.Write([]byte("0123456789"))
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	c := openCache(t)
	c.Stall = 200 * time.Millisecond
	_, _, err := c.File(context.Background(), nil, srv.URL+"/kubelet", "", nil)
	if err == nil || !strings.Contains(err.Error(), "no data for 200ms") {
		t.Errorf("err = %v, want the stall named", err)
	}
	assertNothingCached(t, c)
	if tr := defaultClient.Transport.(*http.Transport); tr.ResponseHeaderTimeout == 0 || tr.TLSHandshakeTimeout == 0 {
		t.Error("the default client has no timeouts")
	}
}

// Issue 10 item 6, on the build side: download errors show URLs redacted.
func TestDownloadErrorsRedactTheURL(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(srv.Close)
	c := openCache(t)
	u := strings.Replace(srv.URL, "http://", "http://user:hunter2@", 1) + "/kubelet?X-Amz-Signature=deadbeef"
	_, _, err := c.File(context.Background(), nil, u, "", nil)
	if err == nil || !strings.Contains(err.Error(), "REDACTED") || strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "deadbeef") {
		t.Errorf("err = %v", err)
	}
	_, _, err = c.File(context.Background(), nil, "http://user:hunter2@127.0.0.1:1/kubelet", "", nil)
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("connection refused: err = %v", err)
	}
}
