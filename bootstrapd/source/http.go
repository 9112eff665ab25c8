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

	"kubeboot.dev/kubeboot/bootstrapd/backoff"
	"kubeboot.dev/kubeboot/internal/redact"
	"kubeboot.dev/kubeboot/machineconfig"
)

// maxRedirects bounds the redirects of a config fetch.
const maxRedirects = 5

// fetched is a config fetched over http(s).
type fetched struct {
	data []byte
	// shown is the URL asked for and final the one that answered (after
	// redirects), both redacted: they are logged and recorded.
	shown, final string
}

// permanentError is an answer that retrying cannot change: the server said
// the request is wrong (4xx), or the answer is unusable (too large, a
// redirect to plain http).
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// fetchHTTP gets rawURL, retrying transport errors, 5xx answers and 408/429
// (the server may still be starting, as a NoCloud or PXE server often is
// when the first nodes boot). Permanent errors and a sha256 mismatch are not
// retried: the server answered, and asking again gets the same answer.
// URLs are shown and recorded redacted (package redact): a URL's userinfo
// and query may be credentials.
func fetchHTTP(ctx context.Context, o Options, rawURL, pin string) (*fetched, error) {
	shown := redact.URL(rawURL)
	if _, err := url.Parse(rawURL); err != nil {
		return nil, fmt.Errorf("kernel command line kubeboot.config=%s: not a valid URL; percent-encode reserved characters (@ : / ? # and spaces) in a user name or password", shown)
	}
	client := &http.Client{Timeout: 30 * time.Second}
	if o.HTTP != nil {
		c := *o.HTTP
		client = &c
	}
	client.CheckRedirect = checkRedirect
	attempts, wait := o.HTTPAttempts, o.HTTPBackoff
	if attempts < 1 {
		attempts = 6
	}
	if wait <= 0 {
		wait = time.Second
	}
	pause := backoff.New(wait, 10*time.Second)
	var got *fetched
	var lastErr error
	for attempt := 1; attempt <= attempts; attempt++ {
		got, lastErr = get(ctx, client, rawURL)
		var perm permanentError
		if lastErr == nil || errors.As(lastErr, &perm) {
			break
		}
		o.Log.Warn("fetching the machine config failed", "url", shown, "attempt", attempt, "of", attempts, "err", lastErr)
		if attempt == attempts {
			break
		}
		if err := pause.Wait(ctx); err != nil {
			return nil, fmt.Errorf("fetch %s: %w (stopped: %v)", shown, lastErr, err)
		}
	}
	if lastErr != nil {
		var perm permanentError
		if errors.As(lastErr, &perm) {
			return nil, fmt.Errorf("fetch %s: %w (not retried: asking again gets the same answer)", shown, lastErr)
		}
		return nil, fmt.Errorf("fetch %s: %w (gave up after %d attempts; check the URL and that the server is reachable from the node)", shown, lastErr, attempts)
	}
	got.shown = shown
	if pin != "" {
		if err := checkPin(got.data, pin, got.final); err != nil {
			return nil, err
		}
	}
	return got, nil
}

// checkRedirect follows at most maxRedirects redirects and never from
// https to plain http: the config would then come from a server nobody
// authenticated, in the clear. Other hosts are allowed (mirrors, object
// stores); the final URL is recorded as the source.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > maxRedirects {
		return permanentError{fmt.Errorf("more than %d redirects", maxRedirects)}
	}
	if req.URL.Scheme != "https" {
		for _, prev := range via {
			if prev.URL.Scheme == "https" {
				return permanentError{fmt.Errorf("refusing the redirect from %s to %s: it leaves https for %s", redact.URL(prev.URL.String()), redact.URL(req.URL.String()), req.URL.Scheme)}
			}
		}
	}
	return nil
}

func get(ctx context.Context, client *http.Client, rawURL string) (*fetched, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, permanentError{errors.New("not a valid request URL")}
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
	final := redact.URL(resp.Request.URL.String())
	switch code := resp.StatusCode; {
	case code/100 == 2:
	case code/100 == 4 && code != http.StatusRequestTimeout && code != http.StatusTooManyRequests:
		return nil, permanentError{fmt.Errorf("%s answered %s", final, resp.Status)}
	default:
		return nil, fmt.Errorf("%s answered %s", final, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, machineconfig.MaxSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > machineconfig.MaxSize {
		return nil, permanentError{fmt.Errorf("%s: the config is larger than %d KiB, the limit for a machine config", final, machineconfig.MaxSize>>10)}
	}
	return &fetched{data: data, final: final}, nil
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
