// Package progress reports long downloads and builds: bars on a terminal,
// one plain line per start and end otherwise (logs, CI).
package progress

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// Reporter starts one task per download or build step.
type Reporter interface {
	// Start begins a task; total is a byte count, or -1 when unknown (a
	// build step).
	Start(name string, total int64) Task
}

// Task is one running download or build.
type Task interface {
	io.Writer // counts bytes written through it
	Done(err error)
}

// Discard reports nothing.
var Discard Reporter = discard{}

type discard struct{}

func (discard) Start(string, int64) Task { return discardTask{} }

type discardTask struct{}

func (discardTask) Write(p []byte) (int, error) { return len(p), nil }
func (discardTask) Done(error)                  {}

// For chooses bars when w is a terminal and plain lines otherwise.
func For(w *os.File) Reporter {
	if term.IsTerminal(int(w.Fd())) {
		return &bars{w: w}
	}
	return &Lines{W: w}
}

// Lines writes "name: started" and "name: done (size, time)" lines.
type Lines struct {
	W  io.Writer
	mu sync.Mutex
}

func (l *Lines) Start(name string, total int64) Task {
	l.mu.Lock()
	defer l.mu.Unlock()
	if total >= 0 {
		fmt.Fprintf(l.W, "%s: started (%s)\n", name, human(total))
	} else {
		fmt.Fprintf(l.W, "%s: started\n", name)
	}
	return &lineTask{l: l, name: name, start: time.Now()}
}

type lineTask struct {
	l     *Lines
	name  string
	start time.Time
	n     int64
}

func (t *lineTask) Write(p []byte) (int, error) { t.n += int64(len(p)); return len(p), nil }

func (t *lineTask) Done(err error) {
	t.l.mu.Lock()
	defer t.l.mu.Unlock()
	d := time.Since(t.start).Round(100 * time.Millisecond)
	switch {
	case err != nil:
		fmt.Fprintf(t.l.W, "%s: failed after %s: %v\n", t.name, d, err)
	case t.n > 0:
		fmt.Fprintf(t.l.W, "%s: done (%s in %s)\n", t.name, human(t.n), d)
	default:
		fmt.Fprintf(t.l.W, "%s: done in %s\n", t.name, d)
	}
}

type bars struct{ w io.Writer }

func (b *bars) Start(name string, total int64) Task {
	var bar *progressbar.ProgressBar
	if total >= 0 {
		bar = progressbar.NewOptions64(total, progressbar.OptionSetWriter(b.w),
			progressbar.OptionSetDescription(name), progressbar.OptionShowBytes(true),
			progressbar.OptionSetWidth(30), progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(b.w) }))
	} else {
		bar = progressbar.NewOptions64(-1, progressbar.OptionSetWriter(b.w),
			progressbar.OptionSetDescription(name), progressbar.OptionSpinnerType(14),
			progressbar.OptionSetElapsedTime(true), progressbar.OptionThrottle(100*time.Millisecond))
		stop := make(chan struct{})
		go func() { // keep the spinner turning while a build runs
			t := time.NewTicker(200 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					_ = bar.Add(0)
				}
			}
		}()
		return &barTask{bar: bar, w: b.w, name: name, stop: stop, start: time.Now()}
	}
	return &barTask{bar: bar, w: b.w, name: name, start: time.Now()}
}

type barTask struct {
	bar   *progressbar.ProgressBar
	w     io.Writer
	name  string
	stop  chan struct{}
	start time.Time
}

func (t *barTask) Write(p []byte) (int, error) { return t.bar.Write(p) }

func (t *barTask) Done(err error) {
	if t.stop != nil {
		close(t.stop)
	}
	_ = t.bar.Finish()
	d := time.Since(t.start).Round(100 * time.Millisecond)
	if err != nil {
		fmt.Fprintf(t.w, "\n%s: failed after %s: %v\n", t.name, d, err)
	} else if t.stop != nil {
		fmt.Fprintf(t.w, "\r\033[K%s: done in %s\n", t.name, d)
	}
}

func human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
