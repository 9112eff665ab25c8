package e2e

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Shell drives the root shell that systemd.debug_shell starts on the
// guest's ttyS1 (the VM's second serial port, a unix socket on the host).
//
// The protocol survives a tty: the command goes to the guest base64
// encoded (no control character reaches the line discipline, no line is
// longer than chunkSize), runs in a child bash with stdin from /dev/null
// under `timeout`, and its output comes back base64 encoded between two
// markers that carry the command's sequence number, so neither the
// output nor late output of an earlier command can be taken for the end.
// The markers are split in the command text ("__KB""_") so that an echo
// of the command never matches them.
type Shell struct {
	conn       net.Conn
	lines      chan string
	transcript io.Writer

	mu  sync.Mutex
	seq int
}

const (
	// chunkSize bounds one line sent to the guest: a canonical-mode tty
	// takes at most 4095 bytes per line, and each line waits for an
	// acknowledgement so the UART's input never overflows.
	chunkSize = 1024
	// guestDir holds the command and its output on the guest's tmpfs.
	guestDir = "/run/kbe2e"
)

// newShell starts reading the guest's shell output from conn. The
// transcript gets every line received, and "> command" for every command.
func newShell(conn net.Conn, transcript io.Writer) *Shell {
	s := &Shell{conn: conn, lines: make(chan string, 4096), transcript: transcript}
	go s.read()
	return s
}

func (s *Shell) read() {
	defer close(s.lines)
	r := bufio.NewReaderSize(s.conn, 64<<10)
	for {
		line, err := r.ReadString('\n')
		if line != "" {
			line = strings.TrimRight(line, "\r\n")
			select {
			case s.lines <- line:
			default:
				fmt.Fprintf(s.transcript, "(dropped, nobody waited) %s\n", line)
			}
		}
		if err != nil {
			return
		}
	}
}

// errShellGone means QEMU closed the serial port: the VM is off.
var errShellGone = errors.New("the guest's shell port closed (QEMU exited)")

// next returns the next line from the guest, or an error when ctx ends or
// the port closes.
func (s *Shell) next(ctx context.Context) (string, error) {
	select {
	case l, ok := <-s.lines:
		if !ok {
			return "", errShellGone
		}
		return l, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

func (s *Shell) send(line string) error {
	if err := s.conn.SetWriteDeadline(time.Now().Add(30 * time.Second)); err != nil {
		return err
	}
	_, err := io.WriteString(s.conn, line+"\n")
	return err
}

// drain drops what the guest sent before now.
func (s *Shell) drain() {
	for {
		select {
		case _, ok := <-s.lines:
			if !ok {
				return
			}
		default:
			return
		}
	}
}

// Init waits until the shell answers, poking it every few seconds, and
// switches it to a plain line protocol: no line editing (readline would
// echo and redraw), no tty echo, no prompts. The debug shell starts early
// in the boot; the caller must not call Init before the kernel runs,
// because the firmware and the boot loader read every serial port and
// would take the keystrokes for menu input.
func (s *Shell) Init(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drain()
	for {
		s.seq++
		ready := fmt.Sprintf("__KB_READY_%d__", s.seq)
		init := `set +o emacs +o vi 2>/dev/null; stty -echo 2>/dev/null; PS1=; PS2=; export SYSTEMD_COLORS=0 SYSTEMD_PAGER= PAGER=cat TERM=dumb; mkdir -p ` + guestDir + `; echo __KB""_READY_` + strconv.Itoa(s.seq) + `__`
		if err := s.send(init); err != nil {
			return err
		}
		wait, cancel := context.WithTimeout(ctx, 5*time.Second)
		for {
			l, err := s.next(wait)
			if errors.Is(err, errShellGone) {
				cancel()
				return err
			}
			if err != nil {
				break
			}
			if l == ready {
				cancel()
				return nil
			}
			fmt.Fprintln(s.transcript, l)
		}
		cancel()
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("no shell on ttyS1: %w", err)
		}
	}
}

// Result is how a guest command ended.
type Result struct {
	Out  []byte // stdout and stderr, interleaved
	Code int
}

// String is the output as text without the trailing newline.
func (r Result) String() string { return strings.TrimRight(string(r.Out), "\n") }

var endRe = regexp.MustCompile(`^__KB_END_(\d+)__ (\d+)$`)

// Run runs script with bash in the guest, at most limit (the guest kills it
// then, and Run returns an error). A non-zero exit status is not an error:
// it is in the Result.
func (s *Shell) Run(ctx context.Context, script string, limit time.Duration) (Result, error) {
	return s.run(ctx, script, limit, true)
}

// RunSecret is Run for a command whose output holds credentials: the
// transcript gets its size only.
func (s *Shell) RunSecret(ctx context.Context, script string, limit time.Duration) (Result, error) {
	return s.run(ctx, script, limit, false)
}

// maxLogged bounds the output a transcript shows of one command.
const maxLogged = 64 << 10

func (s *Shell) run(ctx context.Context, script string, limit time.Duration, logOut bool) (Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, limit+30*time.Second)
	defer cancel()
	s.seq++
	n := s.seq
	fmt.Fprintf(s.transcript, "> %s\n", script)
	enc := base64.StdEncoding.EncodeToString([]byte(script))
	s.drain()
	op := ">"
	for i := 0; len(enc) > chunkSize; i++ {
		ack := fmt.Sprintf("__KB_ACK_%d_%d__", n, i)
		if err := s.send(fmt.Sprintf("printf %%s %s %s %s/cmd.b64; echo __KB\"\"_ACK_%d_%d__", enc[:chunkSize], op, guestDir, n, i)); err != nil {
			return Result{}, err
		}
		if err := s.await(ctx, ack); err != nil {
			return Result{}, fmt.Errorf("sending the command: %w", err)
		}
		enc, op = enc[chunkSize:], ">>"
	}
	secs := int(limit.Seconds())
	if secs < 1 {
		secs = 1
	}
	line := fmt.Sprintf(`printf %%s %s %s %[3]s/cmd.b64; base64 -d %[3]s/cmd.b64 > %[3]s/cmd; timeout -k 5 %[4]d bash %[3]s/cmd </dev/null >%[3]s/out 2>&1; r=$?; echo __KB""_BEGIN_%[5]d__; base64 -w 120 %[3]s/out; echo __KB""_END_%[5]d__ $r`,
		enc, op, guestDir, secs, n)
	if err := s.send(line); err != nil {
		return Result{}, err
	}
	begin := fmt.Sprintf("__KB_BEGIN_%d__", n)
	if err := s.await(ctx, begin); err != nil {
		s.interrupt()
		return Result{}, fmt.Errorf("guest command did not finish: %w", err)
	}
	var b64 strings.Builder
	for {
		l, err := s.next(ctx)
		if err != nil {
			return Result{}, fmt.Errorf("reading the command's output: %w", err)
		}
		if m := endRe.FindStringSubmatch(l); m != nil && m[1] == strconv.Itoa(n) {
			out, err := base64.StdEncoding.DecodeString(b64.String())
			if err != nil {
				return Result{}, fmt.Errorf("the command's output is damaged: %w", err)
			}
			code, _ := strconv.Atoi(m[2])
			switch {
			case !logOut:
				fmt.Fprintf(s.transcript, "(%d bytes holding credentials, not logged)\n", len(out))
			case len(out) > maxLogged || !utf8.Valid(out):
				fmt.Fprintf(s.transcript, "(%d bytes)\n", len(out))
			default:
				s.transcript.Write(out)
				if len(out) > 0 && out[len(out)-1] != '\n' {
					fmt.Fprintln(s.transcript)
				}
			}
			fmt.Fprintf(s.transcript, "(exit %d)\n", code)
			if code == 124 || code == 137 {
				return Result{Out: out, Code: code}, fmt.Errorf("guest command killed after %s (exit %d): %s", limit, code, tail(string(out), 5))
			}
			return Result{Out: out, Code: code}, nil
		}
		b64.WriteString(l)
	}
}

// await reads lines until want; what comes before it is not the
// command's output (late output of an earlier one, noise) and goes to the
// transcript.
func (s *Shell) await(ctx context.Context, want string) error {
	for {
		l, err := s.next(ctx)
		if err != nil {
			return err
		}
		if l == want {
			return nil
		}
		fmt.Fprintln(s.transcript, l)
	}
}

// Detach sends a command that ends the shell's boot (reboot, poweroff)
// without waiting for an answer: nothing else may be sent until the next
// kernel runs, since the firmware and the boot loader read the port.
func (s *Shell) Detach(cmd string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprintf(s.transcript, "> %s (not waiting)\n", cmd)
	_ = s.send(cmd)
}

// interrupt sends ^C to the guest shell's foreground job, so that a
// command that outlived the wait does not block the next one.
func (s *Shell) interrupt() {
	_ = s.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, _ = s.conn.Write([]byte{3, '\n'})
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
