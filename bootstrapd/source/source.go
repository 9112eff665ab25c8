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
	"kubeboot.dev/kubeboot/clustersecrets"
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
	// Secrets are the cluster secrets of the config, inline or read from
	// its secretsBundle, validated and reduced to what the role needs (a
	// worker has the CA certificate and the token only); nil when the
	// config has none. The same value as Config.Kubernetes.Credentials.
	// ClusterSecrets(). Never log them.
	Secrets *machineconfig.ClusterSecrets
}

// BundlePath is where a node keeps its cluster secrets (Result.Secrets):
// root's only, in the persistent state partition.
const BundlePath = "/var/lib/kubeboot/secrets/bundle.yaml"

// Install keeps the node's cluster secrets at BundlePath under root, 0600
// in a 0700 directory, and removes a copy the config no longer has. It
// writes nothing when the file already holds them.
func (r *Result) Install(root string) error {
	p := filepath.Join(root, BundlePath)
	if r.Secrets == nil {
		if err := atomicfile.Remove(p); err != nil {
			return fmt.Errorf("remove the old secrets bundle %s: %w", BundlePath, err)
		}
		return nil
	}
	// The directory is made private even when the bundle is already there.
	if err := atomicfile.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("keep the secrets bundle at %s: %w", BundlePath, err)
	}
	if _, err := clustersecrets.WriteBundle(p, r.Secrets); err != nil {
		return fmt.Errorf("keep the secrets bundle at %s: %w", BundlePath, err)
	}
	return nil
}

// loaded completes a Result from a parsed config.
func loaded(cfg *machineconfig.MachineConfig, source string) *Result {
	return &Result{Config: cfg, Source: source, Secrets: cfg.Kubernetes.Credentials.ClusterSecrets()}
}

// nodeFiles reads the files a config names on the node: relative names
// from dir, absolute ones under root. A config from a URL has no
// directory (dir ""): it may only name absolute paths.
func nodeFiles(root, dir string) machineconfig.Files {
	if dir == "" {
		return func(name string) ([]byte, error) {
			if !filepath.IsAbs(name) {
				return nil, errors.New("a config fetched over http(s) cannot name a file next to it; give an absolute path on the node or the secrets inline")
			}
			return machineconfig.FilesFrom(root, "/")(name)
		}
	}
	return machineconfig.FilesFrom(root, dir)
}

// loadFile reads and parses a config file on this machine.
func loadFile(path string, files machineconfig.Files) (*machineconfig.MachineConfig, error) {
	data, err := machineconfig.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return machineconfig.ParseWithFiles(path, data, files)
}

// ErrNoConfig means no source had a config.
var ErrNoConfig = errors.New("no machine config found")

// Load returns the first config found, in the order of the package doc.
func Load(ctx context.Context, o Options) (*Result, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.ConfigPath != "" {
		cfg, err := loadFile(o.ConfigPath, machineconfig.FilesFrom("", filepath.Dir(o.ConfigPath)))
		if err != nil {
			return nil, err
		}
		return loaded(cfg, "--config "+o.ConfigPath), nil
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
		cfg, err := loadFile(baked, nodeFiles(o.Root, filepath.Dir(baked)))
		if err != nil {
			return nil, err
		}
		return loaded(cfg, "image "+BakedPath), nil
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
		cfg, err := machineconfig.ParseWithFiles(got.final, got.data, nodeFiles(o.Root, ""))
		if err != nil {
			return nil, err
		}
		src := "kernel command line " + got.shown
		if got.final != got.shown {
			src += " (redirected to " + got.final + ")"
		}
		return loaded(cfg, src), nil
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
	cfg, err := machineconfig.ParseWithFiles(path, data, nodeFiles(o.Root, filepath.Dir(path)))
	if err != nil {
		return nil, err
	}
	return loaded(cfg, "kernel command line "+loc), nil
}

var pinRE = regexp.MustCompile(`^(sha256:)?[0-9a-fA-F]{64}$`)
