package podnetwork

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"kubeboot.dev/kubeboot/bootstrapd/kubeapi"
	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/internal/testcluster"
	"kubeboot.dev/kubeboot/nodepath"
)

// TestStageAgainstAPIServer runs the stage against a real etcd and
// kube-apiserver: every object is created, a second apply changes
// nothing, the ConfigMap holds the config's podSubnet and the DaemonSet
// the baked image; switching to vxlan updates exactly the ConfigMap.
func TestStageAgainstAPIServer(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	root := t.TempDir()
	cfg := loadConfig(t, "controller.yaml")
	env := &stage.Env{Root: root, Config: cfg, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	s := New()
	index := filepath.Join(root, nodepath.ImagesIndex)
	if err := os.MkdirAll(filepath.Dir(index), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(index, []byte(testImage+" sha256:00 flannel_v0.28.10.tar\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// No admin.conf yet: Plan lists every object, Apply waits for kubeadm.
	planned, err := s.Plan(ctx, env)
	if err != nil || len(planned) != 6 {
		t.Fatalf("Plan before kubeadm init = %q, %v; want 6 creations", planned, err)
	}
	if _, err := s.Apply(ctx, env); !stage.IsTemporary(err) {
		t.Fatalf("Apply before kubeadm init: want a temporary error, got %v", err)
	}
	admin := filepath.Join(root, nodepath.AdminConf)
	if err := os.MkdirAll(filepath.Dir(admin), 0o700); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(admin, data, 0o600); err != nil {
		t.Fatal(err)
	}

	want := []stage.Change{"create Namespace kube-flannel", "create ClusterRole flannel", "create ClusterRoleBinding flannel",
		"create ServiceAccount kube-flannel/flannel", "create ConfigMap kube-flannel/kube-flannel-cfg", "create DaemonSet kube-flannel/kube-flannel-ds"}
	if planned, err = s.Plan(ctx, env); err != nil || !slices.Equal(planned, want) {
		t.Fatalf("Plan = %q, %v; want %q", planned, err, want)
	}
	changes, err := s.Apply(ctx, env)
	if err != nil || !slices.Equal(changes, want) {
		t.Fatalf("first Apply = %q, %v; want %q", changes, err, want)
	}
	for _, what := range []string{"Plan", "Apply"} {
		f := s.Plan
		if what == "Apply" {
			f = s.Apply
		}
		if again, err := f(ctx, env); err != nil || len(again) != 0 {
			t.Errorf("%s after the first apply = %q, %v; want nothing", what, again, err)
		}
	}

	cs := kubernetes.NewForConfigOrDie(c.REST)
	cm, err := cs.CoreV1().ConfigMaps("kube-flannel").Get(ctx, "kube-flannel-cfg", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if nc := cm.Data["net-conf.json"]; !strings.Contains(nc, `"Network": "172.17.0.0/16"`) || !strings.Contains(nc, `"Type": "host-gw"`) {
		t.Errorf("net-conf.json on the cluster:\n%s", nc)
	}
	ds, err := cs.AppsV1().DaemonSets("kube-flannel").Get(ctx, "kube-flannel-ds", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ctr := range append(ds.Spec.Template.Spec.InitContainers, ds.Spec.Template.Spec.Containers...) {
		if ctr.Image != testImage || ctr.ImagePullPolicy != "Never" {
			t.Errorf("container %s: image %s, pull policy %s", ctr.Name, ctr.Image, ctr.ImagePullPolicy)
		}
	}
	for _, f := range ds.ManagedFields {
		if f.Manager != kubeapi.FieldManager || f.Operation != metav1.ManagedFieldsOperationApply {
			t.Errorf("DaemonSet field manager %s (%s), want %s apply", f.Manager, f.Operation, kubeapi.FieldManager)
		}
	}

	cfg.Kubernetes.PodNetwork.Backend = "vxlan"
	update := []stage.Change{"update ConfigMap kube-flannel/kube-flannel-cfg"}
	if planned, err := s.Plan(ctx, env); err != nil || !slices.Equal(planned, update) {
		t.Errorf("Plan after switching to vxlan = %q, %v; want %q", planned, err, update)
	}
	if changes, err := s.Apply(ctx, env); err != nil || !slices.Equal(changes, update) {
		t.Errorf("Apply after switching to vxlan = %q, %v; want %q", changes, err, update)
	}
	cm, err = cs.CoreV1().ConfigMaps("kube-flannel").Get(ctx, "kube-flannel-cfg", metav1.GetOptions{})
	if err != nil || !strings.Contains(cm.Data["net-conf.json"], `"Type": "vxlan"`) {
		t.Errorf("net-conf.json after the update: %v\n%s", err, cm.Data["net-conf.json"])
	}
}
