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
	"os"

	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/bootstrapd/systemdunit"
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
	conn, err := systemdunit.Connect(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	w, err := s.want(ctx, env, conn)
	return w.changes(), err
}

func (s Stage) Apply(ctx context.Context, env *stage.Env) ([]stage.Change, error) {
	conn, err := systemdunit.Connect(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	w, err := s.want(ctx, env, conn)
	if err != nil {
		return nil, err
	}
	if w.enable {
		if err := conn.Enable(ctx, Unit); err != nil {
			return nil, err
		}
	}
	if w.start {
		if err := conn.Start(ctx, Unit); err != nil {
			return nil, err
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

func (Stage) want(ctx context.Context, env *stage.Env, conn *systemdunit.Conn) (wanted, error) {
	st, err := conn.Query(ctx, Unit)
	if err != nil {
		return wanted{}, err
	}
	w := wanted{enable: !st.Enabled}
	if _, err := os.Stat(env.Path(ConfigPath)); errors.Is(err, os.ErrNotExist) {
		return w, nil // kubeadm has not configured it yet: enabled is all
	} else if err != nil {
		return w, err
	}
	w.start = !st.Active
	return w, nil
}
