package fromsource

import (
	"context"
	"os/exec"
	"strings"
	"testing"

	"kubeboot.dev/kubeboot/image/fetch"
)

var kubeadmList = []string{"registry.k8s.io/kube-apiserver:v1.37.2", "registry.k8s.io/kube-controller-manager:v1.37.2",
	"registry.k8s.io/kube-scheduler:v1.37.2", "registry.k8s.io/kube-proxy:v1.37.2", "registry.k8s.io/coredns/coredns:v1.14.6",
	"registry.k8s.io/pause:3.10.2", "registry.k8s.io/etcd:3.7.0-0"}

func TestCompareImageSets(t *testing.T) {
	if err := compareImageSets("s.yaml", kubeadmList, kubeadmList); err != nil {
		t.Fatal(err)
	}
	spec := append([]string{"registry.k8s.io/pause:3.10"}, kubeadmList[:5]...)
	err := compareImageSets("s.yaml", spec, kubeadmList)
	if err == nil {
		t.Fatal("a differing set was accepted")
	}
	for _, want := range []string{"kubeadm needs registry.k8s.io/pause:3.10.2", "kubeadm needs registry.k8s.io/etcd:3.7.0-0", "lists registry.k8s.io/pause:3.10 but kubeadm does not use it"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}

func TestImageTagsAndRecipes(t *testing.T) {
	for n, want := range map[string]string{"etcd": "3.7.0-0", "coredns": "v1.14.6", "pause": "3.10.2"} {
		if got, err := imageTag(kubeadmList, n); err != nil || got != want {
			t.Errorf("imageTag %s = %q, %v", n, got, err)
		}
	}
	if _, err := imageTag(kubeadmList, "nope"); err == nil {
		t.Error("missing image not reported")
	}
	for _, ref := range kubeadmList {
		r, ok := RecipeFor(ref)
		if !ok || len(r.Entrypoint) == 0 || len(r.VersionArgs) == 0 {
			t.Errorf("no usable recipe for %s", ref)
		}
	}
}

// TestKubernetesGoMod reads k8s.io/kubernetes's go.mod through the Go
// module proxy (which CI reaches) for the default and an older minor.
func TestKubernetesGoMod(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go not on PATH")
	}
	c, err := fetch.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b := &Builder{Cache: c}
	for version, must := range map[string][]string{
		"v1.37.2":  {"default=go1.26", "k8s.io/api => k8s.io/api v0.37.2", "k8s.io/streaming => k8s.io/streaming v0.37.2"},
		"v1.31.14": {"default=go1.22", "k8s.io/api => k8s.io/api v0.31.14", "k8s.io/kubelet => k8s.io/kubelet v0.31.14"},
	} {
		reps, godebug, err := b.kubernetesGoMod(context.Background(), version)
		if err != nil {
			t.Fatalf("%s: %v", version, err)
		}
		reps = append(reps, godebug)
		joined := strings.Join(reps, "\n")
		for _, m := range must {
			if !strings.Contains(joined, m) {
				t.Errorf("%s: missing %q in\n%s", version, m, joined)
			}
		}
		if strings.Contains(joined, "sample-controller") || strings.Contains(joined, "sample-cli-plugin") {
			t.Errorf("%s: unrequired sample modules replaced:\n%s", version, joined)
		}
	}
}

func TestDropImports(t *testing.T) {
	src := "package main\n\nimport (\n\t\"fmt\"\n\t_ \"example.com/a\"\n\t_ \"example.com/b\"\n)\n"
	got, err := dropImports([]byte(src), []string{"example.com/a"})
	if err != nil || string(got) != "package main\n\nimport (\n\t\"fmt\"\n\t_ \"example.com/b\"\n)\n" {
		t.Errorf("dropImports = %q, %v", got, err)
	}
	if _, err := dropImports([]byte(src), []string{"example.com/c"}); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("a missing import was not reported: %v", err)
	}
	if _, err := dropImports([]byte(src+"\t_ \"example.com/a\"\n"), []string{"example.com/a"}); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("a doubled import was not reported: %v", err)
	}
}
