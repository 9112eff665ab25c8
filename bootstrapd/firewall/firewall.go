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
	name() string
	Plan(env *stage.Env, p policy) ([]stage.Change, error)
	Apply(env *stage.Env, p policy) ([]stage.Change, error)
}

// Inputs: the firewall section, the role, whose ports it opens, and the
// pod network (the subnet it trusts, the backend's port).
func (firewallStage) Inputs(cfg *machineconfig.MachineConfig) any {
	return struct {
		Role       machineconfig.Role
		Firewall   machineconfig.Firewall
		PodSubnet  string
		PodNetwork machineconfig.PodNetwork
	}{cfg.Role, cfg.Firewall, cfg.Kubernetes.PodSubnet, cfg.Kubernetes.PodNetwork}
}

func (s firewallStage) Plan(ctx context.Context, env *stage.Env) ([]stage.Change, error) {
	b, p, err := resolve(ctx, env)
	if err != nil || b == nil {
		return noneChange(env, err)
	}
	defer closeBackend(b)
	changes, err := b.Plan(env, p)
	if err == nil && len(changes) == 0 {
		publish(env, b, p)
	}
	return changes, err
}

func (s firewallStage) Apply(ctx context.Context, env *stage.Env) ([]stage.Change, error) {
	b, p, err := resolve(ctx, env)
	if err != nil || b == nil {
		_, err := noneChange(env, err)
		return nil, err
	}
	defer closeBackend(b)
	changes, err := b.Apply(env, p) // the engine logs the changes
	if err == nil {
		publish(env, b, p)
	}
	return changes, err
}

// publish tells later stages which ports are verified open: the kubeadm
// stage needs it because kubeadm's preflight check "Firewalld"
// (k8s.io/kubernetes v1.37.2 cmd/kubeadm/app/preflight/checks.go:192-222,
// run by init and join --control-plane) only asks systemd whether
// firewalld.service is active, then always warns "firewalld is active,
// please ensure ports [6443 10250] are open". Ignoring the check does not
// help: RunChecks prints ignored errors as warnings too (verified with both
// ports open and ignorePreflightErrors: [Firewalld]). So the kubeadm stage
// runs the preflight itself and drops exactly that warning when the ports it
// names are in Open, and passes it on otherwise.
func publish(env *stage.Env, b backend, p policy) {
	open := make([]string, 0, len(p.ports))
	for _, port := range p.ports {
		open = append(open, port.String())
	}
	env.Data.Firewall = stage.FirewallResult{Backend: b.name(), Open: open}
}

// noneChange is what Plan says for backend none: nothing will be done, on
// purpose, which the operator should see in `bootstrapd plan`.
func noneChange(env *stage.Env, err error) ([]stage.Change, error) {
	if err != nil {
		return nil, err
	}
	env.Log.Info("firewall: backend none, leaving the firewall alone")
	env.Data.Firewall = stage.FirewallResult{Backend: string(machineconfig.BackendNone)}
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
