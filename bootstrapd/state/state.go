// Package state is bootstrapd's memory across boots and crashes: one record
// per finished stage, the source the config came from, and the done and
// failed markers, all small JSON files under <root>/var/lib/kubeboot. Each
// stage also has a directory of its own there (stages/NAME/) for what it
// must remember itself.
//
// Every file is written atomically (temporary file, fsync, rename, fsync of
// the directory), so after a power cut a record is either the old one or
// the new one, never half of each. Files are 0600 in a 0700 directory: they
// hold no secrets, but failure reasons quote host details that only root
// needs to read.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"kubeboot.dev/kubeboot/atomicfile"
)

// Dir is the state directory on the node.
const Dir = "/var/lib/kubeboot"

// Store reads and writes the records under one state directory.
type Store struct{ Dir string }

// Open returns the store for the node whose "/" is root.
func Open(root string) *Store { return &Store{Dir: filepath.Join(root, Dir)} }

// StageRecord says a stage finished applying a config.
type StageRecord struct {
	Stage string `json:"stage"`
	Kind  string `json:"kind"` // converge or once (engine.Kind)
	Phase string `json:"phase,omitempty"`
	// Fingerprint identifies the part of the config the stage read
	// (engine.Fingerprint); ConfigHash the whole config, for people.
	Fingerprint string    `json:"fingerprint"`
	ConfigHash  string    `json:"configHash"`
	Started     time.Time `json:"started"`
	Finished    time.Time `json:"finished"`
	Duration    string    `json:"duration"`
	Attempts    int       `json:"attempts"`
	Changes     []string  `json:"changes,omitempty"`
}

// Source says where the config of the last run came from.
type Source struct {
	Source     string    `json:"source"`
	ConfigHash string    `json:"configHash"`
	InstanceID string    `json:"instanceID,omitempty"`
	Loaded     time.Time `json:"loaded"`
}

// Failure is the failed marker: the run stopped at Stage.
type Failure struct {
	Stage      string    `json:"stage"`
	Reason     string    `json:"reason"`
	Attempts   int       `json:"attempts"`
	ConfigHash string    `json:"configHash"`
	Time       time.Time `json:"time"`
}

// Done is the done marker: every stage of the plan applied ConfigHash.
type Done struct {
	ConfigHash string        `json:"configHash"`
	Source     string        `json:"source"`
	Stages     []StageTiming `json:"stages"`
	Time       time.Time     `json:"time"`
}

// StageTiming is how long a stage took when it last applied.
type StageTiming struct {
	Stage    string `json:"stage"`
	Duration string `json:"duration"`
	Attempts int    `json:"attempts"`
}

// StageDir is the stage's own directory; its record is record.json there.
func (s *Store) StageDir(name string) string { return filepath.Join(s.Dir, "stages", name) }

func (s *Store) stagePath(name string) string { return filepath.Join(s.StageDir(name), "record.json") }
func (s *Store) failedPath() string           { return filepath.Join(s.Dir, "failed") }
func (s *Store) donePath() string             { return filepath.Join(s.Dir, "done") }
func (s *Store) sourcePath() string           { return filepath.Join(s.Dir, "source.json") }

// Stage returns the record of a stage, or nil when it never finished.
func (s *Store) Stage(name string) (*StageRecord, error) {
	var r StageRecord
	return readOptional(s.stagePath(name), &r)
}

// Stages returns every stage record, sorted by finish time.
func (s *Store) Stages() ([]StageRecord, error) {
	paths, err := filepath.Glob(s.stagePath("*"))
	if err != nil {
		return nil, err
	}
	var out []StageRecord
	for _, p := range paths {
		var r StageRecord
		if _, err := readOptional(p, &r); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Finished.Before(out[j].Finished) })
	return out, nil
}

// PutStage records that a stage finished.
func (s *Store) PutStage(r StageRecord) error { return writeJSON(s.stagePath(r.Stage), r) }

// Source returns the last recorded source, or nil.
func (s *Store) Source() (*Source, error) {
	var r Source
	return readOptional(s.sourcePath(), &r)
}

// PutSource records where the config came from.
func (s *Store) PutSource(r Source) error { return writeJSON(s.sourcePath(), r) }

// Failure returns the failed marker, or nil.
func (s *Store) Failure() (*Failure, error) {
	var r Failure
	return readOptional(s.failedPath(), &r)
}

// PutFailure writes the failed marker, its reason cut to MaxReason bytes:
// bootstrapd status prints it and the reason of a hostile config could be
// as long as the config.
func (s *Store) PutFailure(r Failure) error {
	if len(r.Reason) > MaxReason {
		cut := MaxReason
		for cut > 0 && !utf8.RuneStart(r.Reason[cut]) {
			cut--
		}
		r.Reason = fmt.Sprintf("%s\n... (%d more bytes; bootstrapd plan shows the whole error)", r.Reason[:cut], len(r.Reason)-cut)
	}
	return writeJSON(s.failedPath(), r)
}

// MaxReason bounds the reason in the failed marker: more than the 50
// problems a config error lists (machineconfig.MaxReported).
const MaxReason = 32 << 10

// maxRecord bounds the read of a record; bootstrapd writes a few KiB.
const maxRecord = 1 << 20

// ClearFailure removes the failed marker if there is one.
func (s *Store) ClearFailure() error { return removeOptional(s.failedPath()) }

// Done returns the done marker, or nil.
func (s *Store) Done() (*Done, error) {
	var r Done
	return readOptional(s.donePath(), &r)
}

// PutDone writes the done marker.
func (s *Store) PutDone(r Done) error { return writeJSON(s.donePath(), r) }

// ClearDone removes the done marker: the config changed and is not applied yet.
func (s *Store) ClearDone() error { return removeOptional(s.donePath()) }

func readOptional[T any](path string, v *T) (*T, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxRecord+1))
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	if len(data) > maxRecord {
		return nil, fmt.Errorf("state: %s is larger than %d KiB, which bootstrapd never writes; delete it to forget that record", path, maxRecord>>10)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return nil, fmt.Errorf("state: %s is corrupt (%v); delete it to forget that record", path, err)
	}
	return v, nil
}

func removeOptional(path string) error {
	if err := atomicfile.Remove(path); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	return nil
}

func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("state: encode %s: %w", path, err)
	}
	if err := atomicfile.Write(path, append(data, '\n'), 0o600, 0o700); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	return nil
}

// Lock takes the state directory for one run, so that a second bootstrapd
// (an operator's `bootstrapd run` while the service runs) fails at once
// instead of interleaving its changes and records with the first one's.
// The kernel drops the lock when the process ends, even on a crash.
func (s *Store) Lock() (release func(), err error) {
	if err := atomicfile.MkdirAll(s.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(s.Dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("another bootstrapd is running on %s; wait for it (bootstrapd status shows its progress)", s.Dir)
		}
		return nil, fmt.Errorf("state: lock %s: %w", f.Name(), err)
	}
	return func() { f.Close() }, nil
}
