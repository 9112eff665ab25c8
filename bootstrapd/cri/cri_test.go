package cri_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"kubeboot.dev/kubeboot/bootstrapd/cri"
	"kubeboot.dev/kubeboot/bootstrapd/images"
	"kubeboot.dev/kubeboot/image/privatecontainerd"
	"kubeboot.dev/kubeboot/internal/containerdtest"
)

// TestRemovePods runs our containerd with the CRI plugin and runc, starts
// two pod sandboxes on the host network from the pinned pause image (as
// the kubelet starts static pods), and removes them: none is left, and a
// second call has nothing to do.
func TestRemovePods(t *testing.T) {
	bins := containerdtest.Binaries(t, "containerd", "containerd-shim-runc-v2", "runc")
	entries, archives := containerdtest.LockedImages(t)
	pause, err := images.Find(entries, "registry.k8s.io/pause")
	if err != nil {
		t.Fatal(err)
	}
	d := containerdtest.Start(t, privatecontainerd.Options{
		Binaries: bins, Root: filepath.Join(t.TempDir(), "root"), CRI: true,
		// This machine's root cannot lower an oom_score_adj (no
		// CAP_SYS_RESOURCE), which runc does for a sandbox unless told to
		// keep containerd's.
		Config: fmt.Sprintf("\n[plugins.\"io.containerd.cri.v1.images\".pinned_images]\n  sandbox = %q\n[plugins.\"io.containerd.cri.v1.runtime\"]\n  restrict_oom_score_adj = true\n", pause.Ref),
	})
	c, err := images.Connect(context.Background(), d.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i, e := range entries {
		if e.Ref == pause.Ref {
			if err := images.Import(context.Background(), c, e, archives[i]); err != nil {
				t.Fatal(err)
			}
		}
	}

	conn, err := cri.Dial(d.Socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	// Shims outlive containerd: whatever this test leaves is removed
	// before containerd stops (cleanups run last first).
	t.Cleanup(func() { cri.RemovePods(context.Background(), conn, time.Minute) })
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	ctx := context.Background()
	for _, name := range []string{"etcd-test", "kube-apiserver-test"} {
		_, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{
			Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "kube-system", Uid: name + "-uid"},
			LogDirectory: t.TempDir(),
			Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE},
			}},
		}})
		if err != nil {
			t.Fatalf("run pod sandbox %s: %v\n%s", name, err, d.LogTail())
		}
	}
	count := func() int {
		list, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return len(list.GetItems())
	}
	if n := count(); n != 2 {
		t.Fatalf("%d pod sandboxes before, want 2", n)
	}
	if n, err := cri.RemovePods(ctx, conn, time.Minute); err != nil || n != 2 {
		t.Fatalf("RemovePods = %d, %v; want 2", n, err)
	}
	if n := count(); n != 0 {
		t.Errorf("%d pod sandboxes left", n)
	}
	if n, err := cri.RemovePods(ctx, conn, time.Minute); err != nil || n != 0 {
		t.Errorf("RemovePods again = %d, %v; want 0", n, err)
	}
}
