package waitready

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/internal/testcluster"
	"kubeboot.dev/kubeboot/machineconfig"
	"kubeboot.dev/kubeboot/nodepath"
)

// reports collects what the stage says it waits for.
type reports struct {
	mu  sync.Mutex
	all []string
}

func (r *reports) add(s string) { r.mu.Lock(); r.all = append(r.all, s); r.mu.Unlock() }
func (r *reports) last() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.all) == 0 {
		return ""
	}
	return r.all[len(r.all)-1]
}

func fast() *Stage {
	return &Stage{PollMin: 50 * time.Millisecond, PollMax: 200 * time.Millisecond, ReportEvery: 100 * time.Millisecond, RefusalGrace: time.Second}
}

func config(t *testing.T, role machineconfig.Role, node string) *machineconfig.MachineConfig {
	t.Helper()
	cfg, err := machineconfig.Parse("c.yaml", []byte("apiVersion: kubeboot.dev/v1alpha1\nkind: MachineConfig\nrole: init\nhostname: "+node+"\n"+
		"kubernetes:\n  version: v1.37.2\n  controlPlaneEndpoint: cp:6443\n  podSubnet: 172.17.0.0/16\n"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Role = role // join credentials are not what this stage reads
	return cfg
}

// kubeletConf writes, under root, what kubeadm join leaves a worker with:
// /etc/kubernetes/kubelet.conf naming the kubelet's client certificate by
// its absolute path on the node, /var/lib/kubelet/pki/kubelet-client-current.pem.
func kubeletConf(t *testing.T, c *testcluster.Cluster, root, node string) {
	t.Helper()
	_, rc := c.Identity(t, "system:node:"+node, "system:nodes")
	cert, err := os.ReadFile(rc.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(rc.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile(rc.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	const pem = "/var/lib/kubelet/pki/kubelet-client-current.pem"
	if err := os.MkdirAll(filepath.Join(root, filepath.Dir(pem)), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, pem), append(cert, key...), 0o600); err != nil {
		t.Fatal(err)
	}
	writeKubeconfig(t, filepath.Join(root, nodepath.KubeletConf), c.APIServer, ca, &clientcmdapi.AuthInfo{ClientCertificate: pem, ClientKey: pem})
}

func writeKubeconfig(t *testing.T, path, server string, ca []byte, user *clientcmdapi.AuthInfo) {
	t.Helper()
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["default-cluster"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	cfg.AuthInfos["default-auth"] = user
	cfg.Contexts["default-context"] = &clientcmdapi.Context{Cluster: "default-cluster", AuthInfo: "default-auth"}
	cfg.CurrentContext = "default-context"
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
}

func pod(name, node string, phase corev1.PodPhase, ready bool, waiting string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: Namespace},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "registry.k8s.io/pause:3.10.2"}},
			AutomountServiceAccountToken: new(bool)},
	}
	st := corev1.PodStatus{Phase: phase}
	cond := corev1.ConditionFalse
	if ready {
		cond = corev1.ConditionTrue
	}
	st.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: cond}}
	cs := corev1.ContainerStatus{Name: "c", Image: "registry.k8s.io/pause:3.10.2", Ready: ready}
	if waiting != "" {
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: waiting}
	} else {
		cs.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.Now()}
	}
	st.ContainerStatuses = []corev1.ContainerStatus{cs}
	p.Status = st
	return p
}

func setNodeReady(t *testing.T, ctx context.Context, cs kubernetes.Interface, name string, ready bool) {
	t.Helper()
	n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionFalse, Reason: "KubeletNotReady",
		Message:           "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady",
		LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}
	if ready {
		c.Status, c.Reason, c.Message = corev1.ConditionTrue, "KubeletReady", "kubelet is posting ready status"
	}
	n.Status.Conditions = []corev1.NodeCondition{c}
	if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// putPod creates p unless it exists, then sets its status.
func putPod(t *testing.T, ctx context.Context, cs kubernetes.Interface, p *corev1.Pod) {
	t.Helper()
	st := p.Status
	cur, err := cs.CoreV1().Pods(Namespace).Get(ctx, p.Name, metav1.GetOptions{})
	if err != nil {
		if cur, err = cs.CoreV1().Pods(Namespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	cur.Status = st
	if _, err := cs.CoreV1().Pods(Namespace).UpdateStatus(ctx, cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestWorkerWaitsForItsNodeAndPods runs the stage on a "worker" whose
// credentials are a kubelet.conf for system:node:w1, against a real
// kube-apiserver with the Node authorizer: it waits while the node is not
// registered, then NotReady, then while a kube-system pod on it is still
// creating, ignores another node's broken pod and a completed pod, and
// returns once the node is Ready and its pods run.
func TestWorkerWaitsForItsNodeAndPods(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	admin := kubernetes.NewForConfigOrDie(c.REST)
	// The ServiceAccount admission plugin wants the pods' account to exist;
	// no controller manager runs to make it.
	if _, err := admin.CoreV1().ServiceAccounts(Namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	root := t.TempDir()
	kubeletConf(t, c, root, "w1")
	rep := &reports{}
	env := &stage.Env{Root: root, NetNS: netns.None(), Config: config(t, machineconfig.RoleWorker, "w1"),
		Log: slog.New(slog.DiscardHandler), Progress: rep.add}
	s := fast()

	planned, err := s.Plan(ctx, env)
	if err != nil || fmt.Sprint(planned) != "[not ready yet: node w1 is not registered yet]" {
		t.Fatalf("plan before the node registers: %q, %v", planned, err)
	}

	done := make(chan error, 1)
	go func() {
		_, err := s.Apply(ctx, env)
		done <- err
	}()
	// waitFor waits for a report that says what and none of unsaid.
	waitFor := func(what string, unsaid ...string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			last := rep.last()
			if strings.Contains(last, what) && !slices.ContainsFunc(unsaid, func(u string) bool { return strings.Contains(last, u) }) {
				return
			}
			select {
			case err := <-done:
				t.Fatalf("apply returned (%v) while waiting for %q; last report %q", err, what, rep.last())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("no report of %q without %q; last %q", what, unsaid, last)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("node w1 is not registered yet")

	if _, err := admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "w1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	setNodeReady(t, ctx, admin, "w1", false)
	putPod(t, ctx, admin, pod("kube-proxy-w1", "w1", corev1.PodPending, false, "ContainerCreating"))
	putPod(t, ctx, admin, pod("job-done", "w1", corev1.PodSucceeded, false, ""))
	putPod(t, ctx, admin, pod("kube-proxy-w2", "w2", corev1.PodPending, false, "ImagePullBackOff"))
	waitFor("node w1 is not Ready (KubeletNotReady: container runtime network not ready")
	waitFor("pod kube-system/kube-proxy-w1 is Pending (ContainerCreating)")
	if strings.Contains(rep.last(), "w2") || strings.Contains(rep.last(), "job-done") {
		t.Errorf("the report names a pod it should ignore: %q", rep.last())
	}

	setNodeReady(t, ctx, admin, "w1", true)
	waitFor("pod kube-system/kube-proxy-w1 is Pending", "node w1")
	putPod(t, ctx, admin, pod("kube-proxy-w1", "w1", corev1.PodRunning, false, ""))
	waitFor("pod kube-system/kube-proxy-w1 is running but not ready", "node w1")
	putPod(t, ctx, admin, pod("kube-proxy-w1", "w1", corev1.PodRunning, true, ""))
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("apply still waiting; last report %q", rep.last())
	}
	if planned, err := s.Plan(ctx, env); err != nil || len(planned) != 0 {
		t.Errorf("plan when ready: %q, %v", planned, err)
	}

	// A kubelet.conf of another node may not read w1. A restarting API
	// server refuses everyone until its authorizer has synced, so this is
	// waited for, and a clear error once RefusalGrace is up.
	other := t.TempDir()
	kubeletConf(t, c, other, "w2")
	env.Root = other
	planned, err = s.Plan(ctx, env)
	if err != nil || len(planned) != 1 || !strings.Contains(string(planned[0]), "the API server refuses the node's credentials") {
		t.Errorf("plan with w2's credentials for w1: %q, %v", planned, err)
	}
	started := time.Now()
	_, err = s.Apply(ctx, env)
	if err == nil || !strings.Contains(err.Error(), "the API server has refused the node's credentials for ") {
		t.Errorf("apply with w2's credentials for w1: %v", err)
	}
	if took := time.Since(started); took < s.RefusalGrace {
		t.Errorf("apply failed after %s, before its grace of %s", took, s.RefusalGrace)
	}
}

// TestControlPlaneUsesAdminConf: an init node reads the API through
// admin.conf; its Plan is empty once the node and its static pods are up.
func TestControlPlaneUsesAdminConf(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin := kubernetes.NewForConfigOrDie(c.REST)
	root := t.TempDir()
	data, err := os.ReadFile(c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "etc/kubernetes"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc/kubernetes/admin.conf"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	env := &stage.Env{Root: root, NetNS: netns.None(), Config: config(t, machineconfig.RoleInit, "cp1"), Log: slog.New(slog.DiscardHandler)}
	if _, err := admin.CoreV1().ServiceAccounts(Namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "cp1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	setNodeReady(t, ctx, admin, "cp1", true)
	putPod(t, ctx, admin, pod("kube-apiserver-cp1", "cp1", corev1.PodRunning, false, ""))
	if planned, err := fast().Plan(ctx, env); err != nil || fmt.Sprint(planned) != "[not ready yet: pod kube-system/kube-apiserver-cp1 is running but not ready]" {
		t.Errorf("plan: %q, %v", planned, err)
	}
	putPod(t, ctx, admin, pod("kube-apiserver-cp1", "cp1", corev1.PodRunning, true, ""))
	if changes, err := fast().Apply(ctx, env); err != nil || len(changes) != 0 {
		t.Errorf("apply when ready: %q, %v", changes, err)
	}
}

// TestUnreachableAPIIsAReasonToWaitUntilTheLimit: nothing listens where
// kubelet.conf points; Plan lists that, and Apply gives up when its
// context ends, saying what it waited for.
func TestUnreachableAPIIsAReasonToWaitUntilTheLimit(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // a port nothing listens on
	root := t.TempDir()
	writeKubeconfig(t, filepath.Join(root, nodepath.KubeletConf), "https://"+addr, nil, &clientcmdapi.AuthInfo{Token: "not-a-real-token"})
	env := &stage.Env{Root: root, NetNS: netns.None(), Config: config(t, machineconfig.RoleWorker, "w1"), Log: slog.New(slog.DiscardHandler)}
	s := fast()
	planned, err := s.Plan(context.Background(), env)
	if err != nil || len(planned) != 1 || !strings.Contains(string(planned[0]), "the API server cannot be reached") {
		t.Errorf("plan: %q, %v", planned, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, err = s.Apply(ctx, env)
	if err == nil || !strings.Contains(err.Error(), "node w1 not ready after") || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("apply: %v", err)
	}
	if err != nil && strings.Contains(err.Error(), "not-a-real-token") {
		t.Error("the error quotes the credentials")
	}

	env.Root = t.TempDir()
	if _, err := s.Plan(context.Background(), env); err == nil || !strings.Contains(err.Error(), "the node's credentials /etc/kubernetes/kubelet.conf") {
		t.Errorf("plan without kubelet.conf: %v", err)
	}
}
