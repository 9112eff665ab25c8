// Package podnetwork is the pod network stage of the init node: it renders
// flannel's manifests (manifests/flannel) from the machine config and the
// flannel image baked into the node, and applies them to the new cluster
// with server-side apply. Every node runs the DaemonSet; only the init node
// applies it, after kubeadm init.
package podnetwork

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"slices"
	"strings"
	"text/template"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"kubeboot.dev/kubeboot/bootstrapd/kubeapi"
	"kubeboot.dev/kubeboot/image/spec"
	"kubeboot.dev/kubeboot/machineconfig"
	"kubeboot.dev/kubeboot/manifests"
)

// maxIndexSize bounds what is read from the image index.
const maxIndexSize = 1 << 20

// netConf is flannel's net-conf.json (flannel's pkg/subnet config).
type netConf struct {
	EnableIPv4     bool    `json:"EnableIPv4"`
	Network        string  `json:"Network,omitempty"`
	EnableIPv6     bool    `json:"EnableIPv6"`
	IPv6Network    string  `json:"IPv6Network,omitempty"`
	EnableNFTables bool    `json:"EnableNFTables"`
	Backend        backend `json:"Backend"`
}

type backend struct {
	Type string `json:"Type"`
}

// NetConf is the net-conf.json of cfg: the pod subnet (one family or both)
// and the backend. EnableNFTables stays off: flanneld then writes its
// masquerade and forward rules with iptables (the nft backend of the
// image's xtables), as kube-proxy does.
func NetConf(cfg *machineconfig.MachineConfig) ([]byte, error) {
	k := cfg.Kubernetes
	nc := netConf{Backend: backend{Type: string(k.PodNetwork.Backend)}}
	if nc.Backend.Type == "" {
		nc.Backend.Type = string(machineconfig.DefaultPodNetwork)
	}
	subnet := k.PodSubnet
	if subnet == "" {
		subnet = machineconfig.DefaultPodSubnet
	}
	for _, s := range strings.Split(subnet, ",") {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("kubernetes.podSubnet: %w", err)
		}
		if p.Addr().Is4() {
			nc.EnableIPv4, nc.Network = true, p.String()
		} else {
			nc.EnableIPv6, nc.IPv6Network = true, p.String()
		}
	}
	return json.MarshalIndent(nc, "", "  ")
}

// Render returns the pod network's objects for cfg, in the order they are
// applied, with image (the baked flannel image) in the DaemonSet.
func Render(cfg *machineconfig.MachineConfig, image string) ([]*unstructured.Unstructured, error) {
	if !strings.HasPrefix(image, spec.FlannelRepository+":") || strings.ContainsAny(image, " \t\n\"'") {
		return nil, fmt.Errorf("%q is not a flannel image reference (%s:TAG)", image, spec.FlannelRepository)
	}
	nc, err := NetConf(cfg)
	if err != nil {
		return nil, err
	}
	// Both values go into the YAML as JSON strings, which YAML reads as
	// double-quoted scalars: nothing in them can change the structure.
	quote := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	data := struct{ Image, NetConf string }{quote(image), quote(string(nc) + "\n")}
	files, err := fs.Glob(manifests.Flannel, "flannel/*.yaml")
	if err != nil {
		return nil, err
	}
	slices.Sort(files)
	var objs []*unstructured.Unstructured
	for _, f := range files {
		text, err := fs.ReadFile(manifests.Flannel, f)
		if err != nil {
			return nil, err
		}
		tmpl, err := template.New(f).Option("missingkey=error").Parse(string(text))
		if err != nil {
			return nil, fmt.Errorf("manifests/%s: %w", f, err)
		}
		var out bytes.Buffer
		if err := tmpl.Execute(&out, data); err != nil {
			return nil, fmt.Errorf("manifests/%s: %w", f, err)
		}
		more, err := kubeapi.Decode("manifests/"+f, &out)
		if err != nil {
			return nil, err
		}
		objs = append(objs, more...)
	}
	return objs, nil
}

// Image finds the flannel image in the node's image index at path.
func Image(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("the node image's image list: %w (was the image built with a podNetwork section?)", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, maxIndexSize))
	var found []string
	for sc.Scan() {
		ref, _, _ := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		if strings.HasPrefix(ref, spec.FlannelRepository+":") {
			found = append(found, ref)
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("%s lists no %s image: the node image has no pod network (add podNetwork to the image spec)", path, spec.FlannelRepository)
	case 1:
		return found[0], nil
	default:
		return "", fmt.Errorf("%s lists %d flannel images (%s); the image spec pins one", path, len(found), strings.Join(found, ", "))
	}
}
