package fetch

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"

	"kubeboot.dev/kubeboot/image/progress"
)

// File downloads url into the cache unless a file with wantSHA is already
// there. The body must hash to wantSHA (empty means "whatever it is", used
// by lock to learn the hash) and, when the server sends Content-Length,
// have that length. It returns the sha256 and the cache path.
func (c *Cache) File(ctx context.Context, client *http.Client, url, wantSHA string, rep progress.Reporter) (string, string, error) {
	if wantSHA != "" && c.HasFile(wantSHA) {
		return wantSHA, c.FilePath(wantSHA), nil
	}
	if strings.HasPrefix(url, "file://") {
		return c.localFile(url, wantSHA)
	}
	if client == nil {
		client = http.DefaultClient
	}
	if rep == nil {
		rep = progress.Discard
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", "", fmt.Errorf("download %s: %w", url, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", "", fmt.Errorf("download %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", "", fmt.Errorf("download %s: HTTP %s", url, resp.Status)
	}
	task := rep.Start(url, resp.ContentLength)
	body := io.Reader(resp.Body)
	if resp.ContentLength >= 0 {
		body = &exactReader{r: resp.Body, left: resp.ContentLength, url: url}
	}
	sha, p, err := c.PutReader(io.TeeReader(body, task), url, wantSHA, 0o755)
	task.Done(err)
	if err != nil {
		return "", "", fmt.Errorf("download %s: %w", url, err)
	}
	return sha, p, nil
}

// exactReader fails when the body ends before Content-Length bytes: a
// connection closed mid-body must not look like a complete file.
type exactReader struct {
	r    io.Reader
	left int64
	url  string
}

func (e *exactReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	e.left -= int64(n)
	if err == io.EOF && e.left > 0 {
		return n, fmt.Errorf("connection closed with %d bytes missing: %w", e.left, io.ErrUnexpectedEOF)
	}
	return n, err
}
