package podnetwork

import (
	"context"
	"errors"
	"fmt"
	"io/fs"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"kubeboot.dev/kubeboot/bootstrapd/kubeapi"
	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/machineconfig"
	"kubeboot.dev/kubeboot/nodepath"
)

// New returns the pod network stage. The engine runs it on the init node
// after kubeadm init.
func New() stage.Stage { return podNetworkStage{} }

type podNetworkStage struct{}

func (podNetworkStage) Name() string { return "podnetwork" }

// Inputs is what the stage reads from the config. The flannel image comes
// from the node image, not the config: a new node image is a reflash.
func (podNetworkStage) Inputs(cfg *machineconfig.MachineConfig) any {
	return struct {
		PodSubnet string
		Backend   machineconfig.PodNetworkBackend
	}{cfg.Kubernetes.PodSubnet, cfg.Kubernetes.PodNetwork.Backend}
}

// Validate renders the manifests: the image index must list flannel and
// the config must render, before anything is changed.
func (podNetworkStage) Validate(ctx context.Context, env *stage.Env) error {
	_, err := objects(env)
	return err
}

// Plan lists the objects Apply would create or update. Before kubeadm
// init has written admin.conf there is no cluster yet: every object is to
// be created.
func (podNetworkStage) Plan(ctx context.Context, env *stage.Env) ([]stage.Change, error) {
	objs, err := objects(env)
	if err != nil {
		return nil, err
	}
	rc, err := kubeapi.Config(env, nodepath.AdminConf, "podnetwork")
	if errors.Is(err, fs.ErrNotExist) {
		changes := make([]stage.Change, len(objs))
		for i, o := range objs {
			changes[i] = stage.Change("create " + kubeapi.Describe(o))
		}
		return changes, nil
	}
	if err != nil {
		return nil, err
	}
	return kubeapi.Plan(ctx, rc, objs)
}

func (podNetworkStage) Apply(ctx context.Context, env *stage.Env) ([]stage.Change, error) {
	objs, err := objects(env)
	if err != nil {
		return nil, err
	}
	rc, err := kubeapi.Config(env, nodepath.AdminConf, "podnetwork")
	if errors.Is(err, fs.ErrNotExist) {
		return nil, stage.Temporary(fmt.Errorf("%s does not exist yet: kubeadm init has not finished", nodepath.AdminConf))
	}
	if err != nil {
		return nil, err
	}
	return kubeapi.Apply(ctx, rc, objs)
}

func objects(env *stage.Env) ([]*unstructured.Unstructured, error) {
	image, err := Image(env.Path(nodepath.ImagesIndex))
	if err != nil {
		return nil, err
	}
	return Render(env.Config, image)
}
