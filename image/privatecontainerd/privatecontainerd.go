// Package privatecontainerd runs our own containerd build (from the
// artifact cache) on a private root with its own state directory, socket
// and mount namespace, and stops it by its pid. The image builder prepares
// the node's image store with it; tests use it to drive a real containerd.
//
// The mount namespace is what makes cleanup certain: every snapshot mount
// containerd makes lives in it and goes away with the process, also when
// the process is killed.
package privatecontainerd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/client"
)

// Plugins that are switched off unless asked for: the CRI plugin (the
// kubelet's runtime, which would also start the sandbox controller and
// scan CNI), NRI (a socket under /var/run), and every snapshotter but
// overlayfs (each would make its own directory in the store).
var (
	criPlugins = []string{
		"io.containerd.grpc.v1.cri",
		"io.containerd.cri.v1.images",
		"io.containerd.cri.v1.runtime",
		"io.containerd.podsandbox.controller.v1.podsandbox",
	}
	otherPlugins = []string{
		"io.containerd.nri.v1.nri",
		"io.containerd.snapshotter.v1.native",
		"io.containerd.snapshotter.v1.blockfile",
		"io.containerd.snapshotter.v1.erofs",
		"io.containerd.snapshotter.v1.btrfs",
		"io.containerd.snapshotter.v1.zfs",
		"io.containerd.snapshotter.v1.devmapper",
	}
)

// Options of one containerd.
type Options struct {
	// Binaries maps containerd, and if containers are to run
	// containerd-shim-runc-v2 and runc, to their paths.
	Binaries map[string]string
	// Root is containerd's root (the store); it is created if missing.
	Root string
	// CRI switches the CRI plugin on.
	CRI bool
	// Config is appended to the generated config.toml (plugin sections).
	Config string
	// Ready bounds the wait for the socket to answer; 0 means 60 s.
	Ready time.Duration
}

// Daemon is a running containerd.
type Daemon struct {
	// Socket is the gRPC socket; Root the store.
	Socket, Root string
	// Dir holds config, state, socket and log; removed by Stop.
	Dir  string
	cmd  *exec.Cmd
	done chan struct{}
	log  *os.File
}

// Start starts containerd and waits until it answers on its socket. The
// socket and state live in a new short temporary directory (a unix socket
// path is limited to 107 bytes).
func Start(ctx context.Context, o Options) (d *Daemon, err error) {
	if _, ok := o.Binaries["containerd"]; !ok {
		return nil, errors.New("no containerd binary given")
	}
	if err := os.MkdirAll(o.Root, 0o711); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "kubeboot-containerd-")
	if err != nil {
		return nil, err
	}
	d = &Daemon{Socket: filepath.Join(dir, "containerd.sock"), Root: o.Root, Dir: dir, done: make(chan struct{})}
	defer func() {
		if err != nil {
			d.Stop()
		}
	}()
	binDir := filepath.Join(dir, "bin")
	if err := os.Mkdir(binDir, 0o755); err != nil {
		return d, err
	}
	for name, p := range o.Binaries {
		if err := os.Symlink(p, filepath.Join(binDir, name)); err != nil {
			return d, err
		}
	}
	disabled := otherPlugins
	if !o.CRI {
		disabled = append(append([]string{}, criPlugins...), otherPlugins...)
	}
	quoted := make([]string, len(disabled))
	for i, p := range disabled {
		quoted[i] = fmt.Sprintf("%q", p)
	}
	config := fmt.Sprintf(`version = 3
root = %q
state = %q
temp = %q
disabled_plugins = [%s]

[grpc]
  address = %q

[ttrpc]
  address = %q

[plugins."io.containerd.internal.v1.opt"]
  path = %q
`, o.Root, filepath.Join(dir, "state"), filepath.Join(dir, "tmp"), strings.Join(quoted, ", "),
		d.Socket, d.Socket+".ttrpc", filepath.Join(dir, "opt")) + o.Config
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		return d, err
	}
	if d.log, err = os.Create(filepath.Join(dir, "containerd.log")); err != nil {
		return d, err
	}
	cmd := exec.Command(filepath.Join(binDir, "containerd"), "--config", cfgPath)
	cmd.Env = append(os.Environ(), "PATH="+binDir+":"+os.Getenv("PATH"))
	cmd.Stdout, cmd.Stderr = d.log, d.log
	// Its own mount namespace (Go makes / private in it), and killed
	// should we die first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return d, fmt.Errorf("start containerd: %w", err)
	}
	d.cmd = cmd
	go func() { cmd.Wait(); close(d.done) }()

	wait := o.Ready
	if wait == 0 {
		wait = 60 * time.Second
	}
	deadline := time.Now().Add(wait)
	for {
		if d.serving(ctx) {
			return d, nil
		}
		select {
		case <-d.done:
			return d, fmt.Errorf("containerd exited at start: %s", d.LogTail())
		case <-ctx.Done():
			return d, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return d, fmt.Errorf("containerd did not answer on %s within %s: %s", d.Socket, wait, d.LogTail())
		}
	}
}

func (d *Daemon) serving(ctx context.Context) bool {
	if _, err := os.Stat(d.Socket); err != nil {
		return false
	}
	c, err := client.New(d.Socket)
	if err != nil {
		return false
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	ok, err := c.IsServing(ctx)
	return err == nil && ok
}

// Pid is containerd's process id.
func (d *Daemon) Pid() int { return d.cmd.Process.Pid }

// Stop ends containerd by its pid (SIGTERM, then SIGKILL after 30 s),
// which takes its mount namespace and every snapshot mount with it, and
// removes Dir. The root stays. Safe to call more than once.
func (d *Daemon) Stop() error {
	var err error
	if d.cmd != nil && d.cmd.Process != nil {
		select {
		case <-d.done:
		default:
			_ = d.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-d.done:
			case <-time.After(30 * time.Second):
				_ = d.cmd.Process.Kill()
				<-d.done
				err = fmt.Errorf("containerd (pid %d) did not stop on SIGTERM within 30 s and was killed", d.cmd.Process.Pid)
			}
		}
	}
	if d.log != nil {
		d.log.Close()
	}
	if d.Dir != "" {
		if rerr := os.RemoveAll(d.Dir); rerr != nil && err == nil {
			err = rerr
		}
	}
	return err
}

// LogTail is the end of containerd's log, for error messages.
func (d *Daemon) LogTail() string {
	data, _ := os.ReadFile(filepath.Join(d.Dir, "containerd.log"))
	lines := bytes.Split(bytes.TrimSpace(data), []byte("\n"))
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
