package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"
)

// Console is the guest's serial console (ttyS0: firmware, boot loader,
// kernel, systemd, getty). Every line is stamped with the time since QEMU
// started, kept for WaitFor, and written to the log as "[ 12.345] line".
type Console struct {
	start time.Time
	log   io.Writer

	mu      sync.Mutex
	lines   []ConsoleLine
	changed chan struct{} // closed and replaced on every new line
	closed  bool
}

// ConsoleLine is one line of the console with the time it arrived.
type ConsoleLine struct {
	At   time.Duration // since QEMU started
	Text string
}

// maxConsoleLines bounds what is kept in memory (the log has everything).
const maxConsoleLines = 200000

func newConsole(conn net.Conn, start time.Time, log io.Writer) *Console {
	c := &Console{start: start, log: log, changed: make(chan struct{})}
	go c.read(conn)
	return c
}

func (c *Console) read(conn net.Conn) {
	r := bufio.NewReaderSize(conn, 64<<10)
	for {
		line, err := r.ReadString('\n')
		if line != "" {
			at := time.Since(c.start)
			text := strings.TrimRight(line, "\r\n")
			text = strings.ReplaceAll(text, "\r", "")
			fmt.Fprintf(c.log, "[%8.3f] %s\n", at.Seconds(), text)
			c.mu.Lock()
			if len(c.lines) < maxConsoleLines {
				c.lines = append(c.lines, ConsoleLine{At: at, Text: text})
			}
			close(c.changed)
			c.changed = make(chan struct{})
			c.mu.Unlock()
		}
		if err != nil {
			c.mu.Lock()
			c.closed = true
			close(c.changed)
			c.changed = make(chan struct{})
			c.mu.Unlock()
			return
		}
	}
}

// Mark is the index of the next line: WaitFor(ctx, Mark(), ...) looks only
// at what comes after now.
func (c *Console) Mark() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.lines)
}

// Find returns the first line at index from or later containing substr,
// and its index.
func (c *Console) Find(from int, substr string) (ConsoleLine, int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l, i, _ := c.findLocked(from, substr)
	return l, i, i >= 0
}

// findLocked also returns how far it looked, so a waiter can go on from
// there.
func (c *Console) findLocked(from int, substr string) (ConsoleLine, int, int) {
	for i := from; i < len(c.lines); i++ {
		if strings.Contains(c.lines[i].Text, substr) {
			return c.lines[i], i, i
		}
	}
	return ConsoleLine{}, -1, len(c.lines)
}

// WaitFor waits for a line at index from or later containing substr.
func (c *Console) WaitFor(ctx context.Context, from int, substr string) (ConsoleLine, int, error) {
	for {
		c.mu.Lock()
		l, i, scanned := c.findLocked(from, substr)
		ch, closed := c.changed, c.closed
		c.mu.Unlock()
		if i >= 0 {
			return l, i, nil
		}
		if closed {
			return ConsoleLine{}, -1, fmt.Errorf("console closed (QEMU exited) before %q appeared", substr)
		}
		from = scanned
		select {
		case <-ch:
		case <-ctx.Done():
			return ConsoleLine{}, -1, fmt.Errorf("%q did not appear on the console: %w", substr, ctx.Err())
		}
	}
}
