// Package spec is the ImageSpec: what goes into a kubeboot node image, and
// where every pinned input comes from (built from source through the Go
// module proxy, or downloaded from upstream release URLs and registries).
package spec

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

const (
	APIVersion = "kubeboot.dev/v1alpha1"
	Kind       = "ImageSpec"
)

// Source says how the Kubernetes artifact set is obtained.
type Source string

const (
	// FromSource builds every binary through the Go module proxy and
	// assembles the control-plane images locally: needs no internet.
	FromSource Source = "fromSource"
	// Upstream downloads official release binaries and pulls the official
	// images; every download is pinned by the lock.
	Upstream Source = "upstream"
)

// ImageSpec is the document in configs/image.yaml.
type ImageSpec struct {
	APIVersion string      `yaml:"apiVersion"`
	Kind       string      `yaml:"kind"`
	Metadata   Metadata    `yaml:"metadata"`
	Source     Source      `yaml:"source"`
	Kubernetes Kubernetes  `yaml:"kubernetes"`
	Runtime    Runtime     `yaml:"runtime"`
	Images     Images      `yaml:"images"`
	PodNetwork *PodNetwork `yaml:"podNetwork,omitempty"`
	Upstream   *Upstreams  `yaml:"upstream,omitempty"`
	Base       Base        `yaml:"base"`
	Overlays   string      `yaml:"overlays"`
	Output     Output      `yaml:"output"`

	// path is where the spec was read from; relative paths resolve against
	// its directory.
	path string
}

type Metadata struct {
	Name string `yaml:"name"`
}

// Kubernetes pins the Kubernetes release. kubeadm, kubelet, kubectl and the
// four control-plane components share this version.
type Kubernetes struct {
	Version string `yaml:"version"`
}

// Runtime pins the node's container runtime and its tools.
type Runtime struct {
	Containerd string `yaml:"containerd"`
	Runc       string `yaml:"runc"`
	Crictl     string `yaml:"crictl"`
	CNIPlugins CNI    `yaml:"cniPlugins"`
}

type CNI struct {
	Version string   `yaml:"version"`
	Plugins []string `yaml:"plugins"`
}

// Images lists the OCI images baked into the node.
type Images struct {
	// ControlPlane must equal, one for one, what the pinned kubeadm prints
	// for `kubeadm config images list --kubernetes-version V`.
	ControlPlane []string `yaml:"controlPlane"`
	// Extras are further images, pinned by digest in the lock.
	Extras []Extra `yaml:"extras"`
}

// Extra is an extra image: a plain reference is pulled from its registry;
// From takes it from a local OCI layout directory ("oci-layout:DIR") or
// OCI archive ("oci-archive:FILE"), relative to the spec, or, with source
// fromSource, FromBuilt assembles it here by the recipe named by the last
// element of its repository (image/fromsource).
type Extra struct {
	Ref  string `yaml:"ref"`
	From string `yaml:"from,omitempty"`
}

// FromBuilt is the Extra.From of an image assembled by the from-source build.
const FromBuilt = "built"

// PodNetwork pins the pod network built from source: flannel's flanneld and
// install-conf, assembled as the image FlannelImage(Flannel), and the
// flannel CNI plugin, installed on the node as /opt/cni/bin/flannel.
type PodNetwork struct {
	// Flannel is the github.com/flannel-io/flannel module version.
	Flannel string `yaml:"flannel"`
	// FlannelCNIPlugin is the github.com/containernetworking/plugins
	// version whose plugins/meta/flannel is built (v0.9.1 is its last
	// release there; github.com/flannel-io/cni-plugin, where it lives now,
	// is not served by the Go module proxy).
	FlannelCNIPlugin string `yaml:"flannelCNIPlugin"`
}

// FlannelRepository is the repository of the flannel image; the tag is the
// flannel version. It is upstream's name, as the control-plane images keep
// registry.k8s.io's.
const FlannelRepository = "ghcr.io/flannel-io/flannel"

// FlannelImage is the reference of the flannel image of a version.
func FlannelImage(version string) string { return FlannelRepository + ":" + version }

// UnmarshalYAML accepts "registry/repo:tag" as short for {ref: ...}.
func (e *Extra) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		return n.Decode(&e.Ref)
	}
	type plain Extra
	return n.Decode((*plain)(e))
}

// AllImages lists the control-plane images, the pod network's, then the
// extras' references.
func (s *ImageSpec) AllImages() []string {
	out := append([]string{}, s.Images.ControlPlane...)
	out = append(out, s.PodNetworkImages()...)
	for _, e := range s.Images.Extras {
		out = append(out, e.Ref)
	}
	return out
}

// PodNetworkImages are the images the podNetwork section makes.
func (s *ImageSpec) PodNetworkImages() []string {
	if s.PodNetwork == nil {
		return nil
	}
	return []string{FlannelImage(s.PodNetwork.Flannel)}
}

// Upstreams says where the official artifacts live (Source: upstream).
// {version} and {arch} in a URL are replaced by the pinned version and
// "amd64".
type Upstreams struct {
	Files []UpstreamFile `yaml:"files"`
}

// UpstreamFile is one download. When Extract is set the URL is a .tar.gz
// and only the listed members (path inside the archive -> artifact name)
// are taken from it.
type UpstreamFile struct {
	Name    string            `yaml:"name"`
	Version string            `yaml:"version"`
	URL     string            `yaml:"url"`
	Extract map[string]string `yaml:"extract,omitempty"`
}

// Base is the node's operating system (consumed by the image builder).
// Mirror is optional: empty means the Debian mirror of the build machine's
// own apt sources (image/aptmirror).
type Base struct {
	Distribution string   `yaml:"distribution"`
	Suite        string   `yaml:"suite"`
	Mirror       string   `yaml:"mirror,omitempty"`
	Packages     []string `yaml:"packages"`
}

// Output is the disk image the image builder writes.
type Output struct {
	Formats  []string `yaml:"formats"`
	DiskSize string   `yaml:"diskSize"`
}

// Load reads and validates an ImageSpec; unknown keys are errors.
func Load(path string) (*ImageSpec, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read image spec: %w", err)
	}
	s, err := Parse(path, data)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Parse decodes and validates data; name is used in error messages and to
// resolve relative paths.
func Parse(name string, data []byte) (*ImageSpec, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var s ImageSpec
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	s.path = name
	if errs := s.Validate(); len(errs) > 0 {
		msgs := make([]string, len(errs))
		for i, e := range errs {
			msgs[i] = name + ": " + e.Error()
		}
		return nil, errors.New(strings.Join(msgs, "\n"))
	}
	return &s, nil
}

// Path is the file the spec was loaded from.
func (s *ImageSpec) Path() string { return s.path }

// Resolve makes p (relative to the spec's directory) absolute.
func (s *ImageSpec) Resolve(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(filepath.Dir(s.path), p)
}

// LockPath is the lock file that belongs to this spec: image.yaml ->
// image.lock, image-upstream.yaml -> image-upstream.lock.
func (s *ImageSpec) LockPath() string { return LockPathFor(s.path) }

// LockPathFor returns the lock path for a spec path.
func LockPathFor(specPath string) string {
	return strings.TrimSuffix(strings.TrimSuffix(specPath, ".yaml"), ".yml") + ".lock"
}

var (
	semverRE = regexp.MustCompile(`^v\d+\.\d+\.\d+$`)
	refRE    = regexp.MustCompile(`^[a-z0-9.-]+(:\d+)?(/[a-z0-9._-]+)+:[A-Za-z0-9._-]+$`)
	sizeRE   = regexp.MustCompile(`^\d+(M|G|T)i?B?$`)
)

// Validate returns every problem, each naming its field path.
func (s *ImageSpec) Validate() []error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if s.APIVersion != APIVersion {
		bad("apiVersion", "must be %q, got %q", APIVersion, s.APIVersion)
	}
	if s.Kind != Kind {
		bad("kind", "must be %q, got %q", Kind, s.Kind)
	}
	switch s.Source {
	case FromSource:
		if s.Upstream != nil {
			bad("upstream", "only allowed with source: %s", Upstream)
		}
	case Upstream:
		if s.Upstream == nil || len(s.Upstream.Files) == 0 {
			bad("upstream.files", "source: upstream needs the download list")
		}
	default:
		bad("source", "must be %q or %q, got %q", FromSource, Upstream, s.Source)
	}
	if !semverRE.MatchString(s.Kubernetes.Version) {
		bad("kubernetes.version", "must look like v1.37.2, got %q", s.Kubernetes.Version)
	}
	for _, fv := range [][2]string{
		{"runtime.containerd", s.Runtime.Containerd},
		{"runtime.runc", s.Runtime.Runc},
		{"runtime.crictl", s.Runtime.Crictl},
		{"runtime.cniPlugins.version", s.Runtime.CNIPlugins.Version},
	} {
		if !semverRE.MatchString(fv[1]) {
			bad(fv[0], "must look like v1.2.3, got %q", fv[1])
		}
	}
	if len(s.Runtime.CNIPlugins.Plugins) == 0 {
		bad("runtime.cniPlugins.plugins", "list at least one plugin (bridge, host-local, loopback, portmap ...)")
	}
	if len(s.Images.ControlPlane) == 0 {
		bad("images.controlPlane", "must list the images kubeadm needs (kubeadm config images list)")
	}
	if pn := s.PodNetwork; pn != nil {
		if s.Source != FromSource {
			bad("podNetwork", "only allowed with source: %s (with upstream, list the flannel image under images.extras and the plugin under upstream.files)", FromSource)
		}
		for _, fv := range [][2]string{{"podNetwork.flannel", pn.Flannel}, {"podNetwork.flannelCNIPlugin", pn.FlannelCNIPlugin}} {
			if !semverRE.MatchString(fv[1]) {
				bad(fv[0], "must look like v1.2.3, got %q", fv[1])
			}
		}
	}
	seen := map[string]bool{}
	cp, pn := len(s.Images.ControlPlane), len(s.PodNetworkImages())
	for i, r := range s.AllImages() {
		field := fmt.Sprintf("images.controlPlane[%d]", i)
		switch {
		case i >= cp+pn:
			field = fmt.Sprintf("images.extras[%d]", i-cp-pn)
		case i >= cp:
			field = "podNetwork.flannel"
		}
		if !refRE.MatchString(r) {
			bad(field, "%q is not a full reference registry/repository:tag", r)
		}
		if seen[r] {
			bad(field, "%q is listed twice", r)
		}
		seen[r] = true
	}
	for i, e := range s.Images.Extras {
		switch {
		case e.From == FromBuilt:
			if s.Source != FromSource {
				bad(fmt.Sprintf("images.extras[%d].from", i), "%q needs source: %s", FromBuilt, FromSource)
			}
		case e.From != "" && !strings.HasPrefix(e.From, "oci-layout:") && !strings.HasPrefix(e.From, "oci-archive:"):
			bad(fmt.Sprintf("images.extras[%d].from", i), "%q must be %q or start with oci-layout: or oci-archive:", e.From, FromBuilt)
		}
	}
	if s.Upstream != nil {
		names := map[string]bool{}
		for i, f := range s.Upstream.Files {
			field := fmt.Sprintf("upstream.files[%d]", i)
			if f.Name == "" {
				bad(field+".name", "required")
			}
			if !strings.HasPrefix(f.URL, "https://") && !strings.HasPrefix(f.URL, "http://") && !strings.HasPrefix(f.URL, "file://") {
				bad(field+".url", "must be an http(s) or file:// URL, got %q", f.URL)
			}
			for _, n := range append([]string{f.Name}, mapValues(f.Extract)...) {
				if names[n] {
					bad(field, "artifact name %q is used twice", n)
				}
				names[n] = true
			}
		}
	}
	if s.Base.Suite == "" {
		bad("base.suite", "required (e.g. trixie)")
	}
	if m := s.Base.Mirror; m != "" && !strings.HasPrefix(m, "http://") && !strings.HasPrefix(m, "https://") {
		bad("base.mirror", "must be an http(s) URL of a Debian archive, got %q (leave it out to use the build machine's mirror)", m)
	}
	for _, f := range s.Output.Formats {
		if f != "raw" && f != "qcow2" && f != "zst" {
			bad("output.formats", "%q is not raw, qcow2 or zst", f)
		}
	}
	if s.Output.DiskSize != "" && !sizeRE.MatchString(s.Output.DiskSize) {
		bad("output.diskSize", "%q is not a size like 8GiB", s.Output.DiskSize)
	}
	return errs
}

func mapValues(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// Expand replaces {version} and {arch} in an upstream URL.
func Expand(url, version string) string {
	return strings.NewReplacer("{version}", version, "{arch}", "amd64").Replace(url)
}
