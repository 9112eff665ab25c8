// Package testcluster starts a real control plane on loopback for tests:
// etcd (TLS, its own CA, optionally more members) and kube-apiserver (and,
// when asked, kube-controller-manager), the binaries of the artifact cache
// (make artifacts), with certificates made for the test. Tests get an
// admin rest.Config and kubeconfig (system:masters) and etcd client TLS
// files. Every process is stopped by its pid when the test ends; the
// state lives in the test's temporary directory.
//
//	c := testcluster.Start(t, testcluster.Options{})
//	clientset := kubernetes.NewForConfigOrDie(c.REST)
//	m2 := c.AddEtcdMember(t, "cp2") // a second etcd member joins the first
//
// A test skips, saying why, when the binaries are not in the cache.
package testcluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"kubeboot.dev/kubeboot/internal/cachetest"
)

// Options choose what runs besides etcd and kube-apiserver.
type Options struct {
	// ControllerManager runs kube-controller-manager too (service account
	// tokens, namespace deletion, garbage collection, node CIDRs from
	// PodSubnet, bootstrap token signing and cleanup).
	ControllerManager bool
	// PodSubnet is the controller manager's --cluster-cidr; empty: no node
	// CIDR allocation.
	PodSubnet string
}

// ServiceSubnet is the API server's service range (kubeadm's default).
const ServiceSubnet = "10.96.0.0/12"

// TLSFiles are PEM files of a client identity and the CA that signed the
// server it talks to.
type TLSFiles struct{ CA, Cert, Key string }

// Config is a tls.Config presenting the client certificate and trusting CA.
func (f TLSFiles) Config() (*tls.Config, error) {
	pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, err
	}
	ca, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("%s holds no certificate", f.CA)
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// Cluster is a running control plane.
type Cluster struct {
	// Dir holds certificates, keys, data and logs (the test's temp dir).
	Dir string
	// Kubeconfig is an admin kubeconfig (group system:masters); REST is
	// the same identity as a rest.Config.
	Kubeconfig string
	REST       *rest.Config
	// APIServer is https://127.0.0.1:PORT.
	APIServer string
	// CA is the cluster CA (CA.Cert, CA.Key: PEM files), for minting more
	// identities as the bundle's CA would.
	CA TLSFiles
	// Etcd lists the etcd members, the first one started by Start.
	Etcd []*EtcdMember
	// EtcdClient is a client identity from the etcd CA (what the API
	// server uses too).
	EtcdClient TLSFiles
	// EtcdCA is the etcd CA (EtcdCA.Cert, EtcdCA.Key: PEM files), for
	// minting etcd identities as the bundle's etcd CA would.
	EtcdCA TLSFiles

	bins       map[string]string
	ca, etcdCA *authority
	etcdServer TLSFiles
	token      string // etcd --initial-cluster-token
	mu         sync.Mutex
	procs      []*process // the API server and controller manager
}

// EtcdMember is one etcd process.
type EtcdMember struct {
	Name      string
	ClientURL string // https://127.0.0.1:PORT
	PeerURL   string
	DataDir   string
	proc      *process
	removed   bool
}

// Binaries are the cached binaries the control plane needs.
var Binaries = []string{"etcd", "etcdctl", "kube-apiserver", "kube-controller-manager"}

// binaries finds Binaries in the artifact cache by configs/image.lock
// (internal/cachetest), or skips the test naming what is missing.
func binaries(tb testing.TB) map[string]string {
	tb.Helper()
	if runtime.GOOS != "linux" {
		tb.Skip("the control plane binaries are linux/amd64")
	}
	out := map[string]string{}
	for _, name := range Binaries {
		out[name] = cachetest.File(tb, name)
	}
	return out
}

// Start runs etcd and kube-apiserver (and the controller manager when
// asked) and waits until the API server is ready.
func Start(tb testing.TB, o Options) *Cluster {
	tb.Helper()
	c := &Cluster{Dir: tb.TempDir(), bins: binaries(tb), token: fmt.Sprintf("kubeboot-test-%d", time.Now().UnixNano())}
	tb.Cleanup(func() { c.stop(tb) })
	pki := filepath.Join(c.Dir, "pki")
	must(tb, os.Mkdir(pki, 0o700))
	var err error
	if c.etcdCA, err = newAuthority(pki, "etcd-ca"); err != nil {
		tb.Fatal(err)
	}
	if c.ca, err = newAuthority(pki, "ca"); err != nil {
		tb.Fatal(err)
	}
	c.CA = TLSFiles{CA: c.ca.CertFile, Cert: c.ca.CertFile, Key: c.ca.KeyFile}
	c.EtcdCA = TLSFiles{CA: c.etcdCA.CertFile, Cert: c.etcdCA.CertFile, Key: c.etcdCA.KeyFile}
	loopback := []net.IP{net.IPv4(127, 0, 0, 1)}
	c.etcdServer = c.issue(tb, c.etcdCA, "etcd-server", certSpec{cn: "etcd", dns: []string{"localhost"}, ips: loopback,
		usage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}})
	c.EtcdClient = c.issue(tb, c.etcdCA, "etcd-client", certSpec{cn: "kube-apiserver-etcd-client",
		usage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})

	first := c.newMember(tb, "etcd0")
	c.Etcd = append(c.Etcd, first)
	c.startMember(tb, first, first.Name+"="+first.PeerURL, "new")

	apiPort := freePort(tb)
	c.APIServer = "https://127.0.0.1:" + strconv.Itoa(apiPort)
	serving := c.issue(tb, c.ca, "apiserver", certSpec{cn: "kube-apiserver",
		dns: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		ips: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv4(10, 96, 0, 1)}, usage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	admin := c.issue(tb, c.ca, "admin", certSpec{cn: "kubernetes-admin", orgs: []string{"system:masters"},
		usage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	saPub, saKey, err := writeKeyPair(pki, "sa")
	if err != nil {
		tb.Fatal(err)
	}
	// --advertise-address 127.0.0.1 needs the endpoint reconciler off: it
	// refuses to publish a loopback address in the kubernetes Service.
	apiserver := c.run(tb, "kube-apiserver", "kube-apiserver",
		"--advertise-address=127.0.0.1", "--bind-address=127.0.0.1", "--secure-port="+strconv.Itoa(apiPort),
		"--endpoint-reconciler-type=none",
		"--etcd-servers="+first.ClientURL, "--etcd-cafile="+c.EtcdClient.CA, "--etcd-certfile="+c.EtcdClient.Cert, "--etcd-keyfile="+c.EtcdClient.Key,
		"--tls-cert-file="+serving.Cert, "--tls-private-key-file="+serving.Key, "--client-ca-file="+c.ca.CertFile,
		"--service-account-key-file="+saPub, "--service-account-signing-key-file="+saKey,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-cluster-ip-range="+ServiceSubnet, "--authorization-mode=Node,RBAC",
		"--enable-bootstrap-token-auth=true", "--allow-privileged=true", "--profiling=false")

	c.REST = &rest.Config{Host: c.APIServer, Timeout: 30 * time.Second,
		TLSClientConfig: rest.TLSClientConfig{CAFile: c.ca.CertFile, CertFile: admin.Cert, KeyFile: admin.Key}}
	c.Kubeconfig = filepath.Join(c.Dir, "admin.conf")
	c.writeKubeconfig(tb, c.Kubeconfig, admin)
	c.waitReady(tb, apiserver)

	if o.ControllerManager {
		args := []string{"--kubeconfig=" + c.Kubeconfig, "--authentication-kubeconfig=" + c.Kubeconfig, "--authorization-kubeconfig=" + c.Kubeconfig,
			"--bind-address=127.0.0.1", "--secure-port=" + strconv.Itoa(freePort(tb)), "--leader-elect=false",
			"--service-account-private-key-file=" + saKey, "--root-ca-file=" + c.ca.CertFile,
			"--cluster-signing-cert-file=" + c.ca.CertFile, "--cluster-signing-key-file=" + c.ca.KeyFile,
			"--use-service-account-credentials=true", "--controllers=*,bootstrapsigner,tokencleaner",
			"--service-cluster-ip-range=" + ServiceSubnet}
		if o.PodSubnet != "" {
			args = append(args, "--allocate-node-cidrs=true", "--cluster-cidr="+o.PodSubnet)
		}
		c.run(tb, "kube-controller-manager", "kube-controller-manager", args...)
	}
	return c
}

func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}

func (c *Cluster) issue(tb testing.TB, a *authority, name string, s certSpec) TLSFiles {
	tb.Helper()
	cert, key, err := a.issue(filepath.Join(c.Dir, "pki"), name, s)
	if err != nil {
		tb.Fatal(err)
	}
	return TLSFiles{CA: a.CertFile, Cert: cert, Key: key}
}

// Identity mints a client certificate from the cluster CA for user in
// groups and writes a kubeconfig for it (as the rebuild logic mints one
// from the secrets bundle's CA).
func (c *Cluster) Identity(tb testing.TB, user string, groups ...string) (kubeconfig string, rc *rest.Config) {
	tb.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	name := "user-" + strings.NewReplacer(":", "-", "/", "-").Replace(user)
	id := c.issue(tb, c.ca, name, certSpec{cn: user, orgs: groups, usage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	kubeconfig = filepath.Join(c.Dir, name+".conf")
	c.writeKubeconfig(tb, kubeconfig, id)
	return kubeconfig, &rest.Config{Host: c.APIServer, Timeout: 30 * time.Second,
		TLSClientConfig: rest.TLSClientConfig{CAFile: c.ca.CertFile, CertFile: id.Cert, KeyFile: id.Key}}
}

func (c *Cluster) writeKubeconfig(tb testing.TB, path string, id TLSFiles) {
	tb.Helper()
	read := func(p string) []byte {
		b, err := os.ReadFile(p)
		must(tb, err)
		return b
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["test"] = &clientcmdapi.Cluster{Server: c.APIServer, CertificateAuthorityData: read(c.ca.CertFile)}
	cfg.AuthInfos["user"] = &clientcmdapi.AuthInfo{ClientCertificateData: read(id.Cert), ClientKeyData: read(id.Key)}
	cfg.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "user"}
	cfg.CurrentContext = "test"
	must(tb, clientcmd.WriteToFile(*cfg, path))
	must(tb, os.Chmod(path, 0o600))
}

// waitReady polls /readyz until the API server answers ok (60s).
func (c *Cluster) waitReady(tb testing.TB, apiserver *process) {
	tb.Helper()
	tr, err := rest.TransportFor(c.REST)
	must(tb, err)
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	deadline := time.Now().Add(60 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		resp, err := client.Get(c.APIServer + "/readyz")
		if err == nil {
			body := make([]byte, 4096)
			n, _ := resp.Body.Read(body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = fmt.Sprintf("%s: %s", resp.Status, body[:n])
		} else {
			last = err.Error()
		}
		if apiserver.exited() {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	tb.Fatalf("kube-apiserver not ready after 60s: %s\n%s", last, tail(filepath.Join(c.Dir, "kube-apiserver.log")))
}

// newMember picks ports and a data directory for a member.
func (c *Cluster) newMember(tb testing.TB, name string) *EtcdMember {
	return &EtcdMember{Name: name,
		ClientURL: "https://127.0.0.1:" + strconv.Itoa(freePort(tb)),
		PeerURL:   "https://127.0.0.1:" + strconv.Itoa(freePort(tb)),
		DataDir:   filepath.Join(c.Dir, "etcd-"+name)}
}

func (c *Cluster) startMember(tb testing.TB, m *EtcdMember, initialCluster, state string) {
	tb.Helper()
	s := c.etcdServer
	m.proc = c.run(tb, "etcd-"+m.Name, "etcd",
		"--name="+m.Name, "--data-dir="+m.DataDir,
		"--listen-client-urls="+m.ClientURL, "--advertise-client-urls="+m.ClientURL,
		"--listen-peer-urls="+m.PeerURL, "--initial-advertise-peer-urls="+m.PeerURL,
		"--initial-cluster="+initialCluster, "--initial-cluster-state="+state, "--initial-cluster-token="+c.token,
		"--client-cert-auth", "--trusted-ca-file="+s.CA, "--cert-file="+s.Cert, "--key-file="+s.Key,
		"--peer-client-cert-auth", "--peer-trusted-ca-file="+s.CA, "--peer-cert-file="+s.Cert, "--peer-key-file="+s.Key,
		"--listen-metrics-urls=", "--log-level=warn")
	c.waitEtcd(tb, m)
}

// waitEtcd polls the member's /health with the client identity (60s).
func (c *Cluster) waitEtcd(tb testing.TB, m *EtcdMember) {
	tb.Helper()
	tlsCfg, err := c.EtcdClient.Config()
	must(tb, err)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}, Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(60 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		resp, err := client.Get(m.ClientURL + "/health")
		if err == nil {
			body := make([]byte, 512)
			n, _ := resp.Body.Read(body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.Contains(string(body[:n]), `"health":"true"`) {
				return
			}
			last = fmt.Sprintf("%s: %s", resp.Status, body[:n])
		} else {
			last = err.Error()
		}
		if m.proc.exited() {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	tb.Fatalf("etcd member %s not healthy: %s\n%s", m.Name, last, tail(m.proc.log))
}

// Etcdctl runs the cached etcdctl against the given members (nil: every
// member still running) with the client identity and returns its stdout;
// a failure fails the test.
func (c *Cluster) Etcdctl(tb testing.TB, members []*EtcdMember, args ...string) string {
	tb.Helper()
	out, err := c.TryEtcdctl(members, args...)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// TryEtcdctl is Etcdctl returning the error (with etcdctl's stderr).
func (c *Cluster) TryEtcdctl(members []*EtcdMember, args ...string) (string, error) {
	if members == nil {
		for _, m := range c.Etcd {
			if !m.proc.exited() {
				members = append(members, m)
			}
		}
	}
	var eps []string
	for _, m := range members {
		eps = append(eps, m.ClientURL)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bins["etcdctl"], append([]string{"--endpoints=" + strings.Join(eps, ","),
		"--cacert=" + c.EtcdClient.CA, "--cert=" + c.EtcdClient.Cert, "--key=" + c.EtcdClient.Key}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("etcdctl %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

// AddEtcdMember adds a member to the cluster (etcdctl member add, through
// the running members) and starts it, joining the existing cluster.
func (c *Cluster) AddEtcdMember(tb testing.TB, name string) *EtcdMember {
	tb.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.newMember(tb, name)
	// etcd refuses a new voting member until every member has been
	// connected for a few seconds ("unhealthy cluster"): retry for 30s.
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := c.TryEtcdctl(nil, "member", "add", name, "--peer-urls="+m.PeerURL)
		if err == nil {
			break
		}
		if !strings.Contains(err.Error(), "unhealthy cluster") || time.Now().After(deadline) {
			tb.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	var initial []string
	for _, o := range append(c.Etcd, m) {
		if !o.removed {
			initial = append(initial, o.Name+"="+o.PeerURL)
		}
	}
	c.Etcd = append(c.Etcd, m)
	c.startMember(tb, m, strings.Join(initial, ","), "existing")
	return m
}

// StopEtcdMember stops a member's process, as if its node died; the
// member stays in the cluster's member list.
func (c *Cluster) StopEtcdMember(tb testing.TB, m *EtcdMember) {
	tb.Helper()
	m.proc.stop(tb)
}

// MemberRemoved tells the cluster a test removed m from etcd's member list
// (through its own client), so later members do not name it as a peer.
func (c *Cluster) MemberRemoved(m *EtcdMember) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m.removed = true
}

// process is one started binary with its log file.
type process struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	once sync.Once
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// run starts a cached binary in its own process group, logging to
// <dir>/<name>.log, and stops it by pid when the test ends.
func (c *Cluster) run(tb testing.TB, name, binary string, args ...string) *process {
	tb.Helper()
	logPath := filepath.Join(c.Dir, name+".log")
	logf, err := os.Create(logPath)
	must(tb, err)
	cmd := exec.Command(c.bins[binary], args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = c.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		tb.Fatalf("start %s: %v", binary, err)
	}
	p := &process{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(p.done) }()
	if binary != "etcd" {
		c.procs = append(c.procs, p)
	}
	return p
}

// stop ends every process by its pid: the API server and controller
// manager first, then the etcd members, last started first, so the API
// server never waits on an etcd that lost its quorum.
func (c *Cluster) stop(tb testing.TB) {
	for i := len(c.procs) - 1; i >= 0; i-- {
		c.procs[i].stop(tb)
	}
	for i := len(c.Etcd) - 1; i >= 0; i-- {
		if c.Etcd[i].proc != nil {
			c.Etcd[i].proc.stop(tb)
		}
	}
}

// stop sends SIGTERM to the process and, after 10s, SIGKILL (an API
// server whose etcd lost its quorum does not finish shutting down).
func (p *process) stop(tb testing.TB) {
	p.once.Do(func() {
		if p.exited() {
			return
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			tb.Logf("%s (pid %d) still running 10s after SIGTERM; killing it", p.name, p.cmd.Process.Pid)
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
}

// freePort asks the kernel for a free loopback port. Another process can
// take it before the component binds it; the component then fails to
// start and the test says so.
func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(tb, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// tail returns the last lines of a log for failure messages.
func tail(p string) string {
	b, _ := os.ReadFile(p)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return p + ":\n" + strings.Join(lines, "\n")
}
