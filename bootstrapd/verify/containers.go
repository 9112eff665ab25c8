package verify

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/distribution/reference"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"kubeboot.dev/kubeboot/bootstrapd/images"
	"kubeboot.dev/kubeboot/nodepath"
)

// runtimeAnswers fails the check that the runtime answered on the CRI and
// says whether it did: the sections reading the runtime start with it.
func (n *node) runtimeAnswers(s *Section) bool {
	if n.criErr != nil {
		s.fail("the runtime answers on the CRI", "containerd serving the CRI at "+n.o.CRISocket, n.criErr.Error())
		return false
	}
	return true
}

// containers is the reference's `crictl ps -a` and `crictl images`: every
// container of every sandbox; the current container of every name in the
// running sandboxes of the system pods (the cluster section's namespaces)
// running, or exited 0 (an init container that finished); the runtime's
// images exactly the node image's pinned set, each at its locked digest
// and pinned, nothing pulled or imported beside it.
func (n *node) containers(context.Context) Section {
	s := Section{Name: "containers", Title: "Containers and images (crictl ps -a; crictl images)"}
	if !n.runtimeAnswers(&s) {
		return s
	}
	n.containerChecks(&s)
	n.imageChecks(&s)
	return s
}

func (n *node) containerChecks(s *Section) {
	sandboxes := map[string]sandbox{}
	for _, sb := range n.cri.sandboxes {
		sandboxes[sb.ID] = sb
	}
	pod := func(c container) string {
		if sb, ok := sandboxes[c.SandboxID]; ok {
			return sb.pod()
		}
		return "sandbox " + short(c.SandboxID) + " (not listed)"
	}
	cs := slices.Clone(n.cri.containers)
	slices.SortStableFunc(cs, func(a, b container) int {
		if c := strings.Compare(pod(a), pod(b)); c != 0 {
			return c
		}
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return int(a.Attempt) - int(b.Attempt)
	})
	for _, c := range cs {
		sandboxState := ""
		if sb, ok := sandboxes[c.SandboxID]; ok && !sb.Ready {
			sandboxState = "  (sandbox not ready)"
		}
		s.found("pod %s  container %s  image %s  %s  restarts %d  id %s%s", pod(c), c.Name, n.imageName(c), containerState(c), c.Attempt, short(c.ID), sandboxState)
	}

	// The current attempt of each container of the running system pods
	// (older attempts and stopped sandboxes are history the kubelet
	// removes).
	_, namespaces, _ := n.systemPods() // an error is the cluster section's check
	current := map[[2]string]container{}
	var order [][2]string
	for _, c := range cs {
		sb, ok := sandboxes[c.SandboxID]
		if !ok || !sb.Ready || !slices.Contains(namespaces, sb.Namespace) {
			continue
		}
		key := [2]string{c.SandboxID, c.Name}
		if _, seen := current[key]; !seen {
			order = append(order, key)
		}
		current[key] = c // cs is in attempt order: the last is the newest
	}
	for _, key := range order {
		c := current[key]
		name := fmt.Sprintf("container %s of pod %s", c.Name, pod(c))
		const expected = "Running (or Exited 0: an init container that finished)"
		switch {
		case c.State == runtimeapi.ContainerState_CONTAINER_RUNNING:
			s.pass(name, expected, fmt.Sprintf("Running, restarts %d", c.Attempt))
		case c.State == runtimeapi.ContainerState_CONTAINER_EXITED && c.ExitCode == 0:
			s.pass(name, expected, "Exited 0")
		case c.State == runtimeapi.ContainerState_CONTAINER_EXITED && c.Attempt > 0:
			s.fail(name, expected, fmt.Sprintf("Exited %d after %s: crash-looping", c.ExitCode, plural(int(c.Attempt), "restart")))
		default:
			s.fail(name, expected, containerState(c))
		}
	}
}

// containerState is the state as crictl ps shows it, with the exit code.
func containerState(c container) string {
	switch c.State {
	case runtimeapi.ContainerState_CONTAINER_RUNNING:
		return "Running"
	case runtimeapi.ContainerState_CONTAINER_CREATED:
		return "Created"
	case runtimeapi.ContainerState_CONTAINER_EXITED:
		return fmt.Sprintf("Exited %d", c.ExitCode)
	}
	return "Unknown"
}

// imageName names a container's image by its tag in the runtime's image
// list: the kubelet creates containers from the image ID.
func (n *node) imageName(c container) string {
	for _, im := range n.cri.images {
		if im.ID == c.ImageRef || im.ID == c.Image || slices.Contains(im.Tags, c.Image) || slices.Contains(im.Digests, c.ImageRef) {
			return firstOr(im.Tags, firstOr(im.Digests, c.Image))
		}
	}
	return orNone(c.Image)
}

func (n *node) imageChecks(s *Section) {
	for _, im := range n.cri.images {
		pinned := "not pinned"
		if im.Pinned {
			pinned = "pinned"
		}
		s.found("image %s  %s  id %s  %s  %s", orNone(strings.Join(im.Tags, ",")), orNone(strings.Join(im.Digests, ",")), short(im.ID), pinned, size(im.Size))
	}
	entries, err := images.ReadIndex(n.o.Root)
	if err != nil {
		s.fail("the node image's pinned images", "listed in "+nodepath.ImagesIndex, err.Error())
		return
	}
	claimed := make([]bool, len(n.cri.images))
	for _, e := range entries {
		name := "image " + e.Ref
		expected := e.DigestRef() + ", pinned"
		i := slices.IndexFunc(n.cri.images, func(im image) bool { return slices.Contains(im.Tags, e.Ref) })
		if i < 0 {
			s.fail(name, expected, "absent")
			continue
		}
		claimed[i] = true
		im := n.cri.images[i]
		switch {
		case !slices.Contains(im.Digests, e.DigestRef()):
			s.fail(name, expected, "another digest: "+orNone(strings.Join(im.Digests, ", ")))
		case !im.Pinned:
			s.fail(name, expected, e.DigestRef()+", not pinned: the kubelet's image garbage collector may remove it")
		default:
			s.pass(name, expected, e.DigestRef()+", pinned")
		}
	}
	extra := 0
	for i, im := range n.cri.images {
		if claimed[i] || slices.ContainsFunc(entries, func(e images.Entry) bool { return slices.Contains(im.Digests, e.DigestRef()) }) {
			continue
		}
		name := "image " + firstOr(im.Tags, firstOr(im.Digests, im.ID))
		if reg := n.mirrored(im); reg != "" {
			s.pass(name, "a pinned image or one of a mirrored registry", "pulled through the mirror of "+reg+" (containerd.mirrors)")
			continue
		}
		extra++
		s.fail(name, "only the images of "+nodepath.ImagesIndex, "not in the pinned set: pulled or imported on the node")
	}
	if extra == 0 {
		s.pass("no image beyond the pinned set", fmt.Sprintf("only the %d images of %s", len(entries), nodepath.ImagesIndex), fmt.Sprintf("%d images", len(n.cri.images)))
	}
}

// size is an image's size as crictl images shows it, to three digits.
func size(b uint64) string {
	switch {
	case b < 1000:
		return fmt.Sprintf("%dB", b)
	case b < 1_000_000:
		return fmt.Sprintf("%.3gkB", float64(b)/1e3)
	case b < 1_000_000_000:
		return fmt.Sprintf("%.3gMB", float64(b)/1e6)
	}
	return fmt.Sprintf("%.3gGB", float64(b)/1e9)
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// mirrored is the registry of im when the machine config gives it a mirror
// (containerd.mirrors): a workload's image pulled through it is expected.
func (n *node) mirrored(im image) string {
	for _, ref := range append(slices.Clone(im.Tags), im.Digests...) {
		named, err := reference.ParseNormalizedNamed(ref)
		if err != nil {
			continue
		}
		reg := reference.Domain(named)
		for _, m := range n.o.Config.Containerd.Mirrors {
			if m.Registry == reg {
				return reg
			}
		}
	}
	return ""
}
