// Package timesync is the stage that points systemd-timesyncd at the
// config's NTP servers (time.servers) and, on the first boot, waits until
// the clock is synchronised before kubeadm makes certificates: a node whose
// clock is an hour off makes certificates that are not valid yet, or
// rejects the cluster's.
//
// The stage writes a timesyncd drop-in and restarts the service over
// systemd's D-Bus API. Synchronised means timesyncd has accepted an answer
// from a server: it then touches /run/systemd/timesync/synchronized
// (systemd-timesyncd.service(8)). timedated's NTPSynchronized is not used:
// it is the kernel's "clock synchronised" flag, which any time daemon (or
// the host of a container) sets, not proof that these servers answered.
package timesync

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"kubeboot.dev/kubeboot/atomicfile"
	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/bootstrapd/systemdunit"
	"kubeboot.dev/kubeboot/machineconfig"
)

const (
	// Unit is timesyncd's service.
	Unit = "systemd-timesyncd.service"
	// DropIn is the file the stage owns: the config's servers.
	DropIn = "/etc/systemd/timesyncd.conf.d/kubeboot.conf"
	// Synchronized is touched by timesyncd on every accepted answer.
	Synchronized = "/run/systemd/timesync/synchronized"
	// SyncTimeout bounds the wait for the first answer: timesyncd asks
	// again after 32 s at first, so two minutes is several tries of every
	// server, and a node without time should not hang its first boot.
	SyncTimeout = 2 * time.Minute
)

// Stage is the time stage.
type Stage struct {
	// SyncTimeout replaces the package's SyncTimeout when set (tests).
	SyncTimeout time.Duration
}

// New returns the time stage.
func New() stage.Stage { return Stage{} }

func (Stage) Name() string { return "time" }

// Inputs: the NTP servers.
func (Stage) Inputs(cfg *machineconfig.MachineConfig) any { return cfg.Time }

// Content is the drop-in for servers: only these, no fallback pool (the
// lab and many sites have no route to it), or nil without servers.
func Content(servers []string) []byte {
	if len(servers) == 0 {
		return nil
	}
	return []byte("# time.servers of the machine config, written by bootstrapd\n[Time]\nNTP=" + strings.Join(servers, " ") + "\nFallbackNTP=\n")
}

func (s Stage) Plan(ctx context.Context, env *stage.Env) ([]stage.Change, error) {
	c, err := s.reconcile(ctx, env, false)
	return c.changes(), err
}

// Apply writes or removes the drop-in, restarts timesyncd when it changed
// or is not running, and with servers waits for a synchronisation. It
// waits even when nothing changed: the engine applies a step with no
// current record, so a first boot whose wait failed waits again on its
// next run, and a node that is up to date is not asked.
func (s Stage) Apply(ctx context.Context, env *stage.Env) ([]stage.Change, error) {
	c, err := s.reconcile(ctx, env, true)
	if err != nil || len(env.Config.Time.Servers) == 0 {
		return c.changes(), err
	}
	return c.changes(), s.waitSync(ctx, env)
}

type todo struct {
	write, remove, enable, restart bool
}

func (t todo) changes() []stage.Change {
	var c []stage.Change
	if t.write {
		c = append(c, "write "+DropIn)
	}
	if t.remove {
		c = append(c, "remove "+DropIn)
	}
	if t.enable {
		c = append(c, "enable "+Unit)
	}
	if t.restart {
		c = append(c, "restart "+Unit)
	}
	return c
}

func (s Stage) reconcile(ctx context.Context, env *stage.Env, apply bool) (todo, error) {
	var t todo
	want := Content(env.Config.Time.Servers)
	have, err := os.ReadFile(env.Path(DropIn))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		t.write = want != nil
	case err != nil:
		return t, err
	case want == nil:
		t.remove = true
	default:
		t.write = string(have) != string(want)
	}
	if want == nil && !t.remove {
		return t, nil // no servers, none of ours: timesyncd is not our business
	}
	conn, err := systemdunit.Connect(ctx)
	if err != nil {
		return t, err
	}
	defer conn.Close()
	st, err := conn.Query(ctx, Unit)
	if err != nil {
		return t, fmt.Errorf("%w (Debian package systemd-timesyncd)", err)
	}
	t.enable = !st.Enabled && want != nil
	// timesyncd reads its configuration when it starts.
	t.restart = t.write || t.remove || (!st.Active && want != nil)
	if !apply {
		return t, nil
	}
	if t.write {
		if err := atomicfile.Write(env.Path(DropIn), want, 0o644, 0o755); err != nil {
			return t, err
		}
	}
	if t.remove {
		if err := atomicfile.Remove(env.Path(DropIn)); err != nil {
			return t, err
		}
	}
	if t.enable {
		if err := conn.Enable(ctx, Unit); err != nil {
			return t, err
		}
	}
	if !t.restart {
		return t, nil
	}
	// Stopped before the mark is removed, so a mark is the new
	// configuration's answer.
	if err := conn.Stop(ctx, Unit); err != nil {
		return t, err
	}
	if err := os.Remove(env.Path(Synchronized)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return t, err
	}
	if err := conn.Start(ctx, Unit); err != nil {
		return t, err
	}
	if st, err = conn.Query(ctx, Unit); err != nil {
		return t, err
	}
	if !st.Active {
		return t, fmt.Errorf("%s did not stay running after its start (a condition of the unit failed, or it exited: journalctl -u %s)", Unit, Unit)
	}
	env.Log.Info("time: systemd-timesyncd restarted", "servers", strings.Join(env.Config.Time.Servers, " "))
	return t, nil
}

// waitSync waits for timesyncd's mark, saying what it waits for in the
// unit's status; on time-out the error says what timesyncd last reported.
func (s Stage) waitSync(ctx context.Context, env *stage.Env) error {
	limit := s.SyncTimeout
	if limit == 0 {
		limit = SyncTimeout
	}
	servers := strings.Join(env.Config.Time.Servers, " ")
	env.Report("waiting for the clock: NTP from " + servers)
	deadline := time.Now().Add(limit)
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := os.Stat(env.Path(Synchronized)); err == nil {
			env.Log.Info("time: clock synchronised", "servers", servers)
			return nil
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("time.servers: no NTP answer from %s within %s (systemd-timesyncd says: %q); check that a server answers on UDP 123 from this node, then retry with systemctl restart bootstrapd",
				servers, limit, lastStatus(ctx))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// lastStatus is timesyncd's STATUS= line ("Connecting to time server
// 172.16.0.254:123 (172.16.0.254)."), or why it cannot be had.
func lastStatus(ctx context.Context) string {
	conn, err := systemdunit.Connect(ctx)
	if err != nil {
		return err.Error()
	}
	defer conn.Close()
	s, err := conn.ServiceProperty(ctx, Unit, "StatusText")
	if err != nil {
		return err.Error()
	}
	return s
}
