package spec

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestShippedSpecsAreValid(t *testing.T) {
	for _, p := range []string{"../../configs/image.yaml", "../../configs/image-upstream.yaml"} {
		s, err := Load(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if s.Kubernetes.Version != "v1.37.2" || len(s.Images.ControlPlane) != 7 {
			t.Errorf("%s: version %s, %d control-plane images", p, s.Kubernetes.Version, len(s.Images.ControlPlane))
		}
		if got := s.LockPath(); got != strings.TrimSuffix(p, ".yaml")+".lock" {
			t.Errorf("%s: lock path %s", p, got)
		}
		if s.Resolve(s.Overlays) != filepath.Join(filepath.Dir(p), "../overlays") {
			t.Errorf("%s: overlays resolve to %s", p, s.Resolve(s.Overlays))
		}
	}
}

const valid = `apiVersion: kubeboot.dev/v1alpha1
kind: ImageSpec
source: fromSource
kubernetes: {version: v1.31.14}
runtime: {containerd: v2.4.2, runc: v1.5.2, crictl: v1.31.1, cniPlugins: {version: v1.10.0, plugins: [bridge]}}
images: {controlPlane: [registry.k8s.io/pause:3.10]}
base: {suite: trixie, mirror: http://mirror.invalid/debian}
output: {formats: [raw], diskSize: 8GiB}
`

func TestParseValidOlderMinor(t *testing.T) {
	if _, err := Parse("t.yaml", []byte(valid)); err != nil {
		t.Fatal(err)
	}
}

func TestParseReportsEveryProblemWithItsField(t *testing.T) {
	bad := strings.NewReplacer(
		"v1.31.14", "1.31",
		"v2.4.2", "latest",
		"registry.k8s.io/pause:3.10", "pause",
		"[raw]", "[vmdk]",
		"source: fromSource", "source: magic",
	).Replace(valid)
	_, err := Parse("t.yaml", []byte(bad))
	if err == nil {
		t.Fatal("invalid spec accepted")
	}
	for _, want := range []string{"t.yaml: kubernetes.version", "t.yaml: runtime.containerd", "images.controlPlane[0]", "output.formats", "t.yaml: source"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestParseRejectsUnknownKeys(t *testing.T) {
	_, err := Parse("t.yaml", []byte(valid+"extra: 1\n"))
	if err == nil || !strings.Contains(err.Error(), "t.yaml") || !strings.Contains(err.Error(), "extra") {
		t.Fatalf("unknown key not reported with file and name: %v", err)
	}
}

func TestUpstreamNeedsFiles(t *testing.T) {
	_, err := Parse("t.yaml", []byte(strings.Replace(valid, "fromSource", "upstream", 1)))
	if err == nil || !strings.Contains(err.Error(), "upstream.files") {
		t.Fatalf("want upstream.files error, got %v", err)
	}
}

func TestExpand(t *testing.T) {
	if got := Expand("https://dl.k8s.io/release/{version}/bin/linux/{arch}/kubeadm", "v1.37.2"); got != "https://dl.k8s.io/release/v1.37.2/bin/linux/amd64/kubeadm" {
		t.Fatal(got)
	}
}

func TestExtrasShortAndLongForm(t *testing.T) {
	doc := strings.Replace(valid, "images: {controlPlane: [registry.k8s.io/pause:3.10]}",
		"images: {controlPlane: [registry.k8s.io/pause:3.10], extras: [docker.io/library/busybox:1.37, {ref: local.example/x:v1, from: 'oci-layout:x'}]}", 1)
	s, err := Parse("t.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Images.Extras) != 2 || s.Images.Extras[0].Ref != "docker.io/library/busybox:1.37" || s.Images.Extras[1].From != "oci-layout:x" {
		t.Fatalf("extras: %+v", s.Images.Extras)
	}
	if got := s.AllImages(); len(got) != 3 || got[2] != "local.example/x:v1" {
		t.Fatalf("AllImages: %v", got)
	}
	_, err = Parse("t.yaml", []byte(strings.Replace(doc, "oci-layout:x", "ftp://x", 1)))
	if err == nil || !strings.Contains(err.Error(), "images.extras[1].from") {
		t.Fatalf("bad from not reported: %v", err)
	}
}

func TestMirrorOptional(t *testing.T) {
	s, err := Parse("t.yaml", []byte(strings.Replace(valid, ", mirror: http://mirror.invalid/debian", "", 1)))
	if err != nil {
		t.Fatalf("a spec without base.mirror (the build machine's mirror) was refused: %v", err)
	}
	if s.Base.Mirror != "" {
		t.Errorf("mirror %q, want empty", s.Base.Mirror)
	}
	_, err = Parse("t.yaml", []byte(strings.Replace(valid, "http://mirror.invalid/debian", "mirror.invalid/debian", 1)))
	if err == nil || !strings.Contains(err.Error(), "t.yaml: base.mirror") {
		t.Fatalf("a mirror without a scheme: %v", err)
	}
}
