package network

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"kubeboot.dev/kubeboot/atomicfile"
	"kubeboot.dev/kubeboot/bootstrapd/stage"
)

// stateFile, in the stage's state directory, records what the stage put
// into the kernel that the kernel cannot tell us itself: which routes are
// ours (so a route removed from the config is deleted, and nobody else's
// route ever is) and the DHCP leases.
const stateFile = "network.json"

func statePath(env *stage.Env) string { return filepath.Join(env.StateDir, stateFile) }

// maxState bounds the read of the state file.
const maxState = 1 << 20

type state struct {
	Routes []ownedRoute      `json:"routes,omitempty"`
	Leases map[string]*lease `json:"leases,omitempty"` // by link name
}

// ownedRoute identifies a route the stage added, in the kernel's terms.
type ownedRoute struct {
	Link   string `json:"link"`
	Dst    string `json:"dst"`
	Via    string `json:"via,omitempty"`
	Src    string `json:"src,omitempty"`
	Metric int    `json:"metric"`
	Proto  int    `json:"proto"`
}

// lease is an acquired DHCPv4 lease, enough to re-apply it and to know when
// it must be renewed.
type lease struct {
	Address  string    `json:"address"` // CIDR
	Router   string    `json:"router,omitempty"`
	DNS      []string  `json:"dns,omitempty"`
	Domain   string    `json:"domain,omitempty"`
	Server   string    `json:"server"`
	Acquired time.Time `json:"acquired"`
	Renew    time.Time `json:"renew"`   // T1: request again after this
	Expires  time.Time `json:"expires"` // the kernel drops the address then
}

func loadState(env *stage.Env) (*state, error) {
	p := statePath(env)
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return &state{}, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// Bounded like the other state records: the stage writes a few KiB.
	b, err := io.ReadAll(io.LimitReader(f, maxState+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxState {
		return nil, fmt.Errorf("%s is larger than %d KiB, which bootstrapd never writes (delete it to let bootstrapd forget which routes it owns)", p, maxState>>10)
	}
	var s state
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: %v (delete it to let bootstrapd forget which routes it owns)", p, err)
	}
	return &s, nil
}

func (s *state) owns(r ownedRoute) bool { return slices.Contains(s.Routes, r) }

func (s *state) own(r ownedRoute) {
	if !s.owns(r) {
		s.Routes = append(s.Routes, r)
	}
}

func (s *state) disown(r ownedRoute) {
	s.Routes = slices.DeleteFunc(s.Routes, func(o ownedRoute) bool { return o == r })
}

// save writes the state only when it changed, atomically.
func (s *state) save(env *stage.Env) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	// 0600: the leases name the node's DHCP server and addresses; the state
	// directory is bootstrapd's alone.
	_, err = atomicfile.WriteIfChanged(statePath(env), append(b, '\n'), 0o600, 0o700)
	return err
}
