package testcluster

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// TestControlPlane starts etcd, kube-apiserver and the controller manager,
// uses the admin identity through both the rest.Config and the kubeconfig,
// checks a minted non-admin identity is authenticated but not authorized,
// lets the controller manager create a namespace's default service
// account, then grows etcd to two members and takes one away again.
func TestControlPlane(t *testing.T) {
	c := Start(t, Options{ControllerManager: true, PodSubnet: "10.244.0.0/16"})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cs := kubernetes.NewForConfigOrDie(c.REST)
	ns, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "testcluster"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fromFile, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kubernetes.NewForConfigOrDie(fromFile).CoreV1().Namespaces().Get(ctx, ns.Name, metav1.GetOptions{}); err != nil {
		t.Errorf("admin kubeconfig %s: %v", c.Kubeconfig, err)
	}
	_, nobody := c.Identity(t, "nobody")
	if _, err := kubernetes.NewForConfigOrDie(nobody).CoreV1().Nodes().List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("an identity without RBAC listed nodes: %v", err)
	}
	for {
		if _, err := cs.CoreV1().ServiceAccounts(ns.Name).Get(ctx, "default", metav1.GetOptions{}); err == nil {
			break
		} else if ctx.Err() != nil {
			t.Fatalf("the controller manager made no default service account: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	second := c.AddEtcdMember(t, "etcd1")
	list := c.Etcdctl(t, nil, "member", "list")
	if strings.Count(list, "started") != 2 || !strings.Contains(list, second.PeerURL) {
		t.Fatalf("member list after adding %s:\n%s", second.Name, list)
	}
	third := c.AddEtcdMember(t, "etcd2")
	// The third member's node dies; two of three keep the quorum, so it
	// can be removed by its id, as a rebuilt node's stale member.
	c.StopEtcdMember(t, third)
	c.Etcdctl(t, c.Etcd[:2], "member", "remove", memberID(t, c.Etcdctl(t, c.Etcd[:2], "member", "list"), third.Name))
	c.MemberRemoved(third)
	if list := c.Etcdctl(t, c.Etcd[:2], "member", "list"); strings.Count(list, "started") != 2 || strings.Contains(list, third.Name) {
		t.Errorf("member list after removing %s:\n%s", third.Name, list)
	}
	if _, err := cs.CoreV1().Namespaces().Get(ctx, ns.Name, metav1.GetOptions{}); err != nil {
		t.Errorf("API after the member change: %v", err)
	}
}

// memberID finds a member's hex id in `etcdctl member list` output.
func memberID(t *testing.T, list, name string) string {
	t.Helper()
	for _, line := range strings.Split(list, "\n") {
		if strings.Contains(line, ", "+name+", ") {
			id, _, _ := strings.Cut(line, ",")
			return id
		}
	}
	t.Fatalf("no member %s in:\n%s", name, list)
	return ""
}

// TestTwoMembersLoseQuorum records etcd's rule the rebuild logic has to
// live with: of two members, one stopped, the other cannot remove it (no
// quorum), and the API server cannot write either.
func TestTwoMembersLoseQuorum(t *testing.T) {
	c := Start(t, Options{})
	second := c.AddEtcdMember(t, "etcd1")
	id := memberID(t, c.Etcdctl(t, nil, "member", "list"), second.Name)
	c.StopEtcdMember(t, second)
	args := []string{"--command-timeout=5s", "member", "remove", id}
	out, err := c.TryEtcdctl(c.Etcd[:1], args...)
	if err == nil {
		t.Fatalf("etcdctl member remove without quorum succeeded:\n%s", out)
	}
	t.Logf("member remove with 1 of 2 members: %v", err)
}
