// Package hostname is the stage that names the node: the kernel hostname
// (of the calling process's UTS namespace), /etc/hostname for the next
// boots, and a managed block in /etc/hosts so the name resolves without DNS
// (kubeadm's preflight looks the node name up) and the config's extra host
// entries exist. Lines of /etc/hosts outside the block are kept as they are.
package hostname

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"kubeboot.dev/kubeboot/atomicfile"
	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/machineconfig"
)

// The managed block of /etc/hosts lies between these lines.
const (
	BlockBegin = "# BEGIN kubeboot: managed by bootstrapd from the machine config; edits here are replaced"
	BlockEnd   = "# END kubeboot"
)

// defaultHosts starts /etc/hosts when the image has none.
const defaultHosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"

// Stage is the hostname stage.
type Stage struct{}

// New returns the hostname stage.
func New() stage.Stage { return Stage{} }

func (Stage) Name() string { return "hostname" }

// Inputs: the names and the /etc/hosts block (which names the node's
// advertise address).
func (Stage) Inputs(cfg *machineconfig.MachineConfig) any {
	return struct {
		Hostname, AdvertiseAddress string
		Hosts                      []machineconfig.HostEntry
	}{cfg.Hostname, cfg.Kubernetes.AdvertiseAddress, cfg.Hosts}
}

// Validate checks there is a name to set.
func (Stage) Validate(_ context.Context, env *stage.Env) error {
	if env.Config.Hostname == "" {
		return errors.New("the machine config has no hostname and the config source gave none (set hostname, or local-hostname in NoCloud meta-data)")
	}
	return nil
}

func (s Stage) Plan(_ context.Context, env *stage.Env) ([]stage.Change, error) {
	_, changes, err := s.diff(env)
	return changes, err
}

func (s Stage) Apply(_ context.Context, env *stage.Env) ([]stage.Change, error) {
	w, changes, err := s.diff(env)
	if err != nil {
		return nil, err
	}
	if w.kernel {
		if err := unix.Sethostname([]byte(env.Config.Hostname)); err != nil {
			return nil, fmt.Errorf("set kernel hostname %q: %w", env.Config.Hostname, err)
		}
	}
	if w.hostnameFile != nil {
		if err := atomicfile.Write(env.Path("/etc/hostname"), w.hostnameFile, 0o644, 0o755); err != nil {
			return nil, fmt.Errorf("write /etc/hostname: %w", err)
		}
	}
	if w.hostsFile != nil {
		if err := atomicfile.Write(env.Path("/etc/hosts"), w.hostsFile, 0o644, 0o755); err != nil {
			return nil, fmt.Errorf("write /etc/hosts: %w", err)
		}
	}
	return changes, nil
}

// work is what Apply has to do; nil contents mean "already right".
type work struct {
	kernel                  bool
	hostnameFile, hostsFile []byte
}

func (Stage) diff(env *stage.Env) (work, []stage.Change, error) {
	var w work
	var changes []stage.Change
	name := env.Config.Hostname

	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return w, nil, fmt.Errorf("read kernel hostname: %w", err)
	}
	if cur := unix.ByteSliceToString(uts.Nodename[:]); cur != name {
		w.kernel = true
		changes = append(changes, stage.Change(fmt.Sprintf("kernel hostname: %q -> %q", cur, name)))
	}

	want := []byte(name + "\n")
	cur, err := readOptional(env.Path("/etc/hostname"))
	if err != nil {
		return w, nil, err
	}
	if !bytes.Equal(cur, want) {
		w.hostnameFile = want
		changes = append(changes, stage.Change(fmt.Sprintf("/etc/hostname: %q -> %q", strings.TrimSpace(string(cur)), name)))
	}

	hosts, err := readOptional(env.Path("/etc/hosts"))
	if err != nil {
		return w, nil, err
	}
	if hosts == nil {
		hosts = []byte(defaultHosts)
	}
	block := Block(env.Config)
	if next := ReplaceBlock(hosts, block); !bytes.Equal(next, hosts) || !fileExists(env.Path("/etc/hosts")) {
		w.hostsFile = next
		changes = append(changes, stage.Change(fmt.Sprintf("/etc/hosts: set the kubeboot block (%d entries)", strings.Count(block, "\n"))))
	}
	return w, changes, nil
}

// Block returns the managed /etc/hosts lines for cfg (without markers): the
// node's address (kubernetes.advertiseAddress, which machineconfig defaults
// from the static addresses) with its name and short name, then the
// config's hosts (unless they name the node already). A DHCP-only node has no such address and leaves its name
// to DNS.
func Block(cfg *machineconfig.MachineConfig) string {
	var b strings.Builder
	named := slices.ContainsFunc(cfg.Hosts, func(h machineconfig.HostEntry) bool { return slices.Contains(h.Names, cfg.Hostname) })
	if ip, err := netip.ParseAddr(cfg.Kubernetes.AdvertiseAddress); err == nil && !named {
		names := []string{cfg.Hostname}
		if short, _, ok := strings.Cut(cfg.Hostname, "."); ok && short != "" {
			names = append(names, short)
		}
		fmt.Fprintf(&b, "%s\t%s\n", ip, strings.Join(names, " "))
	}
	for _, h := range cfg.Hosts {
		fmt.Fprintf(&b, "%s\t%s\n", h.IP, strings.Join(h.Names, " "))
	}
	return b.String()
}

// ReplaceBlock returns hosts with its managed block set to block, keeping
// every other line. A missing block is appended at the end; a begin marker
// without an end marker is dropped, and the lines after it are kept.
func ReplaceBlock(hosts []byte, block string) []byte {
	var out, pending strings.Builder
	inBlock, placed := false, false
	put := func() {
		out.WriteString(BlockBegin + "\n" + block + BlockEnd + "\n")
		placed = true
	}
	for _, l := range strings.SplitAfter(string(hosts), "\n") {
		switch t := strings.TrimSpace(l); {
		case !inBlock && t == BlockBegin:
			inBlock = true
		case inBlock && t == BlockEnd:
			inBlock = false
			pending.Reset()
			if !placed {
				put()
			}
		case inBlock:
			pending.WriteString(l)
		default:
			out.WriteString(l)
		}
	}
	out.WriteString(pending.String())
	if !placed {
		if s := out.String(); s != "" && !strings.HasSuffix(s, "\n") {
			out.WriteString("\n")
		}
		put()
	}
	return []byte(out.String())
}

func readOptional(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return data, err
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
