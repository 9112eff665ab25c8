// Package rejoin clears what an earlier life of a node left in the cluster
// before the node joins again: a reflashed machine keeps its name, and
// kubeadm refuses a name the cluster still knows.
//
//   - etcd (control planes): a member with this node's name or peer URL is
//     removed through a healthy member, with an etcd client certificate
//     minted from the cluster's etcd CA. kubeadm users hit "member already
//     exists" here (kubeadm#2138); Talos removes the member the same way.
//   - the Node object (every role): `kubeadm join` refuses a Node of the
//     same name whose Ready condition is True (its kubelet-start phase).
//     The node waits, with its bootstrap token (kubeadm lets it get Nodes),
//     until the control plane has marked the old Node not ready, which
//     happens node-monitor-grace-period (50 s) after the old kubelet
//     stopped; the new kubelet then takes the Node object over. A machine
//     still running under the same name keeps it Ready, and the node waits
//     until its step's time is up, which the error then says.
package rejoin

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"kubeboot.dev/kubeboot/bootstrapd/kubeapi"
	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/clustersecrets"
	"kubeboot.dev/kubeboot/machineconfig"
)

// Ports of kubeadm's stacked etcd.
const (
	etcdClientPort = "2379"
	etcdPeerPort   = "2380"
)

// Time bounds of single calls; the step's own limit bounds the whole.
const (
	callTimeout     = 10 * time.Second
	maxClusterInfo  = 1 << 20
	etcdCertExpires = 10 * time.Minute
)

// Options say how to reach what the node runs.
type Options struct {
	// EtcdEndpoints lists the client URLs of the other control planes'
	// etcd members; nil means the addresses the control-plane endpoint's
	// name resolves to, on etcd's port.
	EtcdEndpoints func(ctx context.Context, cfg *machineconfig.MachineConfig) ([]string, error)
	// EtcdBinary finds an etcd to run as the stand-in of a stale member
	// (see takeOver), and release gives it back; on the node it comes from
	// the pinned etcd image in containerd.
	EtcdBinary func(ctx context.Context) (path string, release func(), err error)
}

// Prepare clears the node's earlier life from the cluster, returning what
// it changed. A condition that clears with time (the old Node still Ready,
// the API server not answering yet) is a temporary error.
func Prepare(ctx context.Context, env *stage.Env, o Options) ([]stage.Change, error) {
	cfg := env.Config
	var changes []stage.Change
	if cfg.Role == machineconfig.RoleControlPlane {
		c, err := removeStaleMember(ctx, env, o)
		if c != "" {
			changes = append(changes, c)
		}
		if err != nil {
			return changes, err
		}
	}
	return changes, waitStaleNodeNotReady(ctx, env)
}

// removeStaleMember removes the etcd member this node was before it was
// reflashed, when there is one.
func removeStaleMember(ctx context.Context, env *stage.Env, o Options) (stage.Change, error) {
	cfg := env.Config
	secrets := cfg.Kubernetes.Credentials.ClusterSecrets()
	if secrets == nil || secrets.EtcdCA.Key == "" {
		return "", errors.New("a control plane needs the cluster secrets (the etcd CA) to check for a stale etcd member")
	}
	creds, err := clustersecrets.MintEtcdClient(secrets, etcdCertExpires)
	if err != nil {
		return "", err
	}
	tlsCfg, err := creds.TLSConfig()
	if err != nil {
		return "", err
	}
	find := o.EtcdEndpoints
	if find == nil {
		find = etcdEndpoints
	}
	endpoints, err := find(ctx, cfg)
	if err != nil {
		return "", err
	}
	cli := newEtcdGateway(endpoints, tlsCfg)
	defer cli.close()

	// Serializable: any member answers, with or without quorum, so the
	// error below can say which case this is.
	members, err := cli.memberList(ctx, false)
	if err != nil {
		return "", stage.Temporary(fmt.Errorf("list etcd members through %s: %w", strings.Join(endpoints, ", "), err))
	}
	peer := "https://" + net.JoinHostPort(cfg.Kubernetes.AdvertiseAddress, etcdPeerPort)
	var stale *member
	var others []member
	for _, m := range members {
		if m.Name == cfg.Kubernetes.NodeName || slices.Contains(m.PeerURLs, peer) {
			stale = &m
		} else {
			others = append(others, m)
		}
	}
	if stale == nil {
		env.Log.Info("no stale etcd member of this node", "members", len(members))
		return "", nil
	}
	healthy := 0
	for _, o := range others {
		if cli.healthy(ctx, o) {
			healthy++
		}
	}
	// Removing a member is a raft proposal: it needs a quorum of the
	// members as they are now, the stale one included; and the members
	// left must keep theirs, or kubeadm join cannot add this node.
	how := fmt.Sprintf("through %d healthy member(s)", healthy)
	quorum, after := len(members)/2+1, (len(members)-1)/2+1
	switch {
	case healthy < after || healthy+1 < quorum:
		return "", stage.Temporary(fmt.Errorf("etcd member %s (%x) is this node's earlier life and must go, but only %d of the other %d member(s) are healthy: removing it needs %d of %d, and the members left need %d; bring the other control planes up",
			stale.Name, stale.ID, healthy, len(others), quorum, len(members), after))
	case healthy < quorum:
		// Only this node's earlier life is missing from a quorum (two
		// control planes, one reflashed): stand in for it to restore the
		// quorum that removing it needs.
		in, err := standIn(ctx, env, o, cli, *stale, members)
		if err != nil {
			return "", err
		}
		defer in.stop()
		how = "after standing in for it to restore etcd's quorum"
	}
	if err := removeMember(ctx, cli, *stale); err != nil {
		return "", err
	}
	return stage.Change(fmt.Sprintf("etcd: removed the stale member %s (%x, %s) %s", stale.Name, stale.ID, strings.Join(stale.PeerURLs, ","), how)), nil
}

// removeMember removes m. etcd refuses to remove a member while fewer
// members than a quorum have been connected for its health interval (5 s):
// just after the stand-in joined, that is the case for a moment.
func removeMember(ctx context.Context, cli *etcdGateway, m member) error {
	deadline := time.Now().Add(time.Minute)
	for {
		err := cli.memberRemove(ctx, m.ID)
		if err == nil {
			return nil
		}
		if !errors.Is(err, errUnhealthy) || time.Now().After(deadline) {
			return stage.Temporary(fmt.Errorf("remove stale etcd member %s (%x): %w", m.Name, m.ID, err))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

// healthy reports whether m answers on one of its client URLs.
func (g *etcdGateway) healthy(ctx context.Context, m member) bool {
	for _, u := range m.ClientURLs {
		if _, err := g.leader(ctx, u); err == nil {
			return true
		}
	}
	return false
}

// etcdEndpoints are the other control planes' etcd client URLs to try:
// the InternalIPs of the control-plane Nodes, read with the node-rebuild
// identity minted from the cluster CA (when the API server answers: it
// does not while etcd has lost its quorum), and the addresses the
// control-plane endpoint's name resolves to (through /etc/hosts, which the
// hostname stage wrote); this node's own address left out.
func etcdEndpoints(ctx context.Context, cfg *machineconfig.MachineConfig) ([]string, error) {
	host, _, err := net.SplitHostPort(cfg.Kubernetes.ControlPlaneEndpoint)
	if err != nil {
		return nil, err
	}
	var addrs []string
	addrs = append(addrs, controlPlaneIPs(ctx, cfg)...)
	lctx, cancel := context.WithTimeout(ctx, callTimeout)
	resolved, rerr := net.DefaultResolver.LookupHost(lctx, host)
	cancel()
	addrs = append(addrs, resolved...)
	var out []string
	for _, a := range addrs {
		u := "https://" + net.JoinHostPort(a, etcdClientPort)
		if a != cfg.Kubernetes.AdvertiseAddress && !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	if len(out) == 0 {
		if rerr != nil {
			return nil, stage.Temporary(fmt.Errorf("find the other control planes' etcd: resolve %s: %w", host, rerr))
		}
		return nil, fmt.Errorf("the control-plane endpoint %s resolves only to this node: no other control plane to join", host)
	}
	return out, nil
}

// controlPlaneIPs lists the InternalIPs of the control-plane Nodes, or
// nothing when the API server cannot say.
func controlPlaneIPs(ctx context.Context, cfg *machineconfig.MachineConfig) []string {
	secrets := cfg.Kubernetes.Credentials.ClusterSecrets()
	if secrets == nil || secrets.CA.Key == "" {
		return nil
	}
	creds, err := clustersecrets.MintNodeRebuildClient(secrets, etcdCertExpires)
	if err != nil {
		return nil
	}
	rc, err := clientcmd.RESTConfigFromKubeConfig(creds.Kubeconfig("https://" + cfg.Kubernetes.ControlPlaneEndpoint))
	if err != nil {
		return nil
	}
	rc.Timeout = callTimeout
	cs, err := kubeapi.NewClient(rc)
	if err != nil {
		return nil
	}
	nodes := &corev1.NodeList{}
	if err := cs.List(ctx, kubeapi.Nodes, "", metav1.ListOptions{LabelSelector: "node-role.kubernetes.io/control-plane"}, nodes); err != nil {
		return nil
	}
	var ips []string
	for _, n := range nodes.Items {
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				ips = append(ips, a.Address)
			}
		}
	}
	return ips
}

// waitStaleNodeNotReady returns nil when no Node of this name is Ready,
// and a temporary error while one is.
func waitStaleNodeNotReady(ctx context.Context, env *stage.Env) error {
	cfg := env.Config
	client, err := bootstrapClient(ctx, cfg)
	if err != nil {
		return err
	}
	gctx, cancel := context.WithTimeout(ctx, callTimeout)
	node := &corev1.Node{}
	err = client.Get(gctx, kubeapi.Nodes, "", cfg.Kubernetes.NodeName, node)
	cancel()
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return stage.Temporary(fmt.Errorf("ask the API server %s about Node %s: %w", cfg.Kubernetes.ControlPlaneEndpoint, cfg.Kubernetes.NodeName, err))
	}
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
			return stage.Temporary(fmt.Errorf("a Node named %s is still Ready in the cluster (last heartbeat %s): waiting until the control plane marks it not ready, about 50 s after the machine this one replaces stopped; if that machine still runs, stop it or give this node another name",
				node.Name, c.LastHeartbeatTime.UTC().Format(time.RFC3339)))
		}
	}
	env.Log.Info("the cluster has a Node of this name that is not Ready: it is taken over on join", "node", node.Name)
	return nil
}

// bootstrapClient is an API client authenticated with the bootstrap
// token, trusting the cluster CA.
func bootstrapClient(ctx context.Context, cfg *machineconfig.MachineConfig) (*kubeapi.Client, error) {
	creds := &cfg.Kubernetes.Credentials
	server := "https://" + cfg.Kubernetes.ControlPlaneEndpoint
	ca, err := clusterCA(ctx, server, creds)
	if err != nil {
		return nil, err
	}
	return kubeapi.NewClient(&rest.Config{
		Host: server, BearerToken: creds.JoinToken().Reveal(), Timeout: callTimeout,
		TLSClientConfig: rest.TLSClientConfig{CAData: ca},
	})
}

// clusterCA returns the cluster CA certificate: from the cluster secrets
// when the config carries them, else as kubeadm's discovery gets it: the
// public cluster-info ConfigMap, trusted only if its CA matches one of the
// config's caCertHashes.
func clusterCA(ctx context.Context, server string, creds *machineconfig.Credentials) ([]byte, error) {
	if s := creds.ClusterSecrets(); s != nil && s.CA.Cert != "" {
		return []byte(s.CA.Cert), nil
	}
	pins := creds.DiscoveryHashes()
	if len(pins) == 0 {
		return nil, errors.New("no way to trust the cluster CA: the config has neither cluster secrets nor caCertHashes")
	}
	// The certificate is checked against the pins below, not by TLS.
	insecure := &http.Client{Timeout: callTimeout, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}}} //nolint:gosec
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, server+"/api/v1/namespaces/kube-public/configmaps/cluster-info", nil)
	if err != nil {
		return nil, err
	}
	resp, err := insecure.Do(req)
	if err != nil {
		return nil, stage.Temporary(fmt.Errorf("read cluster-info from %s: %w", server, err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxClusterInfo+1))
	if err != nil {
		return nil, stage.Temporary(fmt.Errorf("read cluster-info from %s: %w", server, err))
	}
	if resp.StatusCode != http.StatusOK {
		return nil, stage.Temporary(fmt.Errorf("read cluster-info from %s: %s", server, resp.Status))
	}
	if len(body) > maxClusterInfo {
		return nil, fmt.Errorf("cluster-info from %s is larger than %d bytes", server, maxClusterInfo)
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := json.Unmarshal(body, &cm); err != nil {
		return nil, fmt.Errorf("cluster-info from %s: %w", server, err)
	}
	kc, err := clientcmd.Load([]byte(cm.Data["kubeconfig"]))
	if err != nil {
		return nil, fmt.Errorf("cluster-info from %s: its kubeconfig: %w", server, err)
	}
	for _, c := range kc.Clusters {
		if ok, err := matchesPin(c.CertificateAuthorityData, pins); err != nil {
			return nil, fmt.Errorf("cluster-info from %s: %w", server, err)
		} else if ok {
			return c.CertificateAuthorityData, nil
		}
	}
	return nil, fmt.Errorf("the CA that %s presents in cluster-info matches none of kubernetes.credentials.caCertHashes: wrong cluster, or wrong hash", server)
}

// matchesPin reports whether the first certificate in pemData has a
// SubjectPublicKeyInfo whose sha256 is one of pins ("sha256:<hex>").
func matchesPin(pemData []byte, pins []string) (bool, error) {
	block, _ := pem.Decode(pemData)
	if block == nil {
		return false, errors.New("no PEM certificate")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return false, err
	}
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	want := "sha256:" + hex.EncodeToString(sum[:])
	return slices.ContainsFunc(pins, func(p string) bool { return strings.EqualFold(p, want) }), nil
}
