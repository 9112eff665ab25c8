package verify

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"kubeboot.dev/kubeboot/bootstrapd/podnetwork"
	"kubeboot.dev/kubeboot/bootstrapd/source"
	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/internal/cachetest"
	"kubeboot.dev/kubeboot/internal/testcluster"
	"kubeboot.dev/kubeboot/machineconfig"
	"kubeboot.dev/kubeboot/nodepath"
)

// nodeObjects creates, through the API, what a kubeadm cluster holds for
// the node: its Node (Ready, with a pod CIDR) and the system pods bound to
// it (kube-proxy's and flannel's, the static control-plane pods on control
// planes, a DNS pod), with the status the kubelet would report. The
// DaemonSets must exist (clusterObjects).
func nodeObjects(t *testing.T, cs kubernetes.Interface, node, podCIDR, nodeIP string, controlPlane bool) {
	t.Helper()
	ctx := context.Background()
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// The controller manager would make it; pods need it to be admitted.
	if _, err := cs.CoreV1().ServiceAccounts("kube-system").Get(ctx, "default", metav1.GetOptions{}); err != nil {
		must(cs.CoreV1().ServiceAccounts("kube-system").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}))
	}
	labels := map[string]string{"kubernetes.io/hostname": node}
	if controlPlane {
		labels["node-role.kubernetes.io/control-plane"] = ""
	}
	nd, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: node, Labels: labels},
		Spec:       corev1.NodeSpec{PodCIDR: podCIDR, PodCIDRs: []string{podCIDR}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nd.Status = corev1.NodeStatus{
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			Message: "kubelet is posting ready status", LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}},
		Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: nodeIP}, {Type: corev1.NodeHostName, Address: node}},
		NodeInfo:  corev1.NodeSystemInfo{KubeletVersion: "v1.37.2"},
	}
	must(cs.CoreV1().Nodes().UpdateStatus(ctx, nd, metav1.UpdateOptions{}))

	pod := func(ns, name, ip string, hostNetwork bool, labels map[string]string, owner string) {
		t.Helper()
		meta := metav1.ObjectMeta{Name: name, Labels: labels}
		spec := corev1.PodSpec{NodeName: node, HostNetwork: hostNetwork,
			Containers: []corev1.Container{{Name: "c", Image: "registry.k8s.io/pause:3.10.2"}}}
		if owner != "" {
			ds, err := cs.AppsV1().DaemonSets(ns).Get(ctx, owner, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			meta.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "DaemonSet", Name: owner, UID: ds.UID, Controller: ptr.To(true)}}
			spec.ServiceAccountName = ds.Spec.Template.Spec.ServiceAccountName
		}
		p, err := cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: meta, Spec: spec}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip,
			Conditions:        []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "c", Ready: true, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}}
		must(cs.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}))
	}
	suffix := strings.ToLower(strings.ReplaceAll(node, ".", ""))[:5]
	pod("kube-system", "kube-proxy-"+suffix, nodeIP, true, map[string]string{"k8s-app": "kube-proxy"}, "kube-proxy")
	pod("kube-flannel", "kube-flannel-ds-"+suffix, nodeIP, true, map[string]string{"app": "flannel"}, "kube-flannel-ds")
	if controlPlane {
		for _, c := range controlPlanePods {
			pod("kube-system", c+"-"+node, nodeIP, true, map[string]string{"component": c}, "")
		}
	}
	pod("kube-system", "coredns-"+suffix, dnsPodIP(podCIDR), false, map[string]string{"k8s-app": "kube-dns"}, "")

}

// clusterObjects creates, through the API, the kube-proxy DaemonSet, the
// coredns Deployment and the kube-dns Service with an endpoint per node's
// DNS pod (see nodeObjects), and, with the podnetwork stage run on the init
// node's root (its admin.conf, its image index), the pod network; with the
// status their controllers would report for nodes.
func clusterObjects(t *testing.T, cs kubernetes.Interface, initRoot string, initConfig *machineconfig.MachineConfig, nodes map[string]string) {
	t.Helper()
	ctx := context.Background()
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	count := int32(len(nodes))
	var endpoints []discoveryv1.Endpoint
	for node, podCIDR := range nodes {
		endpoints = append(endpoints, discoveryv1.Endpoint{Addresses: []string{dnsPodIP(podCIDR)}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}, NodeName: ptr.To(node)})
	}
	ds, err := cs.AppsV1().DaemonSets("kube-system").Create(ctx, &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-proxy"},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"k8s-app": "kube-proxy"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"k8s-app": "kube-proxy"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "kube-proxy", Image: "registry.k8s.io/kube-proxy:v1.37.2"}}}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ds.Status = appsv1.DaemonSetStatus{DesiredNumberScheduled: count, CurrentNumberScheduled: count, NumberReady: count, UpdatedNumberScheduled: count, NumberAvailable: count}
	must(cs.AppsV1().DaemonSets("kube-system").UpdateStatus(ctx, ds, metav1.UpdateOptions{}))

	env := &stage.Env{Root: initRoot, Config: initConfig, Log: slog.New(slog.DiscardHandler), Data: &stage.RunData{}}
	if _, err := podnetwork.New().Apply(ctx, env); err != nil {
		t.Fatal(err)
	}
	flannel, err := cs.AppsV1().DaemonSets("kube-flannel").Get(ctx, "kube-flannel-ds", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	flannel.Status = ds.Status
	must(cs.AppsV1().DaemonSets("kube-flannel").UpdateStatus(ctx, flannel, metav1.UpdateOptions{}))

	dep, err := cs.AppsV1().Deployments("kube-system").Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "coredns"},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To(count),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"k8s-app": "kube-dns"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"k8s-app": "kube-dns"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "coredns", Image: "registry.k8s.io/coredns/coredns:v1.14.6"}}}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dep.Status = appsv1.DeploymentStatus{Replicas: count, ReadyReplicas: count, AvailableReplicas: count, UpdatedReplicas: count}
	must(cs.AppsV1().Deployments("kube-system").UpdateStatus(ctx, dep, metav1.UpdateOptions{}))

	must(cs.CoreV1().Services("kube-system").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Labels: map[string]string{"k8s-app": "kube-dns"}},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.10", Selector: map[string]string{"k8s-app": "kube-dns"},
			Ports: []corev1.ServicePort{{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}, {Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP}}},
	}, metav1.CreateOptions{}))
	must(cs.DiscoveryV1().EndpointSlices("kube-system").Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "kube-dns-1", Labels: map[string]string{discoveryv1.LabelServiceName: "kube-dns"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   endpoints,
		Ports: []discoveryv1.EndpointPort{{Name: ptr.To("dns"), Port: ptr.To[int32](53), Protocol: ptr.To(corev1.ProtocolUDP)},
			{Name: ptr.To("dns-tcp"), Port: ptr.To[int32](53), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}, metav1.CreateOptions{}))
}

// dnsPodIP is the address nodeObjects gives the DNS pod of a node with
// this pod CIDR (a /24).
func dnsPodIP(podCIDR string) string { return strings.TrimSuffix(podCIDR, ".0/24") + ".2" }

// flannelImage is the pod network's image as the node image's index lists it.
const flannelImage = "ghcr.io/flannel-io/flannel:v0.28.10"

// writeIndex writes the node image's image index under root, one line
// "<ref> <digest> <file>" per entry.
func writeIndex(t *testing.T, root string, lines ...string) {
	t.Helper()
	p := filepath.Join(root, nodepath.ImagesIndex)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// controllerCluster makes the test cluster hold the seed's controller
// alone (clusterObjects, nodeObjects) and returns a root for it with its
// admin.conf and an image index listing the flannel image.
func controllerCluster(t *testing.T, c *testcluster.Cluster, res *source.Result) string {
	t.Helper()
	root := t.TempDir()
	writeIndex(t, root, flannelImage+" sha256:"+strings.Repeat("0", 64)+" flannel_v0.28.10.tar")
	installKubeconfig(t, c.Kubeconfig, root, "/etc/kubernetes/admin.conf")
	node := res.Config.Kubernetes.NodeName
	cs := clientset(c)
	clusterObjects(t, cs, root, res.Config, map[string]string{node: "172.17.0.0/24"})
	nodeObjects(t, cs, node, "172.17.0.0/24", "172.16.0.11", true)
	return root
}

// installKubeconfig copies a kubeconfig of the test cluster to path under
// root (admin.conf, kubelet.conf), as kubeadm leaves it on the node.
func installKubeconfig(t *testing.T, from, root, path string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(root, path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// apiInNamespace makes the test's API server reachable as
// https://127.0.0.1:6443 inside ns: a listener on that namespace's
// loopback whose connections are forwarded to the server on the test's
// own loopback. Traffic stays on the two loopback interfaces.
func apiInNamespace(t *testing.T, ns netns.NsHandle, server string) string {
	t.Helper()
	target := strings.TrimPrefix(server, "https://")
	var ln net.Listener
	env := &stage.Env{NetNS: ns}
	if err := env.InNetNS(func() (err error) {
		ln, err = net.Listen("tcp", "127.0.0.1:6443")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	testcluster.Forward(t, ln, target)
	return "https://127.0.0.1:6443"
}

// startKubeProxy runs the pinned kube-proxy in the node's namespace
// (ip netns exec) in mode ("iptables" or "nftables"), as the node's
// kube-proxy DaemonSet runs it, with the identity kubeadm gives it
// (system:kube-proxy), and stops it by its pid when the test ends.
func startKubeProxy(t *testing.T, c *testcluster.Cluster, ref *referenceNode, node, mode, clusterCIDR string) {
	t.Helper()
	bin := cachetest.File(t, "kube-proxy")
	if mode == "iptables" {
		if _, err := exec.LookPath("iptables"); err != nil {
			t.Skip("kube-proxy's iptables mode needs iptables (iptables-nft; scripts/setup-host.sh installs it)")
		}
	}
	dir := t.TempDir()
	kc, _ := c.Identity(t, "system:kube-proxy")
	cfg, err := clientcmd.LoadFromFile(kc)
	if err != nil {
		t.Fatal(err)
	}
	server := apiInNamespace(t, ref.ns, c.APIServer)
	for _, cl := range cfg.Clusters {
		cl.Server = server
	}
	kubeconfig := filepath.Join(dir, "kube-proxy.conf")
	if err := clientcmd.WriteToFile(*cfg, kubeconfig); err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(config, fmt.Appendf(nil, `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: %s
mode: %s
hostnameOverride: %s
clusterCIDR: %s
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack:
  maxPerCore: 0
  min: 0
`, kubeconfig, mode, node, clusterCIDR), 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "kube-proxy.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ref.name, bin, "--config", config)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		logFile.Close()
		if t.Failed() {
			data, _ := os.ReadFile(logPath)
			t.Logf("kube-proxy log:\n%s", tailText(string(data), 30))
		}
	})
}

func tailText(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// waitFor re-runs f until it returns a section whose checks named by
// prefixes all hold, or a minute passes; it returns the last section.
func waitFor(t *testing.T, f func() Section, prefixes ...string) Section {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		s := f()
		held := true
		for _, c := range s.Checks {
			for _, p := range prefixes {
				if strings.HasPrefix(c.Name, p) && !c.OK {
					held = false
				}
			}
		}
		if held || time.Now().After(deadline) {
			return s
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// clientset is an admin client of the test cluster that does not log the
// API server's warnings (static pod names hold dots, as kubeadm's do).
func clientset(c *testcluster.Cluster) kubernetes.Interface {
	rc := rest.CopyConfig(c.REST)
	rc.WarningHandler = rest.NoWarnings{}
	return kubernetes.NewForConfigOrDie(rc)
}

// TestClusterAsTheReference creates, through a real API server, a
// controller and a worker as kubeadm leaves them, and checks the cluster
// section with each node's own credentials: admin.conf on the controller
// lists every node and pod (kubectl get all -A), the worker's kubelet.conf
// what the Node authorizer lets it read. Then the worker goes NotReady and
// its kube-proxy stops being ready: both reports say so.
func TestClusterAsTheReference(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	cs := clientset(c)
	ctrl, _ := exampleConfig(t, "controller.yaml", nil)
	wrk, _ := exampleConfig(t, "worker.yaml", nil)
	cp, w := ctrl.Config.Kubernetes.NodeName, wrk.Config.Kubernetes.NodeName
	cpRoot, wRoot := t.TempDir(), t.TempDir()
	for _, root := range []string{cpRoot, wRoot} {
		writeIndex(t, root, flannelImage+" sha256:"+strings.Repeat("0", 64)+" flannel_v0.28.10.tar")
	}
	installKubeconfig(t, c.Kubeconfig, cpRoot, "/etc/kubernetes/admin.conf")
	clusterObjects(t, cs, cpRoot, ctrl.Config, map[string]string{cp: "172.17.0.0/24", w: "172.17.1.0/24"})
	nodeObjects(t, cs, cp, "172.17.0.0/24", "172.16.0.11", true)
	nodeObjects(t, cs, w, "172.17.1.0/24", "172.16.0.21", false)
	kubelet, _ := c.Identity(t, "system:node:"+w, "system:nodes")
	installKubeconfig(t, kubelet, wRoot, "/etc/kubernetes/kubelet.conf")
	ctx := context.Background()
	section := func(root string, res *source.Result) Section {
		t.Helper()
		n := prepare(Options{Root: root, Config: res.Config, Source: res.Source})
		n.api, n.apiErr = readAPI(ctx, n.env, n.o.Timeout)
		return n.cluster(ctx)
	}

	s := section(cpRoot, ctrl)
	logReport(t, s)
	allHold(t, s)
	for _, want := range []string{"static pod kube-system/kube-apiserver-" + cp, "a pod of daemonset kube-system/kube-proxy on this node",
		"a pod of daemonset kube-flannel/kube-flannel-ds on this node", "pod kube-flannel/kube-flannel-ds-contr running and ready",
		"node " + w + " Ready", "daemonset kube-system/kube-proxy", "daemonset kube-flannel/kube-flannel-ds", "deployment kube-system/coredns available"} {
		checkNamed(t, s, want)
	}
	found := strings.Join(s.Found, "\n")
	for _, want := range []string{"node/" + cp + "  Ready  control-plane  v1.37.2  172.16.0.11  172.17.0.0/24",
		"node/" + w + "  Ready  <none>", "pod/kube-system/coredns-worke  1/1  Running  restarts 0  ip 172.17.1.2  node " + w,
		"service/kube-system/kube-dns  ClusterIP  10.96.0.10  53/UDP,53/TCP", "daemonset.apps/kube-system/kube-proxy  desired 2  ready 2"} {
		if !strings.Contains(found, want) {
			t.Errorf("controller's listing lacks %q:\n%s", want, found)
		}
	}

	s = section(wRoot, wrk)
	logReport(t, s)
	allHold(t, s)
	if found := strings.Join(s.Found, "\n"); strings.Contains(found, cp) {
		t.Errorf("the worker's credentials read the controller's objects:\n%s", found)
	}

	// The worker goes NotReady; its kube-proxy is not ready.
	nd, err := cs.CoreV1().Nodes().Get(ctx, w, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nd.Status.Conditions[0].Status, nd.Status.Conditions[0].Reason, nd.Status.Conditions[0].Message = corev1.ConditionFalse, "KubeletNotReady", "container runtime network not ready"
	if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, nd, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	p, err := cs.CoreV1().Pods("kube-system").Get(ctx, "kube-proxy-worke", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Status.Conditions[0].Status = corev1.ConditionFalse
	p.Status.ContainerStatuses[0].Ready = false
	p.Status.ContainerStatuses[0].State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}
	if _, err := cs.CoreV1().Pods("kube-system").UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if c := checkNamed(t, section(cpRoot, ctrl), "node "+w+" Ready"); c.OK || c.Found != "KubeletNotReady: container runtime network not ready" {
		t.Errorf("controller on the NotReady worker: %+v", c)
	}
	s = section(wRoot, wrk)
	if c := checkNamed(t, s, "node "+w+" Ready"); c.OK {
		t.Errorf("worker NotReady: %+v", c)
	}
	if c := checkNamed(t, s, "pod kube-system/kube-proxy-worke running and ready"); c.OK || c.Found != "is running but not ready (CrashLoopBackOff)" {
		t.Errorf("worker's kube-proxy: %+v", c)
	}
}
