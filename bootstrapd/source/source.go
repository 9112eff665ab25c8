// Package source finds the node's machine config. Sources are tried in this
// order, and the first one that exists is used:
//
//  1. an explicit path (bootstrapd --config);
//  2. kubeboot.config= on the kernel command line: an absolute path on the
//     node, a file:// URL, or an http(s):// URL fetched with retries and
//     checked against kubeboot.config.sha256= when given. When the command
//     line names a source, it is the only one tried: an operator who points
//     at a config wants that config or a clear failure, not a fallback;
//  3. a NoCloud volume labelled CIDATA or cidata (FAT or ISO9660), read
//     without mounting: user-data is the machine config, network-config
//     (netplan v2) replaces its network section, meta-data's
//     local-hostname is the hostname when user-data has none;
//  4. the config baked into the image, /usr/share/kubeboot/machine.yaml.
//     It lives under /usr because the image's /usr is read-only and ships
//     with the image; /etc is the node's own, mutable state.
//
// Every config is parsed strictly and validated (machineconfig.Parse)
// before it is returned.
package source

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"kubeboot.dev/kubeboot/atomicfile"
	"kubeboot.dev/kubeboot/internal/redact"
	"kubeboot.dev/kubeboot/machineconfig"
)

// BakedPath is where the image builder puts a default machine config.
const BakedPath = "/usr/share/kubeboot/machine.yaml"

// Options say where to look.
type Options struct {
	// Root stands for "/" of the node: /proc/cmdline, /dev/disk/by-label and
	// the baked config are read under it.
	Root string
	// ConfigPath is --config: a path on the machine running bootstrapd,
	// read as is (not under Root).
	ConfigPath string
	// HTTP fetches http(s) configs; nil means a client with a 30 s timeout.
	HTTP *http.Client
	// HTTPAttempts and HTTPBackoff bound the retries of an http(s) fetch;
	// zero means 6 attempts, waits doubling from 1 s (capped at 10 s).
	HTTPAttempts int
	HTTPBackoff  time.Duration
	Log          *slog.Logger
}

// Result is the config and where it came from.
type Result struct {
	Config *machineconfig.MachineConfig
	// Source says where the config came from, e.g. "kernel command line
	// https://10.0.0.1/m.yaml (redirected to https://10.0.0.2/m.yaml)" or
	// "NoCloud volume /dev/sr0 (iso9660, label "cidata")". It never holds a
	// secret: URLs are redacted (package redact).
	Source string
	// InstanceID is the NoCloud meta-data instance-id, if any.
	InstanceID string
	// SecretsBundle is the content of a secrets bundle that came with the
	// config from a volume that is not mounted; Install puts it at
	// BundlePath, where Config now points. It is a secret: never log it.
	SecretsBundle []byte
}

// BundlePath is where a secrets bundle read from a NoCloud volume is
// installed on the node: root's only, in the persistent state partition.
const BundlePath = "/var/lib/kubeboot/secrets/bundle.yaml"

// Install writes what the config needs beside itself (a secrets bundle
// from a NoCloud volume) under root, 0600 in a 0700 directory. It writes
// nothing when the file already holds the content.
func (r *Result) Install(root string) error {
	if r.SecretsBundle == nil {
		return nil
	}
	p := filepath.Join(root, BundlePath)
	// The directory is made private even when the bundle is already there.
	if err := atomicfile.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("install the secrets bundle at %s: %w", BundlePath, err)
	}
	if cur, err := os.ReadFile(p); err == nil && bytes.Equal(cur, r.SecretsBundle) {
		return nil
	}
	if err := atomicfile.Write(p, r.SecretsBundle, 0o600, 0o700); err != nil {
		return fmt.Errorf("install the secrets bundle at %s: %w", BundlePath, err)
	}
	return nil
}

// ErrNoConfig means no source had a config.
var ErrNoConfig = errors.New("no machine config found")

// Load returns the first config found, in the order of the package doc.
func Load(ctx context.Context, o Options) (*Result, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.ConfigPath != "" {
		cfg, err := machineconfig.Load(o.ConfigPath)
		if err != nil {
			return nil, err
		}
		return &Result{Config: cfg, Source: "--config " + o.ConfigPath}, nil
	}

	cmdline, err := readCmdline(filepath.Join(o.Root, "/proc/cmdline"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read the kernel command line: %w", err)
	}
	params := ParseCmdline(string(cmdline))
	if loc, ok := params["kubeboot.config"]; ok {
		return fromCmdline(ctx, o, loc, params["kubeboot.config.sha256"])
	}

	res, err := fromNoCloud(o)
	if err != nil || res != nil {
		return res, err
	}

	baked := filepath.Join(o.Root, BakedPath)
	if _, err := os.Stat(baked); err == nil {
		cfg, err := machineconfig.Load(baked)
		if err != nil {
			return nil, err
		}
		return &Result{Config: cfg, Source: "image " + BakedPath}, nil
	}
	return nil, fmt.Errorf("%w: tried --config, kubeboot.config= on the kernel command line, a NoCloud volume labelled CIDATA/cidata and %s; provide one of them", ErrNoConfig, BakedPath)
}

// maxCmdline bounds the command line read: the kernel's own limit
// (COMMAND_LINE_SIZE) is 2048 bytes on x86.
const maxCmdline = 64 << 10

func readCmdline(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, maxCmdline))
}

// ParseCmdline splits a kernel command line into its kubeboot.* parameters.
// Values may be double-quoted as the kernel allows ("a b" keeps the space).
func ParseCmdline(cmdline string) map[string]string {
	out := map[string]string{}
	for _, word := range splitCmdline(cmdline) {
		k, v, _ := strings.Cut(word, "=")
		if strings.HasPrefix(k, "kubeboot.") {
			out[k] = v // the last one wins, as with the kernel's own parameters
		}
	}
	return out
}

func splitCmdline(s string) []string {
	var words []string
	var cur strings.Builder
	inQuote, have := false, false
	for _, r := range s {
		switch {
		case r == '"':
			inQuote = !inQuote
			have = true
		case !inQuote && (r == ' ' || r == '\t' || r == '\n'):
			if have {
				words = append(words, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if have {
		words = append(words, cur.String())
	}
	return words
}

func fromCmdline(ctx context.Context, o Options, loc, pin string) (*Result, error) {
	if pin != "" && !pinRE.MatchString(pin) {
		return nil, fmt.Errorf("kernel command line: kubeboot.config.sha256=%q: expected 64 hex digits, optionally prefixed sha256:", pin)
	}
	switch {
	case strings.HasPrefix(loc, "http://"), strings.HasPrefix(loc, "https://"):
		got, err := fetchHTTP(ctx, o, loc, pin)
		if err != nil {
			return nil, err
		}
		cfg, err := machineconfig.Parse(got.final, got.data)
		if err != nil {
			return nil, err
		}
		src := "kernel command line " + got.shown
		if got.final != got.shown {
			src += " (redirected to " + got.final + ")"
		}
		return &Result{Config: cfg, Source: src}, nil
	case strings.HasPrefix(loc, "file://"):
		loc = strings.TrimPrefix(loc, "file://")
	case strings.HasPrefix(loc, "/"):
	default:
		shown := loc
		if strings.Contains(loc, "://") {
			shown = redact.URL(loc) // another scheme's URL may carry credentials too
		}
		return nil, fmt.Errorf("kernel command line: kubeboot.config=%q: expected an absolute path, file:///path or http(s)://URL", shown)
	}
	path := filepath.Join(o.Root, loc)
	// One read: the bytes checked against the pin are the bytes parsed.
	data, err := machineconfig.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("kernel command line kubeboot.config=%s: %w", loc, err)
	}
	if pin != "" {
		if err := checkPin(data, pin, loc); err != nil {
			return nil, err
		}
	}
	cfg, err := machineconfig.LoadBytes(path, data)
	if err != nil {
		return nil, err
	}
	return &Result{Config: cfg, Source: "kernel command line " + loc}, nil
}

var pinRE = regexp.MustCompile(`^(sha256:)?[0-9a-fA-F]{64}$`)
