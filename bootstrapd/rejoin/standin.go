package rejoin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/clustersecrets"
)

// quorumTimeout bounds how long the stand-in may take to catch up with the
// healthy members (it receives their data as a snapshot).
const quorumTimeout = 3 * time.Minute

// standInProcess is a running stand-in etcd.
type standInProcess struct {
	cmd     *exec.Cmd
	done    chan struct{}
	dir     string
	release func()
}

// standIn restores etcd's quorum when the only member missing from it is
// this node's earlier life: two control planes, one reflashed, leave one
// healthy member of two, and no membership change (not even removing the
// dead one) can pass without a second vote. It runs, for a moment, an etcd
// that is the stale member: same name and peer URL (this node's address),
// empty data. The healthy members take it in as the member they lost and
// send it their data; then they have their quorum again. The caller removes
// the stale member through them, which also ends the stand-in; stop cleans
// up. kubeadm join then adds this node as a new member.
func standIn(ctx context.Context, env *stage.Env, o Options, cli *etcdGateway, stale member, members []member) (*standInProcess, error) {
	if o.EtcdBinary == nil {
		return nil, errors.New("no etcd to stand in for the stale member with")
	}
	if len(stale.PeerURLs) != 1 {
		return nil, fmt.Errorf("stale etcd member %s has %d peer URLs; expected kubeadm's one", stale.Name, len(stale.PeerURLs))
	}
	peer, err := url.Parse(stale.PeerURLs[0])
	if err != nil {
		return nil, fmt.Errorf("stale etcd member %s: peer URL %q: %w", stale.Name, stale.PeerURLs[0], err)
	}
	ip := net.ParseIP(peer.Hostname())
	if ip == nil || !localAddress(ip) {
		return nil, stage.Temporary(fmt.Errorf("stale etcd member %s has peer URL %s, which is not an address of this node: it cannot stand in for it; restore etcd's quorum by hand (etcd --force-new-cluster on a healthy member)", stale.Name, stale.PeerURLs[0]))
	}
	secrets := env.Config.Kubernetes.Credentials.ClusterSecrets()
	server, err := clustersecrets.MintEtcdPeer(secrets, stale.Name, []net.IP{ip, net.IPv4(127, 0, 0, 1)}, quorumTimeout+time.Minute)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(env.StateDir, "etcd-stand-in-")
	if err != nil {
		return nil, err
	}
	in := &standInProcess{dir: dir, done: make(chan struct{})}
	fail := func(err error) (*standInProcess, error) { in.stop(); return nil, err }
	files := map[string][]byte{"ca.crt": server.CAPEM, "server.crt": server.CertPEM, "server.key": []byte(server.KeyPEM.Reveal())}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return fail(err)
		}
	}
	var initial []string
	for _, m := range members {
		name := m.Name
		if m.ID == stale.ID {
			name = stale.Name
		}
		if name == "" || len(m.PeerURLs) == 0 {
			continue // added but never started: not a peer to dial
		}
		initial = append(initial, name+"="+m.PeerURLs[0])
	}
	// A member that led the cluster before its peer died still counts the
	// dead member's log as replicated until it steps down for want of a
	// quorum (an election timeout later); its heartbeats would carry a
	// commit index the stand-in's empty log cannot have, and raft would
	// stop the stand-in. Only once no member leads does the stand-in start:
	// the next leader starts counting afresh and sends it a snapshot.
	if err := waitLeaderless(ctx, cli); err != nil {
		return fail(err)
	}
	bin, release, err := o.EtcdBinary(ctx)
	if err != nil {
		return fail(fmt.Errorf("find etcd to stand in for the stale member: %w", err))
	}
	in.release = release
	port, err := freePort()
	if err != nil {
		return fail(err)
	}
	client := "https://127.0.0.1:" + port
	ca, crt, key := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	in.cmd = exec.Command(bin,
		"--name="+stale.Name, "--data-dir="+filepath.Join(dir, "data"),
		"--listen-peer-urls="+stale.PeerURLs[0], "--initial-advertise-peer-urls="+stale.PeerURLs[0],
		"--listen-client-urls="+client, "--advertise-client-urls="+client,
		"--initial-cluster="+strings.Join(initial, ","), "--initial-cluster-state=existing",
		"--client-cert-auth", "--trusted-ca-file="+ca, "--cert-file="+crt, "--key-file="+key,
		"--peer-client-cert-auth", "--peer-trusted-ca-file="+ca, "--peer-cert-file="+crt, "--peer-key-file="+key,
		"--listen-metrics-urls=", "--log-level=warn")
	logFile, err := os.Create(filepath.Join(dir, "etcd.log"))
	if err != nil {
		return fail(err)
	}
	in.cmd.Stdout, in.cmd.Stderr = logFile, logFile
	if err := in.cmd.Start(); err != nil {
		logFile.Close()
		return fail(fmt.Errorf("start the stand-in etcd: %w", err))
	}
	go func() { _ = in.cmd.Wait(); logFile.Close(); close(in.done) }()
	env.Log.Info("standing in for the stale etcd member to restore quorum", "member", stale.Name, "peer", stale.PeerURLs[0])

	// Quorum is back when a linearizable read passes through the others.
	deadline := time.Now().Add(quorumTimeout)
	for {
		_, err := cli.memberList(ctx, true)
		if err == nil {
			return in, nil
		}
		select {
		case <-in.done:
			return fail(fmt.Errorf("the stand-in etcd exited: %s", panicOrLast(filepath.Join(dir, "etcd.log"))))
		case <-ctx.Done():
			return fail(ctx.Err())
		case <-time.After(time.Second):
		}
		if time.Now().After(deadline) {
			return fail(stage.Temporary(fmt.Errorf("etcd's quorum did not come back within %s of standing in for member %s: %v; its log: %s", quorumTimeout, stale.Name, err, lastLines(filepath.Join(dir, "etcd.log"), 5))))
		}
	}
}

// waitLeaderless waits until no endpoint of cli reports a leader.
func waitLeaderless(ctx context.Context, cli *etcdGateway) error {
	deadline := time.Now().Add(time.Minute)
	for {
		led := false
		for _, ep := range cli.endpoints {
			if leader, err := cli.leader(ctx, ep); err == nil && leader != 0 {
				led = true
			}
		}
		if !led {
			return nil
		}
		if time.Now().After(deadline) {
			return stage.Temporary(errors.New("an etcd member still leads without a quorum after a minute"))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// stop ends the stand-in (once removed from the cluster it ends itself)
// and removes its data, certificates and log.
func (in *standInProcess) stop() {
	if in.cmd != nil && in.cmd.Process != nil {
		_ = in.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-in.done:
		case <-time.After(10 * time.Second):
			_ = in.cmd.Process.Kill()
			<-in.done
		}
	}
	if in.release != nil {
		in.release()
	}
	_ = os.RemoveAll(in.dir)
}

// freePort is a loopback port nobody listens on now, for the stand-in's
// client URL, which only it uses.
func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	_, port, err := net.SplitHostPort(l.Addr().String())
	return port, err
}

// localAddress reports whether ip is an address of this machine.
func localAddress(ip net.IP) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
			return true
		}
	}
	return false
}

func lastLines(path string, n int) string {
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// panicOrLast is the panic message in an etcd log, or its last lines.
func panicOrLast(path string) string {
	data, _ := os.ReadFile(path)
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "panic: ") || strings.Contains(l, `"level":"panic"`) || strings.Contains(l, `"level":"fatal"`) {
			return l
		}
	}
	return lastLines(path, 5)
}
