package source

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"kubeboot.dev/kubeboot/bootstrapd/source/volume"
	"kubeboot.dev/kubeboot/machineconfig"
)

// NoCloudLabels are the volume labels cloud-init's NoCloud accepts: FAT
// labels are stored upper case, ISO9660 ones as given.
var NoCloudLabels = []string{"CIDATA", "cidata"}

// fromNoCloud reads the first volume labelled CIDATA/cidata, or returns nil
// when there is none.
func fromNoCloud(o Options) (*Result, error) {
	dev := findByLabel(o.Root)
	if dev == "" {
		return nil, nil
	}
	return readNoCloud(dev, o.Root)
}

// findByLabel looks in /dev/disk/by-label (udev) first and asks blkid when
// udev has not named the volume (early boot, or no udev at all).
func findByLabel(root string) string {
	for _, l := range NoCloudLabels {
		p := filepath.Join(root, "/dev/disk/by-label", l)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if root != "/" && root != "" {
		return "" // blkid probes the machine's devices, not a test root
	}
	for _, l := range NoCloudLabels {
		out, err := exec.Command("blkid", "-l", "-o", "device", "-t", "LABEL="+l).Output()
		if dev := strings.TrimSpace(string(out)); err == nil && dev != "" {
			return dev
		}
	}
	return ""
}

// Caps on what is read from a NoCloud volume, checked against the
// directory entry before a byte of the file is read. user-data and
// network-config are machine config text (machineconfig.MaxSize);
// meta-data holds two keys bootstrapd uses and is a few hundred bytes when
// cloud-localds or kubeboot cidata writes it; a secrets bundle holds a few
// certificates and keys, about 20 KiB.
const (
	maxMetaData   = 64 << 10
	maxBundleSize = 1 << 20
)

// ReadNoCloud reads a NoCloud volume (a block device or an image file)
// without mounting it (no mount point to clean up, no kernel file system
// driver, nothing on it can be executed), through the bounded reader of
// package volume: a hostile volume gets a clear error, never a loop or
// an allocation beyond the caps above.
func ReadNoCloud(dev string) (*Result, error) { return readNoCloud(dev, "/") }

// readNoCloud is ReadNoCloud for a node whose / is root: absolute paths a
// config names are read under it.
func readNoCloud(dev, root string) (*Result, error) {
	fsys, closeVolume, err := volume.OpenFile(dev)
	if err != nil {
		return nil, fmt.Errorf("NoCloud volume %s: %w", dev, err)
	}
	defer closeVolume()
	where := fmt.Sprintf("NoCloud volume %s (%s, label %s)", dev, fsys.Type(), strconv.QuoteToGraphic(fsys.Label()))

	userData, err := fsys.ReadFile("user-data", machineconfig.MaxSize)
	if err != nil {
		return nil, fmt.Errorf("%s: %w (it must hold the kubeboot machine config)", where, err)
	}
	meta, err := optional(fsys.ReadFile("meta-data", maxMetaData))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	// network-config becomes user-data's network section: the two share
	// one machine config's budget.
	netcfg, err := optional(fsys.ReadFile("network-config", int64(machineconfig.MaxSize-len(userData))))
	if err != nil {
		return nil, fmt.Errorf("%s: %w (with user-data's %d bytes it would pass the %d KiB of a machine config)", where, err, len(userData), machineconfig.MaxSize>>10)
	}
	// Files the config names by a relative path sit next to user-data
	// on the volume, which is not mounted.
	files := func(name string) ([]byte, error) {
		if filepath.IsAbs(name) {
			return machineconfig.FilesFrom(root, "/")(name)
		}
		data, err := fsys.ReadFile(path.Clean(name), maxBundleSize)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("not on the volume next to user-data (kubeboot cidata puts it there): %w", err)
		}
		return data, err
	}
	res, err := parseNoCloud(where, userData, meta, netcfg, files)
	if err != nil {
		return nil, err
	}
	res.Source = where
	return res, nil
}

// optional makes a missing file no error: meta-data and network-config
// may be absent.
func optional(data []byte, err error) ([]byte, error) {
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return data, err
}

// metaData is the part of NoCloud meta-data bootstrapd uses.
type metaData struct {
	InstanceID    string `yaml:"instance-id"`
	LocalHostname string `yaml:"local-hostname"`
}

// parseNoCloud builds the config from the three NoCloud files. Precedence:
// network-config, when present, replaces user-data's network section (as
// cloud-init does); user-data's hostname wins over meta-data's
// local-hostname, which only fills a missing one — the machine config is
// the document the operator wrote for this node, meta-data is often
// generated per platform.
//
// Both are merged into user-data's text before machineconfig.Parse, so the
// whole result is validated at once (firewall.interfaces against the
// network-config links, for example), and line numbers of user-data's own
// fields stay right: a replaced network section is blanked line for line,
// the merged parts are appended at the end.
func parseNoCloud(where string, userData, meta, netcfg []byte, files machineconfig.Files) (*Result, error) {
	var md metaData
	if len(bytes.TrimSpace(meta)) > 0 {
		if err := yaml.Unmarshal(meta, &md); err != nil {
			return nil, fmt.Errorf("%s: meta-data: %w", where, err)
		}
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(userData, &doc); err != nil || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode || doc.Content[0].Style&yaml.FlowStyle != 0 {
		// Let Parse say precisely what is wrong with it.
		if _, perr := machineconfig.Parse("user-data", userData); perr != nil {
			return nil, fmt.Errorf("%s: %w", where, perr)
		}
		return nil, fmt.Errorf("%s: user-data must be a YAML block mapping (the kubeboot machine config)", where)
	}
	root := doc.Content[0]
	text := string(userData)
	if !strings.HasSuffix(text, "\n") {
		text += "\n"
	}

	if len(bytes.TrimSpace(netcfg)) > 0 {
		// Validated on its own first, so its errors name its own lines.
		if _, err := machineconfig.ParseNetplan("network-config", netcfg); err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		section, err := networkSection(netcfg)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		text = blankKey(text, root, "network") + section
	}
	if md.LocalHostname != "" && !hasKey(root, "hostname") {
		text += "hostname: " + strconv.Quote(md.LocalHostname) + "\n"
	}
	if len(text) > machineconfig.MaxSize {
		return nil, fmt.Errorf("%s: user-data with network-config and meta-data merged is %d bytes, more than the %d KiB of a machine config", where, len(text), machineconfig.MaxSize>>10)
	}
	cfg, err := machineconfig.ParseWithFiles("user-data", []byte(text), files)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	res := loaded(cfg, where)
	res.InstanceID = md.InstanceID
	return res, nil
}

// networkSection is network-config's text as the network section of a
// machine config: as it is when network: is its top-level key, else
// indented under a network: line. It works on the text, not a re-encoded
// YAML tree: yaml.v3's encoder took 115 MiB for a 128 KiB flow list.
//
// The caller has validated network-config with machineconfig.ParseNetplan,
// so it is one document whose root is a mapping: a line starting at column
// 0 with "---", "..." or "%" is a document marker or directive, and the
// first other line at column 0 holds the root's first key. A root that is
// not a block mapping with plain keys is refused, as is such a user-data;
// FuzzNetworkConfig checks that every network-config ParseNetplan takes is
// either refused here or merges into the same network.
func networkSection(netcfg []byte) (string, error) {
	var lines []string
	first := "" // the first line of content
	for _, l := range strings.Split(strings.TrimRight(yamlLineBreaks.Replace(string(netcfg)), "\n"), "\n") {
		bare := l
		if marker, rest := documentMarker(bare); marker {
			if strings.TrimSpace(rest) != "" && !strings.HasPrefix(strings.TrimSpace(rest), "#") {
				return "", fmt.Errorf("network-config: content after %q on one line is not supported; start the mapping on the next line", bare[:3])
			}
			continue
		}
		if t := strings.TrimSpace(bare); first == "" && t != "" && !strings.HasPrefix(t, "#") {
			first = bare
		}
		lines = append(lines, l)
	}
	if first == "" || strings.ContainsAny(first[:1], " \t{[?!&*|>'\"-") && !wrappedKeyRE.MatchString(first) {
		return "", fmt.Errorf("network-config must be a YAML block mapping with plain keys at column 0, as cloud-init writes it")
	}
	wrapped := wrappedKeyRE.MatchString(first)
	var b strings.Builder
	if !wrapped {
		b.WriteString("network:\n")
	}
	for _, l := range lines {
		if !wrapped && l != "" {
			b.WriteString("  ")
		}
		b.WriteString(l + "\n")
	}
	return b.String(), nil
}

// yamlLineBreaks are the line breaks of YAML (and yaml.v3): CR LF, CR, LF,
// NEL, LS and PS, all of which the parser reads as one "\n".
var yamlLineBreaks = strings.NewReplacer("\r\n", "\n", "\r", "\n", "\u0085", "\n", "\u2028", "\n", "\u2029", "\n")

// wrappedKeyRE is a root key network: (plain or quoted).
var wrappedKeyRE = regexp.MustCompile(`^(network|"network"|'network')[ \t]*:([ \t]|$)`)

// documentMarker reports whether line is a document start or end marker,
// or a directive, and returns what follows the marker.
func documentMarker(line string) (bool, string) {
	switch {
	case strings.HasPrefix(line, "%"):
		return true, ""
	case line == "---" || line == "...":
		return true, ""
	case strings.HasPrefix(line, "--- ") || strings.HasPrefix(line, "---\t") || strings.HasPrefix(line, "... ") || strings.HasPrefix(line, "...\t"):
		return true, line[3:]
	}
	return false, ""
}

// blankKey comments out the lines of a top-level key and its value,
// keeping the line count.
func blankKey(text string, root *yaml.Node, key string) string {
	first, last := 0, 0
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == key {
			first = root.Content[i].Line
			last = -1
			if i+2 < len(root.Content) {
				last = root.Content[i+2].Line - 1
			}
			break
		}
	}
	if first == 0 {
		return text
	}
	lines := strings.SplitAfter(text, "\n")
	for i := range lines {
		if n := i + 1; n >= first && (last < 0 || n <= last) && lines[i] != "" {
			lines[i] = "# (replaced by network-config)\n"
		}
	}
	return strings.Join(lines, "")
}

func hasKey(root *yaml.Node, key string) bool { return mapValue(root, key) != nil }

func mapValue(n *yaml.Node, key string) *yaml.Node {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}
