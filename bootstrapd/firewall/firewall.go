// Package firewall is bootstrapd's firewall stage: it opens the node role's
// Kubernetes ports (plus the config's extra ones). When firewalld runs, the
// ports are opened through its D-Bus API, runtime and permanent, so the
// admin's firewalld setup stays in charge; otherwise the stage owns one
// nftables table, inet kubeboot, with a default-drop input chain.
package firewall

import (
	"context"
	"fmt"

	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/machineconfig"
)

// New returns the firewall stage.
func New() stage.Stage { return firewallStage{} }

type firewallStage struct{}

func (firewallStage) Name() string { return "firewall" }

// backend is one way of making the firewall match the policy.
type backend interface {
	Plan(env *stage.Env, p policy) ([]stage.Change, error)
	Apply(env *stage.Env, p policy) ([]stage.Change, error)
}

// Validate checks the firewall section alone. Whether firewalld runs is
// not checked here: it may still be starting, which Apply retries.
func (s firewallStage) Validate(ctx context.Context, env *stage.Env) error {
	_, err := policyOf(env.Config)
	return err
}

func (s firewallStage) Plan(ctx context.Context, env *stage.Env) ([]stage.Change, error) {
	b, p, err := resolve(ctx, env)
	if err != nil || b == nil {
		return noneChange(env, err)
	}
	defer closeBackend(b)
	return b.Plan(env, p)
}

func (s firewallStage) Apply(ctx context.Context, env *stage.Env) ([]stage.Change, error) {
	b, p, err := resolve(ctx, env)
	if err != nil || b == nil {
		_, err := noneChange(env, err)
		return nil, err
	}
	defer closeBackend(b)
	return b.Apply(env, p) // the engine logs the changes
}

// noneChange is what Plan says for backend none: nothing will be done, on
// purpose, which the operator should see in `bootstrapd plan`.
func noneChange(env *stage.Env, err error) ([]stage.Change, error) {
	if err != nil {
		return nil, err
	}
	env.Log.Info("firewall: backend none, leaving the firewall alone")
	return nil, nil
}

func closeBackend(b backend) {
	if c, ok := b.(interface{ close() }); ok {
		c.close()
	}
}

// resolve picks the backend the config asks for; nil for backend none.
func resolve(ctx context.Context, env *stage.Env) (backend, policy, error) {
	p, err := policyOf(env.Config)
	if err != nil {
		return nil, policy{}, err
	}
	switch env.Config.Firewall.Backend {
	case machineconfig.BackendNone:
		return nil, p, nil
	case machineconfig.BackendNftables:
		return nftBackend{}, p, nil
	case machineconfig.BackendFirewalld:
		fw, err := connectFirewalld(ctx)
		if err != nil {
			return nil, p, err
		}
		if !fw.running() {
			fw.close()
			return nil, p, stage.Temporary(fmt.Errorf("firewall.backend is firewalld but firewalld is not running (no owner of %s on the system bus): start firewalld.service or use backend auto", firewalldName))
		}
		return fw, p, nil
	case "", machineconfig.BackendAuto:
		fw, err := connectFirewalld(ctx)
		if err != nil {
			// No system bus: firewalld cannot be running either.
			env.Log.Debug("firewall: no system bus, using nftables", "err", err)
			return nftBackend{}, p, nil
		}
		if fw.running() {
			return fw, p, nil
		}
		fw.close()
		return nftBackend{}, p, nil
	default:
		return nil, p, fmt.Errorf("firewall.backend: %q is not one of auto, firewalld, nftables, none", env.Config.Firewall.Backend)
	}
}

// PortsOpen reports whether the firewall already lets the configured ports
// in, i.e. the stage has nothing left to do with the backend it would use.
// It is false for backend none, where bootstrapd cannot vouch for anything.
//
// It is for the kubeadm stage. kubeadm's preflight check "Firewalld"
// (k8s.io/kubernetes v1.37.2 cmd/kubeadm/app/preflight/checks.go:192-222,
// run by init and join --control-plane) only asks systemd whether
// firewalld.service is active, then always warns "firewalld is active,
// please ensure ports [6443 10250] are open". Ignoring it does not help:
// RunChecks turns ignored errors into warnings and prints every warning
// (verified: with both ports open and ignorePreflightErrors: [Firewalld]
// the warning still appears). So when PortsOpen is true the kubeadm stage
// runs the preflight itself (`kubeadm init phase preflight --config F`, or
// `kubeadm join phase preflight`), drops exactly the "[WARNING Firewalld]"
// line, logs instead which ports it verified open, and runs kubeadm with
// skipPhases: [preflight] so the check does not run twice. When PortsOpen is
// false the warning is passed on untouched.
func PortsOpen(ctx context.Context, env *stage.Env) (bool, error) {
	b, p, err := resolve(ctx, env)
	if err != nil || b == nil {
		return false, err
	}
	defer closeBackend(b)
	changes, err := b.Plan(env, p)
	return err == nil && len(changes) == 0, err
}
