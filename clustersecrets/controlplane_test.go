package clustersecrets

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kubeboot.dev/kubeboot/image/artifacts"
	"kubeboot.dev/kubeboot/image/fetch"
)

// cached returns the pinned binaries from the artifact cache, or skips.
func cached(t *testing.T, names ...string) map[string]string {
	t.Helper()
	cache, err := fetch.DefaultDir()
	if err != nil {
		t.Skip("no artifact cache:", err)
	}
	_, items, err := artifacts.Resolve("../configs/image.yaml", cache)
	if err != nil {
		t.Skip("artifact lock not readable:", err)
	}
	out := map[string]string{}
	for _, it := range items {
		if it.Cached && it.Kind == artifacts.KindBinary {
			out[it.Name] = it.Path
		}
	}
	for _, n := range names {
		if out[n] == "" {
			t.Skipf("the pinned %s is not in the artifact cache yet (make artifacts)", n)
		}
	}
	return out
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// start runs a server process, logging to a file, and stops it (by its
// pid) when the test ends.
func start(t *testing.T, log string, name string, args ...string) {
	t.Helper()
	f, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			data, _ := os.ReadFile(log)
			lines := strings.Split(strings.TrimSpace(string(data)), "\n")
			t.Logf("last lines of %s:\n%s", filepath.Base(log), strings.Join(lines[max(0, len(lines)-25):], "\n"))
		}
	})
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		f.Close()
	})
}

// eventually retries f for up to d.
func eventually(t *testing.T, d time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func writeCreds(t *testing.T, dir, name string, c *ClientCredentials) (cert, key, ca string) {
	t.Helper()
	cert, key, ca = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key"), filepath.Join(dir, name+"-ca.crt")
	for p, data := range map[string][]byte{cert: c.CertPEM, key: []byte(c.KeyPEM.Reveal()), ca: c.CAPEM} {
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return cert, key, ca
}

// The minted credentials against a real etcd and kube-apiserver started
// from the installed PKI (kubeadm signs their serving certificates): the
// etcd client removes a stale member, the node-rebuild identity lists and
// deletes Nodes and nothing else once NodeRebuildRBAC is applied, and the
// bundle's bootstrap token may get Nodes, which is how a reflashed worker
// waits for its stale Node to stop being Ready.
func TestMintedCredentialsAgainstRealControlPlane(t *testing.T) {
	bin := cached(t, "kubeadm", "etcd", "etcdctl", "kube-apiserver", "kubectl")
	s := secrets(t)
	tmp := t.TempDir()
	pki := filepath.Join(tmp, "pki")
	if _, err := InstallPKI(pki, s); err != nil {
		t.Fatal(err)
	}
	apiPort, etcdPort, peerPort := freePort(t), freePort(t), freePort(t)
	kubeadmCfg := filepath.Join(tmp, "kubeadm.yaml")
	os.WriteFile(kubeadmCfg, []byte(fmt.Sprintf(`apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint: {advertiseAddress: 192.0.2.10, bindPort: %d} # only for the certificates: kubeadm refuses a loopback address
nodeRegistration: {name: cp1}
bootstrapTokens:
  - token: %s
    ttl: 0s
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: v1.37.2
controlPlaneEndpoint: 127.0.0.1:%d
certificatesDir: %s
`, apiPort, s.Token.Reveal(), apiPort, pki)), 0o600)
	if out, err := exec.Command(bin["kubeadm"], "init", "phase", "certs", "all", "--config", kubeadmCfg).CombinedOutput(); err != nil {
		t.Fatalf("kubeadm init phase certs all: %v\n%s", err, out)
	}

	etcdURL := fmt.Sprintf("https://127.0.0.1:%d", etcdPort)
	peer := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
	start(t, filepath.Join(tmp, "etcd.log"), bin["etcd"], "--name", "cp1", "--data-dir", filepath.Join(tmp, "etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "cp1="+peer,
		"--cert-file", filepath.Join(pki, "etcd/server.crt"), "--key-file", filepath.Join(pki, "etcd/server.key"),
		"--client-cert-auth", "--trusted-ca-file", filepath.Join(pki, "etcd/ca.crt"))

	etcdCreds, err := MintEtcdClient(s, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, ca := writeCreds(t, tmp, "etcd-client", etcdCreds)
	etcdctl := func(args ...string) (string, error) {
		all := append([]string{"--endpoints", etcdURL, "--cacert", ca, "--cert", cert, "--key", key, "--command-timeout", "10s"}, args...)
		out, err := exec.Command(bin["etcdctl"], all...).CombinedOutput()
		return string(out), err
	}
	eventually(t, 60*time.Second, "etcd health with the minted client", func() error {
		out, err := etcdctl("endpoint", "health")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	// A stale member, as a reflashed control plane leaves behind (a
	// learner, so that the one-member test cluster keeps its quorum).
	if out, err := etcdctl("member", "add", "stale", "--learner", fmt.Sprintf("--peer-urls=http://127.0.0.1:%d", freePort(t))); err != nil {
		t.Fatalf("member add: %v\n%s", err, out)
	}
	var list struct {
		Members []struct {
			ID   uint64 `json:"ID"`
			Name string `json:"name"`
		} `json:"members"`
	}
	out, err := etcdctl("member", "list", "-w", "json")
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.Members) != 2 {
		t.Fatalf("member list: %v %v\n%s", err, list, out)
	}
	for _, m := range list.Members {
		if m.Name != "cp1" {
			if out, err := etcdctl("member", "remove", fmt.Sprintf("%x", m.ID)); err != nil {
				t.Fatalf("member remove with the minted client: %v\n%s", err, out)
			}
		}
	}
	if out, _ := etcdctl("member", "list"); strings.Count(strings.TrimSpace(out), "\n") != 0 || !strings.Contains(out, "cp1") {
		t.Errorf("after remove:\n%s", out)
	}
	// A certificate of the cluster CA is no etcd client.
	rebuild, err := MintNodeRebuildClient(s, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	wrongCert, wrongKey, _ := writeCreds(t, tmp, "wrong", rebuild)
	if out, err := exec.Command(bin["etcdctl"], "--endpoints", etcdURL, "--cacert", ca, "--cert", wrongCert, "--key", wrongKey,
		"--command-timeout", "5s", "member", "list").CombinedOutput(); err == nil {
		t.Errorf("etcd accepted a client certificate of the cluster CA:\n%s", out)
	}

	start(t, filepath.Join(tmp, "apiserver.log"), bin["kube-apiserver"],
		// It refuses to advertise a loopback address; nothing reaches it at 192.0.2.10.
		"--advertise-address=192.0.2.10", "--endpoint-reconciler-type=none", "--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", apiPort),
		"--etcd-servers="+etcdURL, "--etcd-cafile="+filepath.Join(pki, "etcd/ca.crt"),
		"--etcd-certfile="+filepath.Join(pki, "apiserver-etcd-client.crt"), "--etcd-keyfile="+filepath.Join(pki, "apiserver-etcd-client.key"),
		"--client-ca-file="+filepath.Join(pki, "ca.crt"), "--tls-cert-file="+filepath.Join(pki, "apiserver.crt"),
		"--tls-private-key-file="+filepath.Join(pki, "apiserver.key"), "--service-account-key-file="+filepath.Join(pki, "sa.pub"),
		"--service-account-signing-key-file="+filepath.Join(pki, "sa.key"), "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-cluster-ip-range=10.96.0.0/12", "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
		"--enable-bootstrap-token-auth=true", "--cert-dir="+filepath.Join(tmp, "apiserver-certs"))

	// An administrator for the test only: system:masters.
	admin, err := mint(s.CA, "cluster CA", pkix.Name{CommonName: "kubeboot-test-admin", Organization: []string{"system:masters"}}, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	server := fmt.Sprintf("https://127.0.0.1:%d", apiPort)
	adminConf, rebuildConf := filepath.Join(tmp, "admin.conf"), filepath.Join(tmp, "rebuild.conf")
	os.WriteFile(adminConf, admin.Kubeconfig(server), 0o600)
	os.WriteFile(rebuildConf, rebuild.Kubeconfig(server), 0o600)
	kubectl := func(conf string, stdin string, args ...string) (string, error) {
		cmd := exec.Command(bin["kubectl"], append([]string{"--kubeconfig", conf, "--request-timeout", "20s"}, args...)...)
		cmd.Env = append(os.Environ(), "HOME="+tmp)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	eventually(t, 120*time.Second, "kube-apiserver ready", func() error {
		out, err := kubectl(adminConf, "", "get", "--raw", "/readyz")
		if err != nil || strings.TrimSpace(out) != "ok" {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	mustKubectl := func(conf, stdin string, args ...string) string {
		t.Helper()
		out, err := kubectl(conf, stdin, args...)
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	mustKubectl(adminConf, NodeRebuildRBAC, "apply", "-f", "-")
	mustKubectl(adminConf, "apiVersion: v1\nkind: Node\nmetadata:\n  name: worker1\n", "apply", "-f", "-")

	// The bundle's token, created by kubeadm as the init node would: it
	// may get Nodes (a worker's wait for its stale Node) and never expires.
	if out, err := exec.Command(bin["kubeadm"], "init", "phase", "bootstrap-token", "--config", kubeadmCfg, "--kubeconfig", adminConf, "--skip-token-print").CombinedOutput(); err != nil {
		t.Fatalf("kubeadm init phase bootstrap-token: %v\n%s", err, out)
	} else if bytes.Contains(out, []byte(s.Token.Reveal())) {
		t.Errorf("kubeadm printed the token despite --skip-token-print:\n%s", out)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(s.CA.Cert))
	req, _ := http.NewRequest("GET", server+"/api/v1/nodes/worker1", nil)
	req.Header.Set("Authorization", "Bearer "+s.Token.Reveal())
	resp, err := (&http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("the bootstrap token cannot get the stale Node: HTTP %d", resp.StatusCode)
	}
	if exp := mustKubectl(adminConf, "", "-n", "kube-system", "get", "secret", "bootstrap-token-"+strings.Split(s.Token.Reveal(), ".")[0], "-o", "jsonpath={.data.expiration}"); exp != "" {
		t.Errorf("the token expires (%s); without tokenTTL it must not", exp)
	}

	// The node-rebuild identity: Nodes only.
	if out := mustKubectl(rebuildConf, "", "get", "nodes", "-o", "name"); strings.TrimSpace(out) != "node/worker1" {
		t.Errorf("node-rebuild lists %q", out)
	}
	mustKubectl(rebuildConf, "", "delete", "node", "worker1")
	for _, forbidden := range [][]string{
		{"get", "secrets", "-A"},
		{"get", "pods", "-A"},
		{"create", "namespace", "x"},
		{"auth", "can-i", "patch", "nodes"},
	} {
		out, err := kubectl(rebuildConf, "", forbidden...)
		if forbidden[0] == "auth" {
			if f := strings.Fields(out); len(f) == 0 || f[len(f)-1] != "no" { // after a warning that nodes are cluster-scoped
				t.Errorf("node-rebuild may patch nodes: %s", out)
			}
			continue
		}
		if err == nil || !strings.Contains(out, "Forbidden") && !strings.Contains(out, "forbidden") {
			t.Errorf("node-rebuild may %s: %v\n%s", strings.Join(forbidden, " "), err, out)
		}
	}
}
