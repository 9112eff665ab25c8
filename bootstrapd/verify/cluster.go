package verify

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"kubeboot.dev/kubeboot/bootstrapd/kubeapi"
	"kubeboot.dev/kubeboot/bootstrapd/podnetwork"
	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/bootstrapd/waitready"
)

// maxObjects bounds one list (one page; more is said to be left out).
const maxObjects = 1000

// apiFacts is what the node's credentials let it read of the cluster.
type apiFacts struct {
	credentials string
	self        *corev1.Node
	selfErr     error
	// nodes and pods are all of them when the credentials may list them
	// (admin.conf), else this node's (a worker's kubelet.conf: the Node
	// authorizer lets a node read only its own Node and pods).
	nodes       listing[corev1.Node]
	allNodes    bool
	podList     listing[corev1.Pod]
	allPods     bool
	services    listing[corev1.Service]
	daemonSets  listing[appsv1.DaemonSet]
	deployments listing[appsv1.Deployment]
	notAllowed  []string // what the credentials may not read
}

// listing is one bounded list and how many items were left out.
type listing[T any] struct {
	items []T
	more  int64
}

func listOf[T any](items []T, meta metav1.ListMeta) listing[T] {
	l := listing[T]{items: items}
	if meta.RemainingItemCount != nil {
		l.more = *meta.RemainingItemCount
	} else if meta.Continue != "" {
		l.more = -1 // an unknown number
	}
	return l
}

// readAPI reads the cluster with the node's own credentials.
func readAPI(ctx context.Context, env *stage.Env, timeout time.Duration) (*apiFacts, error) {
	f := &apiFacts{credentials: waitready.Credentials(env.Config)}
	rc, err := kubeapi.Config(env, f.credentials, "verify")
	if err != nil {
		return nil, err
	}
	rc.Timeout = timeout
	c, err := kubeapi.NewClient(rc)
	if err != nil {
		return nil, err
	}
	name := env.Config.Kubernetes.NodeName
	list := func(gvr schema.GroupVersionResource, opts metav1.ListOptions, into any) error {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		opts.Limit = maxObjects
		return c.List(ctx, gvr, "", opts, into)
	}

	self := &corev1.Node{}
	gctx, cancel := context.WithTimeout(ctx, timeout)
	f.selfErr = c.Get(gctx, kubeapi.Nodes, "", name, self)
	cancel()
	switch {
	case f.selfErr == nil:
		f.self = self
	case !apierrors.IsNotFound(f.selfErr):
		return nil, f.selfErr // the API does not answer, or refuses the credentials
	}

	nodes := &corev1.NodeList{}
	switch err := list(kubeapi.Nodes, metav1.ListOptions{}, nodes); {
	case err == nil:
		f.nodes, f.allNodes = listOf(nodes.Items, nodes.ListMeta), true
	case apierrors.IsForbidden(err):
		f.notAllowed = append(f.notAllowed, "list nodes")
		if f.self != nil {
			f.nodes = listing[corev1.Node]{items: []corev1.Node{*f.self}}
		}
	default:
		return nil, fmt.Errorf("list nodes: %w", err)
	}

	pods := &corev1.PodList{}
	switch err := list(kubeapi.Pods, metav1.ListOptions{}, pods); {
	case err == nil:
		f.podList, f.allPods = listOf(pods.Items, pods.ListMeta), true
	case apierrors.IsForbidden(err):
		f.notAllowed = append(f.notAllowed, "list pods of other nodes")
		pods = &corev1.PodList{}
		if err := list(kubeapi.Pods, metav1.ListOptions{FieldSelector: "spec.nodeName=" + name}, pods); err != nil {
			return nil, fmt.Errorf("list the pods of node %s: %w", name, err)
		}
		f.podList = listOf(pods.Items, pods.ListMeta)
	default:
		return nil, fmt.Errorf("list pods: %w", err)
	}
	if !f.allPods {
		return f, nil
	}

	// kubectl get all -A: the Services and workloads too.
	svcs := &corev1.ServiceList{}
	if err := list(kubeapi.Services, metav1.ListOptions{}, svcs); err != nil {
		return nil, fmt.Errorf("list services: %w", err)
	}
	f.services = listOf(svcs.Items, svcs.ListMeta)
	ds := &appsv1.DaemonSetList{}
	if err := list(kubeapi.DaemonSets, metav1.ListOptions{}, ds); err != nil {
		return nil, fmt.Errorf("list daemonsets: %w", err)
	}
	f.daemonSets = listOf(ds.Items, ds.ListMeta)
	deps := &appsv1.DeploymentList{}
	if err := list(kubeapi.Deployments, metav1.ListOptions{}, deps); err != nil {
		return nil, fmt.Errorf("list deployments: %w", err)
	}
	f.deployments = listOf(deps.Items, deps.ListMeta)
	return f, nil
}

// systemPods are what runs on every node: kube-proxy's DaemonSet
// (kubeadm's addon) and the pod network's DaemonSets, read from the
// manifests the podnetwork stage applies (with the node image's flannel
// image); and the namespaces they are in, whose pods on this node must run.
func (n *node) systemPods() (daemonSets []types.NamespacedName, namespaces []string, err error) {
	daemonSets = []types.NamespacedName{{Namespace: waitready.Namespace, Name: "kube-proxy"}}
	namespaces = []string{waitready.Namespace}
	image, err := podnetwork.Image(n.env.Root)
	if err != nil {
		return daemonSets, namespaces, err
	}
	objs, err := podnetwork.Render(n.o.Config, image)
	if err != nil {
		return daemonSets, namespaces, err
	}
	for _, o := range objs {
		if o.GetKind() != "DaemonSet" {
			continue
		}
		daemonSets = append(daemonSets, types.NamespacedName{Namespace: o.GetNamespace(), Name: o.GetName()})
		if !slices.Contains(namespaces, o.GetNamespace()) {
			namespaces = append(namespaces, o.GetNamespace())
		}
	}
	return daemonSets, namespaces, nil
}

// ownedBy reports whether p is a pod of the DaemonSet ds.
func ownedBy(p *corev1.Pod, ds types.NamespacedName) bool {
	if p.Namespace != ds.Namespace {
		return false
	}
	for _, o := range p.OwnerReferences {
		if o.Kind == "DaemonSet" && o.Name == ds.Name {
			return true
		}
	}
	return false
}

// controlPlanePods are the static pods kubeadm runs on a control plane,
// named <component>-<node>.
var controlPlanePods = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}

func (n *node) cluster(context.Context) Section {
	s := Section{Name: "cluster", Title: "Nodes and pods (kubectl get nodes; kubectl get all -A)"}
	cfg := n.o.Config
	node := cfg.Kubernetes.NodeName
	access := "the API server answers the node's credentials"
	if n.apiErr != nil {
		s.fail(access, waitready.Credentials(cfg)+" accepted by "+cfg.Kubernetes.ControlPlaneEndpoint, n.apiErr.Error())
		return s
	}
	a := n.api
	found := a.credentials + " accepted"
	if len(a.notAllowed) > 0 {
		found += "; it may not " + strings.Join(a.notAllowed, " or ") + " (the Node authorizer), so only this node is shown"
	}
	s.pass(access, a.credentials+" accepted by "+cfg.Kubernetes.ControlPlaneEndpoint, found)

	s.found("NAME  STATUS  ROLES  VERSION  INTERNAL-IP  POD-CIDR")
	for _, nd := range a.nodes.items {
		ready, _ := waitready.NodeReady(&nd)
		s.found("node/%s  %s  %s  %s  %s  %s", nd.Name, readyWord(ready), roles(&nd), nd.Status.NodeInfo.KubeletVersion, internalIP(&nd), orNone(strings.Join(podCIDRs(&nd), ",")))
	}
	more(&s, "nodes", a.nodes.more)
	for _, p := range a.podList.items {
		s.found("pod/%s/%s  %s  %s  restarts %d  ip %s  node %s", p.Namespace, p.Name, podReady(&p), phase(&p), restarts(&p), orNone(p.Status.PodIP), orNone(p.Spec.NodeName))
	}
	more(&s, "pods", a.podList.more)
	for _, svc := range a.services.items {
		s.found("service/%s/%s  %s  %s  %s", svc.Namespace, svc.Name, svc.Spec.Type, orNone(svc.Spec.ClusterIP), servicePorts(&svc))
	}
	more(&s, "services", a.services.more)
	for _, ds := range a.daemonSets.items {
		s.found("daemonset.apps/%s/%s  desired %d  ready %d  available %d", ds.Namespace, ds.Name, ds.Status.DesiredNumberScheduled, ds.Status.NumberReady, ds.Status.NumberAvailable)
	}
	more(&s, "daemonsets", a.daemonSets.more)
	for _, d := range a.deployments.items {
		s.found("deployment.apps/%s/%s  ready %d/%d  available %d", d.Namespace, d.Name, d.Status.ReadyReplicas, replicas(&d), d.Status.AvailableReplicas)
	}
	more(&s, "deployments", a.deployments.more)

	// This node: Ready, its DaemonSets' pods and (on control planes) its
	// static pods there, every system pod on it running (wait-ready's rules).
	daemonSets, namespaces, err := n.systemPods()
	if err != nil {
		s.fail("the pod network's DaemonSets", "known from its manifests", err.Error())
	}
	switch {
	case a.self == nil:
		s.fail("node "+node+" Ready", "Ready", "not registered: "+a.selfErr.Error())
	default:
		ready, why := waitready.NodeReady(a.self)
		s.check("node "+node+" Ready", ready, "Ready", orWord(why, "Ready"))
	}
	var mine []corev1.Pod
	for _, p := range a.podList.items {
		if p.Spec.NodeName == node && slices.Contains(namespaces, p.Namespace) {
			mine = append(mine, p)
		}
	}
	for _, ds := range daemonSets {
		name := fmt.Sprintf("a pod of daemonset %s on this node", ds)
		if i := slices.IndexFunc(mine, func(p corev1.Pod) bool { return ownedBy(&p, ds) }); i >= 0 {
			s.pass(name, "present", mine[i].Name)
		} else {
			s.fail(name, "present", "absent")
		}
	}
	if cfg.Role.IsControlPlane() {
		for _, c := range controlPlanePods {
			name := fmt.Sprintf("static pod %s/%s-%s", waitready.Namespace, c, node)
			if slices.ContainsFunc(mine, func(p corev1.Pod) bool { return p.Namespace == waitready.Namespace && p.Name == c+"-"+node }) {
				s.pass(name, "present", "present")
			} else {
				s.fail(name, "present", "absent")
			}
		}
	}
	for _, p := range mine {
		why := waitready.PodWaiting(&p)
		s.check(fmt.Sprintf("pod %s/%s running and ready", p.Namespace, p.Name), why == "", "Running, ready", orWord(why, "Running, ready"))
	}

	// On a control plane, the cluster as the reference listed it.
	if a.allNodes {
		for _, nd := range a.nodes.items {
			if nd.Name == node {
				continue
			}
			ready, why := waitready.NodeReady(&nd)
			s.check("node "+nd.Name+" Ready", ready, "Ready", orWord(why, "Ready"))
		}
	}
	for _, ds := range a.daemonSets.items {
		if !slices.Contains(namespaces, ds.Namespace) {
			continue
		}
		st := ds.Status
		s.check(fmt.Sprintf("daemonset %s/%s ready on every node it runs on", ds.Namespace, ds.Name),
			st.DesiredNumberScheduled > 0 && st.NumberReady == st.DesiredNumberScheduled && st.UpdatedNumberScheduled == st.DesiredNumberScheduled,
			fmt.Sprintf("ready = desired (%d)", st.DesiredNumberScheduled), fmt.Sprintf("%d ready, %d up to date", st.NumberReady, st.UpdatedNumberScheduled))
	}
	for _, d := range a.deployments.items {
		if !slices.Contains(namespaces, d.Namespace) {
			continue
		}
		s.check(fmt.Sprintf("deployment %s/%s available", d.Namespace, d.Name), d.Status.AvailableReplicas >= replicas(&d) && replicas(&d) > 0,
			fmt.Sprintf("%d available", replicas(&d)), fmt.Sprintf("%d available, %d ready", d.Status.AvailableReplicas, d.Status.ReadyReplicas))
	}
	return s
}

func more(s *Section, what string, n int64) {
	switch {
	case n > 0:
		s.found("... %d more %s not listed", n, what)
	case n < 0:
		s.found("... more %s not listed", what)
	}
}

func readyWord(ready bool) string {
	if ready {
		return "Ready"
	}
	return "NotReady"
}

func orWord(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// roles are the node-role.kubernetes.io/ labels, as kubectl shows them.
func roles(nd *corev1.Node) string {
	var out []string
	for k := range nd.Labels {
		if r, ok := strings.CutPrefix(k, "node-role.kubernetes.io/"); ok && r != "" {
			out = append(out, r)
		}
	}
	slices.Sort(out)
	if len(out) == 0 {
		return "<none>"
	}
	return strings.Join(out, ",")
}

func internalIP(nd *corev1.Node) string {
	for _, a := range nd.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address
		}
	}
	return "(none)"
}

func podReady(p *corev1.Pod) string {
	ready := 0
	for _, c := range p.Status.ContainerStatuses {
		if c.Ready {
			ready++
		}
	}
	return fmt.Sprintf("%d/%d", ready, len(p.Spec.Containers))
}

func phase(p *corev1.Pod) string {
	if p.DeletionTimestamp != nil {
		return "Terminating"
	}
	return orWord(string(p.Status.Phase), "Unknown")
}

func restarts(p *corev1.Pod) int32 {
	var n int32
	for _, c := range p.Status.ContainerStatuses {
		n += c.RestartCount
	}
	return n
}

func servicePorts(svc *corev1.Service) string {
	var out []string
	for _, p := range svc.Spec.Ports {
		out = append(out, fmt.Sprintf("%d/%s", p.Port, p.Protocol))
	}
	return strings.Join(out, ",")
}

func replicas(d *appsv1.Deployment) int32 {
	if d.Spec.Replicas == nil {
		return 1
	}
	return *d.Spec.Replicas
}
