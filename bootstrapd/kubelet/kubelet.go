// Package kubelet is the stage that keeps kubelet.service enabled and, once
// kubeadm has given the kubelet its configuration, running. Enabled matters
// before kubeadm: its preflight check Service-Kubelet warns "kubelet service
// is not enabled" (the reference procedure printed it). Running matters on
// every later boot. Both go through systemd's D-Bus API (go-systemd), so the
// unit's dependencies, conditions and restart policy stay systemd's.
//
// The image's kubelet.service is enabled but idle until
// /var/lib/kubelet/config.yaml exists (ConditionPathExists): no crash loop
// before kubeadm runs. kubeadm itself restarts the kubelet when it writes
// that file; this stage starts it when it should run and does not.
package kubelet

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/coreos/go-systemd/v22/dbus"

	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/machineconfig"
)

const (
	// Unit is the kubelet's systemd unit.
	Unit = "kubelet.service"
	// ConfigPath is the KubeletConfiguration kubeadm writes; the unit runs
	// only once it exists.
	ConfigPath = "/var/lib/kubelet/config.yaml"
)

// Stage is the kubelet stage.
type Stage struct{}

// New returns the kubelet stage.
func New() stage.Stage { return Stage{} }

func (Stage) Name() string { return "kubelet" }

// Inputs: none; the unit and kubeadm's file decide.
func (Stage) Inputs(*machineconfig.MachineConfig) any { return nil }

func (s Stage) Plan(ctx context.Context, env *stage.Env) ([]stage.Change, error) {
	conn, err := connect(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	w, err := s.want(ctx, env, conn)
	return w.changes(), err
}

func (s Stage) Apply(ctx context.Context, env *stage.Env) ([]stage.Change, error) {
	conn, err := connect(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	w, err := s.want(ctx, env, conn)
	if err != nil {
		return nil, err
	}
	if w.enable {
		if _, _, err := conn.EnableUnitFilesContext(ctx, []string{Unit}, false, true); err != nil {
			return nil, fmt.Errorf("enable %s: %w", Unit, err)
		}
		if err := conn.ReloadContext(ctx); err != nil {
			return nil, fmt.Errorf("systemd daemon-reload after enabling %s: %w", Unit, err)
		}
	}
	if w.start {
		done := make(chan string, 1)
		if _, err := conn.StartUnitContext(ctx, Unit, "replace", done); err != nil {
			return nil, stage.Temporary(fmt.Errorf("start %s: %w", Unit, err))
		}
		select {
		case result := <-done:
			if result != "done" {
				return nil, stage.Temporary(fmt.Errorf("start %s: job %s (journalctl -u kubelet says why)", Unit, result))
			}
		case <-ctx.Done():
			return nil, fmt.Errorf("start %s: %w", Unit, ctx.Err())
		}
	}
	return w.changes(), nil
}

// wanted is what the stage would do.
type wanted struct{ enable, start bool }

func (w wanted) changes() []stage.Change {
	var c []stage.Change
	if w.enable {
		c = append(c, "enable "+Unit)
	}
	if w.start {
		c = append(c, "start "+Unit)
	}
	return c
}

func (Stage) want(ctx context.Context, env *stage.Env, conn *dbus.Conn) (wanted, error) {
	var w wanted
	load, err := conn.GetUnitPropertyContext(ctx, Unit, "LoadState")
	if err != nil {
		return w, stage.Temporary(fmt.Errorf("ask systemd about %s: %w", Unit, err))
	}
	if st, _ := load.Value.Value().(string); st == "not-found" {
		return w, fmt.Errorf("systemd does not know %s: the image has no kubelet", Unit)
	}
	fileState, err := conn.GetUnitPropertyContext(ctx, Unit, "UnitFileState")
	if err != nil {
		return w, stage.Temporary(fmt.Errorf("ask systemd about %s: %w", Unit, err))
	}
	switch st, _ := fileState.Value.Value().(string); st {
	case "enabled", "enabled-runtime", "static", "alias", "indirect", "linked":
	case "masked", "masked-runtime":
		return w, fmt.Errorf("%s is masked: unmask it (systemctl unmask kubelet) so the node can run Kubernetes", Unit)
	default:
		w.enable = true
	}
	if _, err := os.Stat(env.Path(ConfigPath)); errors.Is(err, os.ErrNotExist) {
		return w, nil // kubeadm has not configured it yet: enabled is all
	} else if err != nil {
		return w, err
	}
	active, err := conn.GetUnitPropertyContext(ctx, Unit, "ActiveState")
	if err != nil {
		return w, stage.Temporary(fmt.Errorf("ask systemd about %s: %w", Unit, err))
	}
	switch st, _ := active.Value.Value().(string); st {
	case "active", "activating", "reloading":
	default:
		w.start = true
	}
	return w, nil
}

// connect talks to systemd over its private socket: root only, and there
// whether or not the system bus's daemon is up yet.
func connect(ctx context.Context) (*dbus.Conn, error) {
	conn, err := dbus.NewSystemdConnectionContext(ctx)
	if err != nil {
		return nil, stage.Temporary(fmt.Errorf("connect to systemd: %w", err))
	}
	return conn, nil
}
