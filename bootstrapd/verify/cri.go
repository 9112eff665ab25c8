package verify

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"kubeboot.dev/kubeboot/bootstrapd/cri"
)

// Bounds of what is read from the runtime: a node runs tens of pods.
const (
	maxSandboxes  = 500
	maxContainers = 1000
	maxImages     = 500
)

// sandbox is a pod sandbox as the CRI reports it.
type sandbox struct {
	ID, Name, Namespace string
	Ready               bool
	HostNetwork         bool
	// NetNSPath is the network namespace the runtime made for the pod
	// (its OCI spec's network namespace); "" on the host network.
	NetNSPath string
	PID       int // the sandbox's (pause) process; 0 when not reported
}

func (s sandbox) pod() string { return s.Namespace + "/" + s.Name }

// container is a container as the CRI reports it.
type container struct {
	ID, Name, SandboxID string
	Image               string // what the pod spec named
	ImageRef            string // the image the runtime resolved it to
	State               runtimeapi.ContainerState
	ExitCode            int32
	Attempt             uint32
	PID                 int
}

// image is an image in the runtime's store.
type image struct {
	ID            string
	Tags, Digests []string
	Pinned        bool
	Size          uint64
}

// criFacts is what the runtime holds on this node.
type criFacts struct {
	sandboxes  []sandbox
	containers []container
	images     []image
}

// readCRI lists sandboxes, containers and images through the CRI at
// socket, each call bounded by timeout.
func readCRI(ctx context.Context, socket string, timeout time.Duration) (*criFacts, error) {
	conn, err := cri.Dial(socket)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	img := runtimeapi.NewImageServiceClient(conn)
	call := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, timeout) }

	f := &criFacts{}
	c, cancel := call()
	sbs, err := rt.ListPodSandbox(c, &runtimeapi.ListPodSandboxRequest{})
	cancel()
	if err != nil {
		return nil, fmt.Errorf("CRI at %s: list pod sandboxes: %w", socket, err)
	}
	for _, s := range first(sbs.GetItems(), maxSandboxes) {
		sb := sandbox{ID: s.GetId(), Name: s.GetMetadata().GetName(), Namespace: s.GetMetadata().GetNamespace(),
			Ready: s.GetState() == runtimeapi.PodSandboxState_SANDBOX_READY}
		c, cancel := call()
		st, err := rt.PodSandboxStatus(c, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: s.GetId(), Verbose: true})
		cancel()
		if err != nil {
			return nil, fmt.Errorf("CRI: status of pod sandbox %s (%s): %w", short(s.GetId()), sb.pod(), err)
		}
		sb.HostNetwork = st.GetStatus().GetLinux().GetNamespaces().GetOptions().GetNetwork() == runtimeapi.NamespaceMode_NODE
		sb.PID, sb.NetNSPath = sandboxInfo(st.GetInfo()["info"])
		f.sandboxes = append(f.sandboxes, sb)
	}

	c, cancel = call()
	cs, err := rt.ListContainers(c, &runtimeapi.ListContainersRequest{})
	cancel()
	if err != nil {
		return nil, fmt.Errorf("CRI: list containers: %w", err)
	}
	for _, ct := range first(cs.GetContainers(), maxContainers) {
		co := container{ID: ct.GetId(), Name: ct.GetMetadata().GetName(), SandboxID: ct.GetPodSandboxId(),
			Image: ct.GetImage().GetImage(), ImageRef: ct.GetImageRef(), State: ct.GetState(), Attempt: ct.GetMetadata().GetAttempt()}
		c, cancel := call()
		st, err := rt.ContainerStatus(c, &runtimeapi.ContainerStatusRequest{ContainerId: ct.GetId(), Verbose: true})
		cancel()
		if err != nil {
			return nil, fmt.Errorf("CRI: status of container %s (%s): %w", short(ct.GetId()), co.Name, err)
		}
		co.ExitCode = st.GetStatus().GetExitCode()
		co.PID = containerPID(st.GetInfo()["info"])
		f.containers = append(f.containers, co)
	}

	c, cancel = call()
	ims, err := img.ListImages(c, &runtimeapi.ListImagesRequest{})
	cancel()
	if err != nil {
		return nil, fmt.Errorf("CRI: list images: %w", err)
	}
	for _, im := range first(ims.GetImages(), maxImages) {
		f.images = append(f.images, image{ID: im.GetId(), Tags: im.GetRepoTags(), Digests: im.GetRepoDigests(), Pinned: im.GetPinned(), Size: im.GetSize()})
	}
	slices.SortFunc(f.sandboxes, func(a, b sandbox) int { return strings.Compare(a.pod()+a.ID, b.pod()+b.ID) })
	slices.SortFunc(f.containers, func(a, b container) int { return strings.Compare(a.Name+a.ID, b.Name+b.ID) })
	slices.SortFunc(f.images, func(a, b image) int { return strings.Compare(firstOr(a.Tags, a.ID), firstOr(b.Tags, b.ID)) })
	return f, nil
}

// sandboxInfo reads the pid and the network namespace path from a verbose
// sandbox status's "info" (containerd: the sandbox's pid and its OCI
// runtime spec). Missing fields are zero: the checks say so.
func sandboxInfo(info string) (pid int, netns string) {
	var v struct {
		PID  int `json:"pid"`
		Spec *struct {
			Linux *struct {
				Namespaces []struct {
					Type string `json:"type"`
					Path string `json:"path"`
				} `json:"namespaces"`
			} `json:"linux"`
		} `json:"runtimeSpec"`
	}
	if json.Unmarshal([]byte(info), &v) != nil {
		return 0, ""
	}
	if v.Spec != nil && v.Spec.Linux != nil {
		for _, ns := range v.Spec.Linux.Namespaces {
			if ns.Type == "network" {
				netns = ns.Path
			}
		}
	}
	return v.PID, netns
}

// containerPID reads the pid from a verbose container status's "info".
func containerPID(info string) int {
	var v struct {
		PID int `json:"pid"`
	}
	if json.Unmarshal([]byte(info), &v) != nil {
		return 0
	}
	return v.PID
}

func first[T any](s []T, n int) []T { return s[:min(len(s), n)] }

func firstOr(s []string, def string) string {
	if len(s) > 0 {
		return s[0]
	}
	return def
}

// short is an ID as crictl prints it: the first 13 characters.
func short(id string) string {
	id = strings.TrimPrefix(id, "sha256:")
	return id[:min(len(id), 13)]
}
