package kubeapi

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"kubeboot.dev/kubeboot/bootstrapd/stage"
)

const (
	// maxKubeconfig bounds a kubeconfig read: it holds a few certificates.
	maxKubeconfig = 1 << 20
	// RequestTimeout bounds one API request. Under QEMU TCG (e2e,
	// 2026-11-29) a loaded control plane's API server answered a GET of
	// one Node in 10-40 s for minutes on end: a joining worker's check
	// timed out at 10 s every time for 18 minutes while kubectl with a
	// 40 s limit got answers. Callers retry with backoff until their
	// stage's own limit.
	RequestTimeout = 30 * time.Second
)

// Config reads the kubeconfig at path (a path on the node, e.g.
// nodepath.AdminConf) under env.Root into a client config for the stage
// named agent. Files the kubeconfig names by absolute path (kubelet.conf's
// rotating client certificate) are read under env.Root too. A missing file
// is an error that wraps fs.ErrNotExist (kubeadm has not written it yet);
// errors name the file, never its contents (it holds a private key).
func Config(env *stage.Env, path, agent string) (*rest.Config, error) {
	p := env.Path(path)
	info, err := os.Stat(p)
	if err != nil {
		return nil, fmt.Errorf("the node's credentials %s: %w (kubeadm init or join writes them)", path, err)
	}
	if info.Size() > maxKubeconfig {
		return nil, fmt.Errorf("%s is %d bytes, more than a kubeconfig can be (%d)", path, info.Size(), maxKubeconfig)
	}
	raw, err := clientcmd.LoadFromFile(p)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	under := func(f *string) {
		if *f != "" && filepath.IsAbs(*f) && !strings.HasPrefix(*f, filepath.Clean(env.Root)+"/") {
			*f = env.Path(*f)
		}
	}
	for _, a := range raw.AuthInfos {
		under(&a.ClientCertificate)
		under(&a.ClientKey)
	}
	for _, c := range raw.Clusters {
		under(&c.CertificateAuthority)
	}
	rc, err := clientcmd.NewDefaultClientConfig(*raw, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	rc.Timeout = RequestTimeout
	rc.UserAgent = "bootstrapd/" + agent
	return rc, nil
}

// Decode splits a multi-document YAML stream (name says where it is
// from, for errors) into objects, each with a kind and a name.
func Decode(name string, r io.Reader) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(r, 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err == io.EOF {
			return objs, nil
		} else if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if m == nil {
			continue // an empty document
		}
		o := &unstructured.Unstructured{Object: m}
		if o.GetKind() == "" || o.GetName() == "" {
			return nil, fmt.Errorf("%s: a document without kind or metadata.name", name)
		}
		objs = append(objs, o)
	}
}
