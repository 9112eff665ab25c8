package source

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// maxConfigSize bounds a fetched config: machine configs are a few KiB.
const maxConfigSize = 4 << 20

// fetchHTTP gets rawURL, retrying transport errors and non-2xx answers
// (the server may still be starting, as a NoCloud or PXE server often is
// when the first nodes boot). A sha256 mismatch is not retried: the server
// answered, with the wrong content. shown is the URL without userinfo.
func fetchHTTP(ctx context.Context, o Options, rawURL, pin string) (data []byte, shown string, err error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, "", fmt.Errorf("kernel command line kubeboot.config: %w", err)
	}
	u.User = nil // never log or record credentials
	shown = u.String()

	client := o.HTTP
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	attempts, wait := o.HTTPAttempts, o.HTTPBackoff
	if attempts < 1 {
		attempts = 6
	}
	if wait <= 0 {
		wait = time.Second
	}
	var lastErr error
	for attempt := 1; attempt <= attempts; attempt++ {
		data, lastErr = get(ctx, client, rawURL)
		if lastErr == nil {
			break
		}
		o.Log.Warn("fetching the machine config failed", "url", shown, "attempt", attempt, "of", attempts, "err", lastErr)
		if attempt == attempts {
			break
		}
		select {
		case <-ctx.Done():
			return nil, shown, fmt.Errorf("fetch %s: %w (stopped: %v)", shown, lastErr, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(wait*2, 10*time.Second)
	}
	if lastErr != nil {
		return nil, shown, fmt.Errorf("fetch %s: %w (gave up after %d attempts; check the URL and that the server is reachable from the node)", shown, lastErr, attempts)
	}
	if pin != "" {
		if err := checkPin(data, pin, shown); err != nil {
			return nil, shown, err
		}
	}
	return data, shown, nil
}

func get(ctx context.Context, client *http.Client, rawURL string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // url.Error repeats the URL, which may carry credentials
		}
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("server answered %s", resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxConfigSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxConfigSize {
		return nil, fmt.Errorf("config larger than %d bytes", maxConfigSize)
	}
	return data, nil
}

// checkPin compares data with kubeboot.config.sha256 (hex, optionally
// prefixed "sha256:").
func checkPin(data []byte, pin, where string) error {
	want := strings.ToLower(strings.TrimPrefix(pin, "sha256:"))
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); got != want {
		return fmt.Errorf("%s: sha256 is %s but kubeboot.config.sha256 pins %s; the config was changed or the pin is stale", where, got, want)
	}
	return nil
}
