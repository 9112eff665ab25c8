package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"kubeboot.dev/kubeboot/image/progress"
	"kubeboot.dev/kubeboot/internal/redact"
)

// Download timeouts. Connecting, the TLS handshake and the response head
// are bounded; the whole body is not (a 100 MB archive on a slow link is
// fine) but a body that stops arriving is.
const (
	connectTimeout = 30 * time.Second
	headerTimeout  = 60 * time.Second
	// DefaultStall is how long a download may receive nothing.
	DefaultStall = 60 * time.Second
)

// defaultClient is used when File gets none: http.DefaultClient has no
// timeout at all, so a server that accepts and never answers would hang
// the build.
var defaultClient = &http.Client{Transport: &http.Transport{
	Proxy:                 http.ProxyFromEnvironment,
	DialContext:           (&net.Dialer{Timeout: connectTimeout, KeepAlive: 30 * time.Second}).DialContext,
	TLSHandshakeTimeout:   connectTimeout,
	ResponseHeaderTimeout: headerTimeout,
	IdleConnTimeout:       90 * time.Second,
	ForceAttemptHTTP2:     true,
}}

// File downloads url into the cache unless a file with wantSHA is already
// there. The body must hash to wantSHA (empty means "whatever it is", used
// by lock to learn the hash) and, when the server sends Content-Length,
// have that length. It returns the sha256 and the cache path. The URL is
// shown redacted (package redact): its userinfo or query may be a
// credential.
func (c *Cache) File(ctx context.Context, client *http.Client, rawURL, wantSHA string, rep progress.Reporter) (string, string, error) {
	if wantSHA != "" && c.HasFile(wantSHA) {
		return wantSHA, c.FilePath(wantSHA), nil
	}
	if strings.HasPrefix(rawURL, "file://") {
		return c.localFile(rawURL, wantSHA)
	}
	if client == nil {
		client = defaultClient
	}
	if rep == nil {
		rep = progress.Discard
	}
	shown := redact.URL(rawURL)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return "", "", fmt.Errorf("download %s: not a valid URL", shown)
	}
	resp, err := client.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // url.Error repeats the URL, unredacted
		}
		return "", "", fmt.Errorf("download %s: %w", shown, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", "", fmt.Errorf("download %s: HTTP %s", shown, resp.Status)
	}
	stall := c.Stall
	if stall <= 0 {
		stall = DefaultStall
	}
	body := io.Reader(&stallReader{r: resp.Body, timer: time.AfterFunc(stall, func() {
		cancel(fmt.Errorf("no data for %v", stall))
	}), after: stall})
	if resp.ContentLength >= 0 {
		body = &exactReader{r: body, left: resp.ContentLength}
	}
	task := rep.Start(shown, resp.ContentLength)
	sha, p, err := c.PutReader(io.TeeReader(body, task), shown, wantSHA, 0o755)
	if cause := context.Cause(ctx); err != nil && cause != nil && !errors.Is(cause, context.Canceled) {
		err = cause // the stall, rather than the read error it caused
	}
	task.Done(err)
	if err != nil {
		return "", "", fmt.Errorf("download %s: %w", shown, err)
	}
	return sha, p, nil
}

// stallReader restarts its timer on every read that brings data.
type stallReader struct {
	r     io.Reader
	timer *time.Timer
	after time.Duration
}

func (s *stallReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if n > 0 {
		s.timer.Reset(s.after)
	}
	if err != nil {
		s.timer.Stop()
	}
	return n, err
}

// exactReader fails when the body ends before Content-Length bytes: a
// connection closed mid-body must not look like a complete file.
type exactReader struct {
	r    io.Reader
	left int64
}

func (e *exactReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	e.left -= int64(n)
	if err == io.EOF && e.left > 0 {
		return n, fmt.Errorf("connection closed with %d bytes missing: %w", e.left, io.ErrUnexpectedEOF)
	}
	return n, err
}
