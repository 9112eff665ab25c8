package fromsource

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	"kubeboot.dev/kubeboot/image/lock"
)

// kubernetesBinaries are built from k8s.io/kubernetes/cmd/<name>.
var kubernetesBinaries = []string{"kubeadm", "kubelet", "kubectl", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy"}

var (
	stagingRE  = regexp.MustCompile(`^\s*(k8s\.io/[a-z0-9-]+)\s*=>\s*\./staging/src/`)
	requiredRE = regexp.MustCompile(`^\s*(?:require\s+)?(k8s\.io/[a-z0-9-]+)\s+v0\.0\.0\b`)
	goRE       = regexp.MustCompile(`^go (1\.\d+)`)
	godebugRE  = regexp.MustCompile(`^godebug (default=go1\.\d+)`)
)

// kubernetesGoMod reads k8s.io/kubernetes's own go.mod at version. Each
// "k8s.io/x => ./staging/src/k8s.io/x" becomes a replace with the published
// staging module (v0.<minor>.<patch>): the module requires its staging
// modules at v0.0.0, which only resolves with these replaces. The GODEBUG
// default is what upstream's binaries get: its godebug line, or the
// default of its go line (v1.31 says go 1.22).
func (b *Builder) kubernetesGoMod(ctx context.Context, version string) (replaces []string, godebug string, err error) {
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", "k8s.io/kubernetes@"+version)
	cmd.Dir = b.Cache.TempDir()
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local", "GOFLAGS=-mod=mod")
	out, err := cmd.Output()
	if err != nil {
		return nil, "", fmt.Errorf("go mod download k8s.io/kubernetes@%s (is the Go module proxy reachable?): %w", version, err)
	}
	var info struct{ GoMod, Error string }
	if err := json.Unmarshal(out, &info); err != nil || info.GoMod == "" {
		return nil, "", fmt.Errorf("go mod download k8s.io/kubernetes@%s: %s %v", version, info.Error, err)
	}
	f, err := os.Open(info.GoMod)
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	staging := "v0" + strings.TrimPrefix(version, "v1")
	// Only staging modules the module requires: some (sample-controller)
	// are never published at every version.
	var reps []string
	required := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := goRE.FindStringSubmatch(sc.Text()); m != nil && godebug == "" {
			godebug = "default=go" + m[1]
		}
		if m := godebugRE.FindStringSubmatch(sc.Text()); m != nil {
			godebug = m[1]
		}
		if m := requiredRE.FindStringSubmatch(sc.Text()); m != nil {
			required[m[1]] = true
		}
		if m := stagingRE.FindStringSubmatch(sc.Text()); m != nil && required[m[1]] {
			reps = append(reps, fmt.Sprintf("%s => %s %s", m[1], m[1], staging))
		}
	}
	if len(reps) == 0 {
		return nil, "", fmt.Errorf("%s: no staging replace directives found in k8s.io/kubernetes@%s's go.mod", info.GoMod, version)
	}
	return reps, godebug, sc.Err()
}

// kubernetesModule is the build of the seven Kubernetes binaries, with the
// flags upstream's hack/lib/golang.sh uses (static, selinux, notest,
// grpcnotrace) and the version stamped so kubeadm's version checks work.
func (b *Builder) kubernetesModule(ctx context.Context, version string) (*goModule, error) {
	reps, godebug, err := b.kubernetesGoMod(ctx, version)
	if err != nil {
		return nil, err
	}
	major, minor, _ := strings.Cut(strings.TrimPrefix(version, "v"), ".")
	minor, _, _ = strings.Cut(minor, ".")
	var ld []string
	for _, p := range []string{"k8s.io/client-go/pkg/version", "k8s.io/component-base/version"} {
		ld = append(ld,
			"-X", p+".gitVersion="+version, "-X", p+".gitMajor="+major, "-X", p+".gitMinor="+minor,
			"-X", p+".gitCommit=0000000000000000000000000000000000000000", "-X", p+".gitTreeState=clean",
			"-X", p+".buildDate="+b.epoch.Format("2006-01-02T15:04:05Z"))
	}
	m := &goModule{dir: "kubernetes-" + version, require: "k8s.io/kubernetes@" + version, replaces: reps, godebug: godebug}
	for _, name := range kubernetesBinaries {
		m.targets = append(m.targets, goTarget{name: name, kind: lock.KindBinary, version: version,
			pkg: "k8s.io/kubernetes/cmd/" + name, tags: []string{"selinux", "notest", "grpcnotrace"}, ldflags: ld})
	}
	return m, nil
}

// kubeadmImages runs the built kubeadm: the image set it prints is the
// truth the spec and the assembled images must match one for one.
func kubeadmImages(ctx context.Context, kubeadm, version string) ([]string, error) {
	cmd := exec.CommandContext(ctx, kubeadm, "config", "images", "list", "--kubernetes-version", version)
	out, err := cmd.Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		return nil, fmt.Errorf("%s config images list --kubernetes-version %s: %w %s", kubeadm, version, err, msg)
	}
	return strings.Fields(string(out)), nil
}

// compareImageSets fails unless the spec lists exactly what kubeadm prints.
func compareImageSets(specPath string, specImages, kubeadm []string) error {
	want, have := map[string]bool{}, map[string]bool{}
	for _, r := range kubeadm {
		want[r] = true
	}
	for _, r := range specImages {
		have[r] = true
	}
	var problems []string
	for _, r := range kubeadm {
		if !have[r] {
			problems = append(problems, "kubeadm needs "+r+" but images.controlPlane does not list it")
		}
	}
	for _, r := range specImages {
		if !want[r] {
			problems = append(problems, "images.controlPlane lists "+r+" but kubeadm does not use it")
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s: images.controlPlane differs from `kubeadm config images list`:\n  %s\n(kubeadm prints: %s)",
			specPath, strings.Join(problems, "\n  "), strings.Join(kubeadm, " "))
	}
	return nil
}

// imageTag returns the tag of the image in refs whose repository ends in
// /name (registry.k8s.io/etcd:3.7.0-0 -> 3.7.0-0).
func imageTag(refs []string, name string) (string, error) {
	for _, r := range refs {
		repo, tag, ok := strings.Cut(r[strings.LastIndex(r, "/")+1:], ":")
		if ok && repo == name {
			return tag, nil
		}
	}
	return "", fmt.Errorf("kubeadm's image list has no %s image: %v", name, refs)
}

func exists(p string) bool {
	_, err := os.Stat(filepath.Clean(p))
	return err == nil
}
