package kubeadm

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"kubeboot.dev/kubeboot/atomicfile"
)

// Bounds of what is kept of kubeadm's output.
const (
	maxLine   = 4 << 10 // bytes of one line; longer lines are cut
	tailLines = 200     // lines kept in LogFile across one Apply
	maxOutput = 1 << 20 // bytes of one command's output kept for parsing
)

// LogFile, in the stage's state directory, holds the last lines kubeadm
// printed, secrets masked: `bootstrapd status` shows its end when the
// stage failed.
const LogFile = "kubeadm.log"

// output receives kubeadm's stdout and stderr: it cuts them into lines,
// masks every secret, logs each line (the journal gets kubeadm's progress
// as it happens) and keeps the last lines for LogFile. Safe for the two
// streams of one command.
type output struct {
	mu      sync.Mutex
	log     *slog.Logger
	secrets []string
	partial []byte
	tail    []string
	all     strings.Builder // this command's output, masked, for preflight parsing
}

func newOutput(log *slog.Logger, secrets []string) *output {
	var s []string
	for _, v := range secrets {
		if v != "" {
			s = append(s, v)
		}
	}
	return &output{log: log, secrets: s}
}

// mask replaces every secret in line.
func (o *output) mask(line string) string {
	for _, s := range o.secrets {
		line = strings.ReplaceAll(line, s, "<redacted>")
	}
	return line
}

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.partial = append(o.partial, p...)
	for {
		i := bytes.IndexByte(o.partial, '\n')
		if i < 0 {
			if len(o.partial) > maxLine {
				o.line(string(o.partial[:maxLine]))
				o.partial = o.partial[:0]
			}
			return len(p), nil
		}
		o.line(string(o.partial[:min(i, maxLine)]))
		o.partial = o.partial[i+1:]
	}
}

// Mark notes a command starting, in the log and the tail.
func (o *output) Mark(format string, a ...any) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.flushPartial()
	o.all.Reset()
	o.keep(fmt.Sprintf("=== %s %s", time.Now().UTC().Format(time.RFC3339), o.mask(fmt.Sprintf(format, a...))))
}

// Output is what the current command printed, masked.
func (o *output) Output() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.flushPartial()
	return o.all.String()
}

func (o *output) flushPartial() {
	if len(o.partial) > 0 {
		o.line(string(o.partial))
		o.partial = o.partial[:0]
	}
}

func (o *output) line(l string) {
	l = o.mask(strings.TrimRight(l, "\r"))
	if o.all.Len() < maxOutput {
		o.all.WriteString(l + "\n")
	}
	o.log.Info("kubeadm: " + l)
	o.keep(l)
}

func (o *output) keep(l string) {
	o.tail = append(o.tail, l)
	if len(o.tail) > tailLines {
		o.tail = o.tail[len(o.tail)-tailLines:]
	}
}

// Tail is the last n lines kept.
func (o *output) Tail(n int) []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.flushPartial()
	return o.tail[max(0, len(o.tail)-n):]
}

// Save writes the kept lines to path (0600: masked, but kubeadm's output
// names hosts and addresses only root needs to read).
func (o *output) Save(path string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.flushPartial()
	return atomicfile.Write(path, []byte(strings.Join(o.tail, "\n")+"\n"), 0o600, 0o700)
}
