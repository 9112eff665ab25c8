package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/coreos/go-systemd/v22/journal"

	"kubeboot.dev/kubeboot/internal/printable"
)

// newLogger logs to the journal's native protocol when stderr is connected
// to the journal (systemd sets JOURNAL_STREAM to its device:inode), plain
// text to stderr otherwise.
//
// Native rather than stderr lines: each attribute becomes a journal field
// (journalctl -u bootstrapd BOOTSTRAPD_STAGE=network), and each record
// keeps its priority, which stderr lines would lose.
func newLogger(stderr io.Writer) *slog.Logger {
	if stderrIsJournal() && journal.Enabled() {
		return slog.New(&journalHandler{})
	}
	return slog.New(slog.NewTextHandler(stderr, nil))
}

// stderrIsJournal checks JOURNAL_STREAM against stderr, as systemd.exec(5)
// asks: a child that inherited the variable may have stderr elsewhere.
func stderrIsJournal() bool {
	dev, ino, ok := strings.Cut(os.Getenv("JOURNAL_STREAM"), ":")
	if !ok {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(2, &st); err != nil {
		return false
	}
	return strconv.FormatUint(st.Dev, 10) == dev && strconv.FormatUint(st.Ino, 10) == ino
}

// journalHandler is a slog.Handler writing to the journal.
type journalHandler struct {
	attrs  []slog.Attr
	prefix string // group prefix for later attributes
}

func (h *journalHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

func (h *journalHandler) Handle(_ context.Context, r slog.Record) error {
	msg, pri, fields := h.entry(r)
	return journal.Send(msg, pri, fields)
}

// entry turns a record into a journal entry: MESSAGE reads like the text
// handler's line (journalctl shows only it), and every attribute is also a
// field of its own.
func (h *journalHandler) entry(r slog.Record) (string, journal.Priority, map[string]string) {
	fields := map[string]string{}
	var msg strings.Builder
	msg.WriteString(r.Message)
	add := func(key string, v slog.Value) {
		s := v.Resolve().String()
		fields[journalField(key)] = s
		// Quoted when it would not read as one word, or holds what a
		// terminal acts on (an escape sequence from a config source).
		if strings.ContainsAny(s, " \t\n\"=") || printable.String(s) != s {
			s = strconv.Quote(s)
		}
		fmt.Fprintf(&msg, " %s=%s", key, s)
	}
	for _, a := range h.attrs {
		add(a.Key, a.Value)
	}
	r.Attrs(func(a slog.Attr) bool {
		add(h.prefix+a.Key, a.Value)
		return true
	})
	pri := journal.PriInfo
	switch {
	case r.Level >= slog.LevelError:
		pri = journal.PriErr
	case r.Level >= slog.LevelWarn:
		pri = journal.PriWarning
	case r.Level < slog.LevelInfo:
		pri = journal.PriDebug
	}
	return msg.String(), pri, fields
}

func (h *journalHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	n := &journalHandler{prefix: h.prefix, attrs: append([]slog.Attr{}, h.attrs...)}
	for _, a := range attrs {
		n.attrs = append(n.attrs, slog.Attr{Key: h.prefix + a.Key, Value: a.Value})
	}
	return n
}

func (h *journalHandler) WithGroup(name string) slog.Handler {
	return &journalHandler{prefix: h.prefix + name + ".", attrs: h.attrs}
}

// journalField makes a journal field name: upper case letters, digits and
// underscores, prefixed so it cannot clash with the journal's own fields.
func journalField(key string) string {
	var b strings.Builder
	b.WriteString("BOOTSTRAPD_")
	for _, r := range strings.ToUpper(key) {
		if (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}
