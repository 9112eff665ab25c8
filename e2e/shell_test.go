package e2e

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// shellOverSocket starts a real bash whose stdin and stdout are one end of
// a socket pair, as the guest's debug shell is one end of a serial port,
// and returns a Shell on the other end. The guest directory is a temp dir.
func shellOverSocket(t *testing.T) (*Shell, *bytes.Buffer) {
	t.Helper()
	fds, err := socketpair()
	if err != nil {
		t.Fatal(err)
	}
	guestEnd := os.NewFile(uintptr(fds[0]), "guest")
	hostEnd := os.NewFile(uintptr(fds[1]), "host")
	conn, err := net.FileConn(hostEnd)
	if err != nil {
		t.Fatal(err)
	}
	hostEnd.Close()
	dir := t.TempDir()
	// The guest's /run/kbe2e becomes the temp dir.
	cmd := exec.Command("bash", "-c", `run() { sed "s#`+guestDir+`#`+dir+`#g"; }; while IFS= read -r line; do eval "$(printf %s "$line" | run)"; done`)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = guestEnd, guestEnd, guestEnd
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	guestEnd.Close()
	t.Cleanup(func() {
		conn.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	var transcript bytes.Buffer
	return newShell(conn, &transcript), &transcript
}

func TestShellProtocol(t *testing.T) {
	sh, transcript := shellOverSocket(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := sh.Init(ctx); err != nil {
		t.Fatal(err)
	}

	// Output that looks like the protocol's own markers, control bytes
	// and no final newline come back as they are, with the exit status.
	r, err := sh.Run(ctx, `printf '__KB_END_1__ 0\n\x03\x1b[0m\r\nlast'; exit 7`, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if want := "__KB_END_1__ 0\n\x03\x1b[0m\r\nlast"; string(r.Out) != want || r.Code != 7 {
		t.Errorf("Run = %q, exit %d; want %q, exit 7", r.Out, r.Code, want)
	}

	// A script longer than one line of the tty is sent in acknowledged
	// chunks.
	long := "echo " + strings.Repeat("x", 5*chunkSize) + " | wc -c"
	r, err = sh.Run(ctx, long, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(r.Out)); got != "5121" {
		t.Errorf("long script printed %q, want 5121", got)
	}

	// A command past its limit is killed in the guest and reported.
	if _, err := sh.Run(ctx, "sleep 30", time.Second); err == nil || !strings.Contains(err.Error(), "killed after 1s") {
		t.Errorf("Run of sleep 30 with a 1s limit: %v, want killed", err)
	}
	// The shell still works after it.
	if r, err := sh.Run(ctx, "echo after", 30*time.Second); err != nil || r.String() != "after" {
		t.Errorf("Run after a timeout = %q, %v", r.Out, err)
	}

	// Secret output stays out of the transcript.
	if _, err := sh.RunSecret(ctx, "echo s3cr3t-$((6*7))", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(transcript.String(), "s3cr3t-42") || !strings.Contains(transcript.String(), "holding credentials, not logged") {
		t.Errorf("the transcript shows a secret command's output:\n%s", transcript.String())
	}
}

func TestConsoleWaitFor(t *testing.T) {
	host, guest := net.Pipe()
	var log bytes.Buffer
	c := newConsole(host, time.Now(), &log)
	go func() {
		guest.Write([]byte("BdsDxe: loading\r\nLinux version 6.12\r\n"))
		time.Sleep(50 * time.Millisecond)
		guest.Write([]byte("Welcome\r\nhost login: \n"))
		guest.Close()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, i, err := c.WaitFor(ctx, 0, "Linux version")
	if err != nil || i != 1 || l.Text != "Linux version 6.12" {
		t.Fatalf("WaitFor = %+v, %d, %v", l, i, err)
	}
	if _, i, err = c.WaitFor(ctx, i+1, "login:"); err != nil || i != 3 {
		t.Fatalf("WaitFor login = %d, %v", i, err)
	}
	if _, _, err := c.WaitFor(ctx, 0, "never"); err == nil || !strings.Contains(err.Error(), "console closed") {
		t.Errorf("WaitFor on a closed console: %v", err)
	}
	if !strings.Contains(log.String(), "] Linux version 6.12\n") {
		t.Errorf("log:\n%s", log.String())
	}
}

func socketpair() ([2]int, error) {
	return unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
}
