// Package ssh is the stage that runs sshd on a node where some user has an
// SSH key (users[].sshAuthorizedKeys; the users stage writes the keys), and
// keeps it off otherwise.
//
// Host keys are never in the image (the image build removes them, so two
// nodes flashed from one image never share one). Debian's
// sshd-keygen.service makes them on the node's first boot, in /etc/ssh
// where OpenSSH and every Debian tool expect them, and this stage makes any
// that are missing (ssh-keygen -A). A node's /etc is an overlay whose upper
// layer is on STATE (docs/image.md), so the keys are the node's own,
// survive reboots and an update of the root partition, and a reflash (a
// fresh STATE) makes a new machine with new keys.
//
// The image's ssh.service runs only when PortConfig exists, which this
// stage writes when a user has a key and removes otherwise: sshd never runs
// on a node nobody can log in to. Password, keyboard-interactive and root
// logins are off in the image's /etc/ssh/sshd_config.d/50-kubeboot.conf;
// PortConfig holds the port (firewall.sshPort, which the firewall stage
// opens).
package ssh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"kubeboot.dev/kubeboot/atomicfile"
	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/bootstrapd/systemdunit"
	"kubeboot.dev/kubeboot/machineconfig"
)

const (
	// Unit is Debian's sshd service.
	Unit = "ssh.service"
	// PortConfig is the sshd drop-in the stage owns.
	PortConfig = "/etc/ssh/sshd_config.d/60-kubeboot-port.conf"
	// keygenTimeout bounds ssh-keygen -A: an RSA-3072 key under TCG takes
	// seconds.
	keygenTimeout = 2 * time.Minute
)

// HostKeys are the host keys ssh-keygen -A makes (OpenSSH's default
// HostKey list), relative to the root.
var HostKeys = []string{"/etc/ssh/ssh_host_rsa_key", "/etc/ssh/ssh_host_ecdsa_key", "/etc/ssh/ssh_host_ed25519_key"}

// Stage is the ssh stage.
type Stage struct{}

// New returns the ssh stage.
func New() stage.Stage { return Stage{} }

func (Stage) Name() string { return "ssh" }

// inputs are what the stage reads: whether sshd runs, and on which port.
type inputs struct {
	Enabled bool
	Port    int
}

func inputsOf(cfg *machineconfig.MachineConfig) inputs {
	in := inputs{Enabled: cfg.SSHEnabled(), Port: machineconfig.DefaultSSHPort}
	if cfg.Firewall.SSHPort != nil {
		in.Port = *cfg.Firewall.SSHPort
	}
	return in
}

// Inputs: whether a user has a key, and the port.
func (Stage) Inputs(cfg *machineconfig.MachineConfig) any { return inputsOf(cfg) }

// Validate: with keys, the image must have sshd.
func (Stage) Validate(_ context.Context, env *stage.Env) error {
	if !env.Config.SSHEnabled() {
		return nil
	}
	if _, err := os.Stat(env.Path(sshd)); err != nil {
		return fmt.Errorf("users have sshAuthorizedKeys, but this image has no sshd (%s, Debian package openssh-server): %w", sshd, err)
	}
	return nil
}

const sshd = "/usr/sbin/sshd"

func (s Stage) Plan(ctx context.Context, env *stage.Env) ([]stage.Change, error) {
	return s.run(ctx, env, false)
}

func (s Stage) Apply(ctx context.Context, env *stage.Env) ([]stage.Change, error) {
	return s.run(ctx, env, true)
}

func (Stage) run(ctx context.Context, env *stage.Env, apply bool) ([]stage.Change, error) {
	in := inputsOf(env.Config)
	conn, err := systemdunit.Connect(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	st, err := conn.Query(ctx, Unit)
	if err != nil && in.Enabled {
		return nil, fmt.Errorf("%w (Debian package openssh-server)", err)
	}
	if err != nil {
		return nil, nil // no sshd on this image, and none wanted
	}
	if !in.Enabled {
		return off(ctx, env, conn, st, apply)
	}

	var changes []stage.Change
	missing := missingHostKeys(env)
	if len(missing) > 0 {
		changes = append(changes, stage.Change(fmt.Sprintf("make SSH host keys (%d missing)", len(missing))))
		if apply {
			if err := keygen(ctx, env); err != nil {
				return changes, err
			}
		}
	}
	want := []byte("# firewall.sshPort of the machine config, written by bootstrapd\nPort " + strconv.Itoa(in.Port) + "\n")
	have, err := os.ReadFile(env.Path(PortConfig))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return changes, err
	}
	portChanged := !bytes.Equal(have, want)
	if portChanged {
		changes = append(changes, stage.Change(fmt.Sprintf("write %s (port %d)", PortConfig, in.Port)))
		if apply {
			if err := atomicfile.Write(env.Path(PortConfig), want, 0o644, 0o755); err != nil {
				return changes, err
			}
		}
	}
	if !st.Enabled {
		changes = append(changes, "enable "+Unit)
		if apply {
			if err := conn.Enable(ctx, Unit); err != nil {
				return changes, err
			}
		}
	}
	// sshd reads its configuration and keys when it starts.
	switch {
	case !st.Active:
		changes = append(changes, "start "+Unit)
		if apply {
			return changes, conn.Start(ctx, Unit)
		}
	case portChanged || len(missing) > 0:
		changes = append(changes, "restart "+Unit)
		if apply {
			return changes, conn.Restart(ctx, Unit)
		}
	}
	return changes, nil
}

// off keeps sshd disabled and stopped, and its PortConfig (the unit's
// condition) away: no user has a key, so nobody could log in, and the
// firewall keeps the port closed. Host keys stay: they are this node's
// identity should keys come back.
func off(ctx context.Context, env *stage.Env, conn *systemdunit.Conn, st systemdunit.State, apply bool) ([]stage.Change, error) {
	var changes []stage.Change
	if _, err := os.Lstat(env.Path(PortConfig)); err == nil {
		changes = append(changes, "remove "+PortConfig)
		if apply {
			if err := atomicfile.Remove(env.Path(PortConfig)); err != nil {
				return changes, err
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if st.Enabled {
		changes = append(changes, "disable "+Unit+" (no user has an SSH key)")
		if apply {
			if err := conn.Disable(ctx, Unit); err != nil {
				return changes, err
			}
		}
	}
	if st.Active {
		changes = append(changes, "stop "+Unit)
		if apply {
			if err := conn.Stop(ctx, Unit); err != nil {
				return changes, err
			}
		}
	}
	return changes, nil
}

func missingHostKeys(env *stage.Env) []string {
	var missing []string
	for _, k := range HostKeys {
		if _, err := os.Stat(env.Path(k)); err != nil {
			missing = append(missing, k)
		}
	}
	return missing
}

// keygen makes the missing host keys with OpenSSH's own ssh-keygen -A
// (-f: under a root other than /).
func keygen(ctx context.Context, env *stage.Env) error {
	args := []string{"-A"}
	if root := filepath.Clean(env.Root); root != "/" {
		args = append(args, "-f", root)
	}
	ctx, cancel := context.WithTimeout(ctx, keygenTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "ssh-keygen", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("ssh-keygen -A: %v: %s", err, bytes.TrimSpace(out))
	}
	if missing := missingHostKeys(env); len(missing) > 0 {
		return fmt.Errorf("ssh-keygen -A left %v missing", missing)
	}
	env.Log.Info("ssh: host keys made")
	return nil
}
