package firewall

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/godbus/dbus/v5"

	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/machineconfig"
)

// firewalld's D-Bus API (firewalld.dbus(5)): runtime settings on the main
// object, permanent ones on per-zone config objects.
const (
	firewalldName   = "org.fedoraproject.FirewallD1"
	firewalldPath   = dbus.ObjectPath("/org/fedoraproject/FirewallD1")
	fwMain          = firewalldName
	fwZone          = firewalldName + ".zone"
	fwConfig        = firewalldName + ".config"
	fwConfigZone    = firewalldName + ".config.zone"
	fwPolicy        = firewalldName + ".policy"
	firewalldConfig = dbus.ObjectPath("/org/fedoraproject/FirewallD1/config")
)

type firewalldBackend struct {
	ctx  context.Context
	conn *dbus.Conn
}

// connectFirewalld opens a private system bus connection.
func connectFirewalld(ctx context.Context) (*firewalldBackend, error) {
	conn, err := dbus.ConnectSystemBus(dbus.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("firewalld: connect to the system bus: %w", err)
	}
	return &firewalldBackend{ctx: ctx, conn: conn}, nil
}

func (f *firewalldBackend) close() { _ = f.conn.Close() }

// running reports whether firewalld owns its bus name, the same fact
// `systemctl is-active firewalld` reflects once the service is up.
func (f *firewalldBackend) running() bool {
	var has bool
	err := f.conn.BusObject().CallWithContext(f.ctx, "org.freedesktop.DBus.NameHasOwner", 0, firewalldName).Store(&has)
	return err == nil && has
}

func (f *firewalldBackend) call(path dbus.ObjectPath, method string, out any, args ...any) error {
	call := f.conn.Object(firewalldName, path).CallWithContext(f.ctx, method, 0, args...)
	if call.Err != nil {
		err := fmt.Errorf("firewalld: %s%s: %w", method[strings.LastIndexByte(method, '.')+1:], fmtArgs(args), call.Err)
		if transient(call.Err) {
			return stage.Temporary(err)
		}
		return err
	}
	if out == nil {
		return nil
	}
	return call.Store(out)
}

func fmtArgs(args []any) string {
	parts := make([]string, len(args))
	for i, a := range args {
		parts[i] = fmt.Sprint(a)
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

// transient errors come from firewalld (re)starting or being too busy to
// answer; the engine retries them.
func transient(err error) bool {
	var dbusErr dbus.Error
	if !errors.As(err, &dbusErr) {
		return false
	}
	switch dbusErr.Name {
	case "org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NameHasNoOwner",
		"org.freedesktop.DBus.Error.NoReply", "org.freedesktop.DBus.Error.Timeout":
		return true
	}
	return false
}

// alreadyDone is firewalld's answer to adding what is there already
// (ALREADY_ENABLED) or binding what is bound (ZONE_ALREADY_SET): success.
func alreadyDone(err error) bool {
	var dbusErr dbus.Error
	if !errors.As(err, &dbusErr) || len(dbusErr.Body) == 0 {
		return false
	}
	msg, _ := dbusErr.Body[0].(string)
	return strings.HasPrefix(msg, "ALREADY_ENABLED") || strings.HasPrefix(msg, "ZONE_ALREADY_SET")
}

// step is one runtime or permanent setting: query tells whether it holds,
// apply makes it hold.
type step struct {
	change stage.Change
	query  func() (bool, error)
	apply  func() error
}

func (f *firewalldBackend) Plan(env *stage.Env, p policy) ([]stage.Change, error) {
	return f.reconcile(env, p, false)
}

func (f *firewalldBackend) Apply(env *stage.Env, p policy) ([]stage.Change, error) {
	return f.reconcile(env, p, true)
}

// reconcile queries every step and, when apply is set, makes the missing
// ones hold; Plan and Apply share it so the plan is exactly what Apply does.
func (f *firewalldBackend) reconcile(env *stage.Env, p policy, apply bool) ([]stage.Change, error) {
	steps, err := f.steps(env, p)
	if err != nil {
		return nil, err
	}
	var changes []stage.Change
	for _, s := range steps {
		ok, err := s.query()
		if err != nil {
			return changes, err
		}
		if ok {
			continue
		}
		if apply {
			err := s.apply()
			if alreadyDone(err) {
				continue // another writer got there first: not our change
			}
			if err != nil {
				return changes, err
			}
		}
		changes = append(changes, s.change)
	}
	return changes, nil
}

// zones decides where the ports go: firewall.zone, else the zones the
// configured interfaces are in (an unbound interface falls to the default
// zone), else the default zone.
func (f *firewalldBackend) zones(env *stage.Env, p policy) ([]string, error) {
	if z := env.Config.Firewall.Zone; z != "" {
		return []string{z}, nil
	}
	var def string
	if err := f.call(firewalldPath, fwMain+".getDefaultZone", &def); err != nil {
		return nil, err
	}
	if len(p.interfaces) == 0 {
		return []string{def}, nil
	}
	var zones []string
	for _, iface := range p.interfaces {
		var z string
		if err := f.call(firewalldPath, fwZone+".getZoneOfInterface", &z, iface); err != nil {
			return nil, err
		}
		if z == "" {
			z = def
		}
		if !slices.Contains(zones, z) {
			zones = append(zones, z)
		}
	}
	return zones, nil
}

func (f *firewalldBackend) configZone(zone string) (dbus.ObjectPath, error) {
	var path dbus.ObjectPath
	if err := f.call(firewalldConfig, fwConfig+".getZoneByName", &path, zone); err != nil {
		return "", fmt.Errorf("%w (firewall.zone %q must name an existing firewalld zone)", err, zone)
	}
	return path, nil
}

func (f *firewalldBackend) steps(env *stage.Env, p policy) ([]step, error) {
	zones, err := f.zones(env, p)
	if err != nil {
		return nil, err
	}
	var steps []step
	query := func(path dbus.ObjectPath, method string, args ...any) func() (bool, error) {
		return func() (bool, error) {
			var ok bool
			err := f.call(path, method, &ok, args...)
			return ok, err
		}
	}
	do := func(path dbus.ObjectPath, method string, args ...any) func() error {
		return func() error { return f.call(path, method, nil, args...) }
	}
	for _, zone := range zones {
		cfgPath, err := f.configZone(zone)
		if err != nil {
			return nil, err
		}
		name := func(what, layer string) stage.Change {
			return stage.Change(fmt.Sprintf("firewalld zone %s: %s (%s)", zone, what, layer))
		}
		if env.Config.Firewall.Zone != "" {
			for _, iface := range p.interfaces {
				steps = append(steps,
					step{name("bind interface "+iface, "runtime"),
						query(firewalldPath, fwZone+".queryInterface", zone, iface),
						do(firewalldPath, fwZone+".changeZoneOfInterface", zone, iface)},
					step{name("bind interface "+iface, "permanent"),
						query(cfgPath, fwConfigZone+".queryInterface", iface),
						func() error { return f.bindPermanent(cfgPath, "Interface", iface) }})
			}
		}
		for _, src := range p.sources {
			steps = append(steps, f.bindSource(zone, cfgPath, src)...)
		}
		if len(p.sources) > 0 && (len(p.interfaces) > 0 || env.Config.Firewall.Zone == "") {
			env.Log.Warn("firewall: with firewalld, sources restrict ports only in a zone no interface is bound to; set firewall.zone to such a zone and leave firewall.interfaces empty",
				"zone", zone)
		}
		for _, port := range slices.Concat(p.ports, p.ssh) {
			steps = append(steps,
				step{name("open "+port.String(), "runtime"),
					query(firewalldPath, fwZone+".queryPort", zone, port.Range(), port.Proto),
					do(firewalldPath, fwZone+".addPort", zone, port.Range(), port.Proto, int32(0))},
				step{name("open "+port.String(), "permanent"),
					query(cfgPath, fwConfigZone+".queryPort", port.Range(), port.Proto),
					do(cfgPath, fwConfigZone+".addPort", port.Range(), port.Proto)})
		}
		// Debian's zones allow the ssh service (22/tcp) whatever the
		// config says; SSH is open exactly when SSHPorts says, as a port.
		absent := func(path dbus.ObjectPath, method string, args ...any) func() (bool, error) {
			return func() (bool, error) {
				ok, err := query(path, method, args...)()
				return !ok, err
			}
		}
		steps = append(steps,
			step{name("close service ssh", "runtime"),
				absent(firewalldPath, fwZone+".queryService", zone, "ssh"),
				do(firewalldPath, fwZone+".removeService", zone, "ssh")},
			step{name("close service ssh", "permanent"),
				absent(cfgPath, fwConfigZone+".queryService", "ssh"),
				do(cfgPath, fwConfigZone+".removeService", "ssh")})
	}
	// Pods are trusted as a source, whatever zone their packets enter by:
	// firewalld matches sources before interfaces, and the trusted zone's
	// target ACCEPT applies to the host (local pods to the API server, the
	// kubelet, hostNetwork pods) and to forwarding (pod to pod between
	// nodes, pod to outside). Without it firewalld's forward chain rejects
	// traffic between two interfaces of the default zone, cni0 and enp1s0.
	if len(p.pods) > 0 {
		cfgPath, err := f.configZone(PodZone)
		if err != nil {
			return nil, err
		}
		for _, pod := range p.pods {
			steps = append(steps, f.bindSource(PodZone, cfgPath, pod)...)
		}
		steps = append(steps, f.podPolicy()...)
	}
	return steps, nil
}

// PodPolicy is the firewalld policy that forwards traffic from any zone to
// the pods (the trusted zone's sources): the nodes' own addresses reach
// pods on other nodes, e.g. the API server an admission webhook or
// metrics-server (with host-gw it sends from its node address, which the
// trusted zone does not hold). Like the nftables backend, which filters no
// forwarding, the pod network is left to Kubernetes.
const PodPolicy = "kubeboot-pods"

// podPolicy creates PodPolicy in the permanent config and, because
// firewalld creates policies only there, reloads it into the runtime. It
// comes last: a reload drops runtime-only settings, and every earlier step
// has made its permanent half hold already.
func (f *firewalldBackend) podPolicy() []step {
	names := func(path dbus.ObjectPath, method string) func() (bool, error) {
		return func() (bool, error) {
			var list []string
			err := f.call(path, method, &list)
			return slices.Contains(list, PodPolicy), err
		}
	}
	settings := map[string]dbus.Variant{
		"short":         dbus.MakeVariant("kubeboot pod network"),
		"description":   dbus.MakeVariant("Forwarded traffic to pods (the trusted zone's sources), written by bootstrapd."),
		"target":        dbus.MakeVariant("ACCEPT"),
		"ingress_zones": dbus.MakeVariant([]string{"ANY"}),
		"egress_zones":  dbus.MakeVariant([]string{PodZone}),
	}
	return []step{
		{stage.Change("firewalld policy " + PodPolicy + ": forward from any zone to zone " + PodZone + " (permanent)"),
			names(firewalldConfig, fwConfig+".getPolicyNames"),
			func() error { return f.call(firewalldConfig, fwConfig+".addPolicy", nil, PodPolicy, settings) }},
		{stage.Change("firewalld policy " + PodPolicy + ": load into the runtime (reload)"),
			names(firewalldPath, fwPolicy+".getPolicies"),
			func() error { return f.call(firewalldPath, fwMain+".reload", nil) }},
	}
}

// PodZone is the firewalld zone the pod subnet is bound to as a source.
const PodZone = "trusted"

// bindSource binds a source to a zone, runtime and permanent.
func (f *firewalldBackend) bindSource(zone string, cfgPath dbus.ObjectPath, src netip.Prefix) []step {
	s := src.String()
	name := func(layer string) stage.Change {
		return stage.Change(fmt.Sprintf("firewalld zone %s: bind source %s (%s)", zone, s, layer))
	}
	query := func(path dbus.ObjectPath, method string, args ...any) func() (bool, error) {
		return func() (bool, error) {
			var ok bool
			err := f.call(path, method, &ok, args...)
			return ok, err
		}
	}
	return []step{
		{name("runtime"), query(firewalldPath, fwZone+".querySource", zone, s),
			func() error { return f.call(firewalldPath, fwZone+".changeZoneOfSource", nil, zone, s) }},
		{name("permanent"), query(cfgPath, fwConfigZone+".querySource", s),
			func() error { return f.bindPermanent(cfgPath, "Source", s) }},
	}
}

// bindPermanent adds an interface or source to a zone's permanent config,
// first taking it out of the zone it is permanently bound to, because
// firewalld refuses a second binding (ZONE_CONFLICT).
func (f *firewalldBackend) bindPermanent(cfgPath dbus.ObjectPath, kind, value string) error {
	var other string
	if err := f.call(firewalldConfig, fwConfig+".getZoneOf"+kind, &other, value); err != nil {
		return err
	}
	if other != "" {
		otherPath, err := f.configZone(other)
		if err != nil {
			return err
		}
		if otherPath != cfgPath {
			if err := f.call(otherPath, fwConfigZone+".remove"+kind, nil, value); err != nil {
				return err
			}
		}
	}
	return f.call(cfgPath, fwConfigZone+".add"+kind, nil, value)
}

func (*firewalldBackend) name() string { return string(machineconfig.BackendFirewalld) }
