// Package systemdunit is how stages ask systemd about a unit and change
// it: over systemd's D-Bus API (go-systemd), so dependencies, conditions
// and restart policies stay systemd's, and every job is waited for.
package systemdunit

import (
	"context"
	"fmt"

	"github.com/coreos/go-systemd/v22/dbus"

	"kubeboot.dev/kubeboot/bootstrapd/stage"
)

// Conn is a connection to systemd.
type Conn struct{ c *dbus.Conn }

// Connect talks to systemd over its private socket: root only, and there
// whether or not the system bus's daemon is up yet. Failing to connect is
// temporary (systemd is busy, or the test's container is still booting).
func Connect(ctx context.Context) (*Conn, error) {
	c, err := dbus.NewSystemdConnectionContext(ctx)
	if err != nil {
		return nil, stage.Temporary(fmt.Errorf("connect to systemd: %w", err))
	}
	return &Conn{c}, nil
}

// Close closes the connection.
func (c *Conn) Close() { c.c.Close() }

// Property returns a string property of unit (LoadState, ActiveState,
// UnitFileState, StatusText of a service, ...).
func (c *Conn) Property(ctx context.Context, unit, name string) (string, error) {
	p, err := c.c.GetUnitPropertyContext(ctx, unit, name)
	if err != nil {
		return "", stage.Temporary(fmt.Errorf("ask systemd about %s: %w", unit, err))
	}
	s, _ := p.Value.Value().(string)
	return s, nil
}

// ServiceProperty returns a string property of a service's Service
// interface (StatusText: what the service last said with STATUS=).
func (c *Conn) ServiceProperty(ctx context.Context, unit, name string) (string, error) {
	p, err := c.c.GetServicePropertyContext(ctx, unit, name)
	if err != nil {
		return "", stage.Temporary(fmt.Errorf("ask systemd about %s: %w", unit, err))
	}
	s, _ := p.Value.Value().(string)
	return s, nil
}

// State is what the stages need to know about a unit.
type State struct {
	Enabled bool // enabled, or started by something else (static, alias, ...)
	Active  bool // active, activating or reloading
}

// Query returns unit's state; a unit systemd does not know, or a masked
// one, is an error saying so.
func (c *Conn) Query(ctx context.Context, unit string) (State, error) {
	var st State
	load, err := c.Property(ctx, unit, "LoadState")
	if err != nil {
		return st, err
	}
	if load == "not-found" {
		return st, fmt.Errorf("systemd does not know %s: the image lacks it", unit)
	}
	file, err := c.Property(ctx, unit, "UnitFileState")
	if err != nil {
		return st, err
	}
	switch file {
	case "enabled", "enabled-runtime", "static", "alias", "indirect", "linked":
		st.Enabled = true
	case "masked", "masked-runtime":
		return st, fmt.Errorf("%s is masked: unmask it (systemctl unmask %s)", unit, unit)
	}
	active, err := c.Property(ctx, unit, "ActiveState")
	if err != nil {
		return st, err
	}
	st.Active = active == "active" || active == "activating" || active == "reloading"
	return st, nil
}

// Enable enables unit (its [Install] section) and reloads systemd.
func (c *Conn) Enable(ctx context.Context, unit string) error {
	if _, _, err := c.c.EnableUnitFilesContext(ctx, []string{unit}, false, true); err != nil {
		return fmt.Errorf("enable %s: %w", unit, err)
	}
	return c.reload(ctx, "enabling "+unit)
}

// Disable disables unit and reloads systemd.
func (c *Conn) Disable(ctx context.Context, unit string) error {
	if _, err := c.c.DisableUnitFilesContext(ctx, []string{unit}, false); err != nil {
		return fmt.Errorf("disable %s: %w", unit, err)
	}
	return c.reload(ctx, "disabling "+unit)
}

func (c *Conn) reload(ctx context.Context, after string) error {
	if err := c.c.ReloadContext(ctx); err != nil {
		return fmt.Errorf("systemd daemon-reload after %s: %w", after, err)
	}
	return nil
}

// Start, Restart and Stop run the job on unit and wait for it. A start
// whose job does not end "done" is temporary (the journal says why).
func (c *Conn) Start(ctx context.Context, unit string) error {
	return c.job(ctx, "start", unit, c.c.StartUnitContext)
}

func (c *Conn) Restart(ctx context.Context, unit string) error {
	return c.job(ctx, "restart", unit, c.c.RestartUnitContext)
}

func (c *Conn) Stop(ctx context.Context, unit string) error {
	return c.job(ctx, "stop", unit, c.c.StopUnitContext)
}

func (c *Conn) job(ctx context.Context, verb, unit string, run func(context.Context, string, string, chan<- string) (int, error)) error {
	done := make(chan string, 1)
	if _, err := run(ctx, unit, "replace", done); err != nil {
		return stage.Temporary(fmt.Errorf("%s %s: %w", verb, unit, err))
	}
	select {
	case result := <-done:
		if result != "done" {
			return stage.Temporary(fmt.Errorf("%s %s: job %s (journalctl -u %s says why)", verb, unit, result, unit))
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s %s: %w", verb, unit, ctx.Err())
	}
}
