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
	"strconv"
	"strings"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/filesystem/iso9660"
	"go.yaml.in/yaml/v3"

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

// ReadNoCloud reads a NoCloud volume (a block device or an image file) with
// go-diskfs's FAT and ISO9660 readers, without mounting it: no mount point
// to clean up, no kernel file system driver needed, and nothing on the
// volume can be executed.
func ReadNoCloud(dev string) (*Result, error) { return readNoCloud(dev, "/") }

// readNoCloud is ReadNoCloud for a node whose / is root: absolute paths a
// config names are read under it.
func readNoCloud(dev, root string) (*Result, error) {
	d, err := diskfs.Open(dev, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		return nil, fmt.Errorf("NoCloud volume %s: %w", dev, err)
	}
	defer d.Close()
	fsys, err := d.GetFilesystem(0) // the whole device is the file system
	if err != nil {
		// On a block device go-diskfs probes ISO9660 with the device's
		// 512-byte sectors; ISO9660 always has 2048-byte blocks.
		if iso, ierr := iso9660.Read(d.Backend, d.Size, 0, 2048); ierr == nil {
			fsys, err = iso, nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("NoCloud volume %s: no FAT or ISO9660 file system: %w", dev, err)
	}
	where := fmt.Sprintf("NoCloud volume %s (%s, label %s)", dev, fsType(fsys.Type()), strings.TrimSpace(fsys.Label()))

	userData, err := readVolumeFile(fsys, "user-data")
	if err != nil {
		return nil, fmt.Errorf("%s: user-data: %w (it must hold the kubeboot machine config)", where, err)
	}
	meta, err := readVolumeFile(fsys, "meta-data")
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: meta-data: %w", where, err)
	}
	netcfg, err := readVolumeFile(fsys, "network-config")
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: network-config: %w", where, err)
	}
	// Files the config names by a relative path sit next to user-data
	// on the volume, which is not mounted.
	files := func(name string) ([]byte, error) {
		if filepath.IsAbs(name) {
			return machineconfig.FilesFrom(root, "/")(name)
		}
		data, err := readVolumeFile(fsys, path.Clean(name))
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

func fsType(t filesystem.Type) string {
	switch t {
	case filesystem.TypeFat32:
		return "fat32"
	case filesystem.TypeFat16:
		return "fat16"
	case filesystem.TypeFat12:
		return "fat12"
	case filesystem.TypeISO9660:
		return "iso9660"
	default:
		return "unexpected type " + strconv.Itoa(int(t))
	}
}

func readVolumeFile(fsys filesystem.FileSystem, name string) ([]byte, error) {
	data, err := fsys.ReadFile(name)
	if err == nil {
		return trimToSize(fsys, name, data), nil
	}
	// Readers differ on whether names are rooted; a missing file must
	// still read as fs.ErrNotExist whatever the reader says.
	if data, err2 := fsys.ReadFile("/" + name); err2 == nil {
		return trimToSize(fsys, "/"+name, data), nil
	}
	if _, serr := fsys.Stat(name); serr != nil {
		if _, serr2 := fsys.Stat("/" + name); serr2 != nil {
			return nil, fs.ErrNotExist
		}
	}
	return nil, err
}

// trimToSize cuts data to the file's size: go-diskfs v1.9.4's FAT reader
// returns files padded with zeros to a whole cluster.
func trimToSize(fsys filesystem.FileSystem, name string, data []byte) []byte {
	if st, err := fsys.Stat(name); err == nil && st.Size() >= 0 && st.Size() < int64(len(data)) {
		return data[:st.Size()]
	}
	return data
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
		section, err := netplanSection(netcfg)
		if err != nil {
			return nil, fmt.Errorf("%s: network-config: %w", where, err)
		}
		text = blankKey(text, root, "network") + "network:\n" + section
	}
	if md.LocalHostname != "" && !hasKey(root, "hostname") {
		text += "hostname: " + strconv.Quote(md.LocalHostname) + "\n"
	}
	cfg, err := machineconfig.ParseWithFiles("user-data", []byte(text), files)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	res := loaded(cfg, where)
	res.InstanceID = md.InstanceID
	return res, nil
}

// netplanSection returns network-config's body (without a top-level
// network: key) indented to sit under "network:".
func netplanSection(netcfg []byte) (string, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(netcfg, &doc); err != nil {
		return "", err
	}
	n := doc.Content[0]
	if v := mapValue(n, "network"); v != nil && len(n.Content) == 2 {
		n = v
	}
	out, err := yaml.Marshal(n)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, l := range strings.SplitAfter(strings.TrimRight(string(out), "\n"), "\n") {
		b.WriteString("  " + l)
	}
	b.WriteString("\n")
	return b.String(), nil
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
