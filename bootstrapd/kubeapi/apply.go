// Package kubeapi is how bootstrapd talks to its cluster's API server from
// the node: the node's own credentials (admin.conf on control planes,
// kubelet.conf everywhere) read under the stage's root, server-side apply
// of manifests kept in the repository, and which errors clear by
// themselves (the API server not up yet).
package kubeapi

import (
	"context"
	"errors"
	"fmt"
	"net"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"kubeboot.dev/kubeboot/bootstrapd/stage"
)

// FieldManager owns the fields kubeboot applies (server-side apply).
const FieldManager = "kubeboot"

// resourceFor is where o lives in the API. The resource is guessed from
// the kind as kubectl's plural rule does, and o's scope from its namespace:
// every namespaced object in the manifests bootstrapd applies names its
// namespace. Not API discovery: client-go's discovery client loads a
// scheme of every API group when the program starts, about 5 MiB of
// resident memory on every boot for the handful of kinds kept in this
// repository.
func (c *Client) resourceFor(o *unstructured.Unstructured) dynamic.ResourceInterface {
	gvr, _ := meta.UnsafeGuessKindToResource(o.GroupVersionKind())
	return c.resource(gvr, o.GetNamespace())
}

// Describe names an object as changes do: "Kind namespace/name".
func Describe(o *unstructured.Unstructured) string {
	if ns := o.GetNamespace(); ns != "" {
		return o.GetKind() + " " + ns + "/" + o.GetName()
	}
	return o.GetKind() + " " + o.GetName()
}

// Apply creates or updates objs in order with server-side apply, taking
// over any field another manager set (force), and returns what changed:
// an object the server already held exactly so is not a change, since an
// apply that changes nothing keeps its resourceVersion.
func Apply(ctx context.Context, rc *rest.Config, objs []*unstructured.Unstructured) ([]stage.Change, error) {
	return run(ctx, rc, objs, false)
}

// Plan says what Apply would change, by a dry run of the same apply.
func Plan(ctx context.Context, rc *rest.Config, objs []*unstructured.Unstructured) ([]stage.Change, error) {
	return run(ctx, rc, objs, true)
}

func run(ctx context.Context, rc *rest.Config, objs []*unstructured.Unstructured, dryRun bool) ([]stage.Change, error) {
	c, err := NewClient(rc)
	if err != nil {
		return nil, err
	}
	var changes []stage.Change
	for _, o := range objs {
		ri := c.resourceFor(o)
		live, err := ri.Get(ctx, o.GetName(), metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			live = nil
		case err != nil:
			return changes, Temporary(fmt.Errorf("get %s: %w", Describe(o), err))
		}
		if dryRun && live == nil {
			// A dry run in a namespace not created yet would fail.
			changes = append(changes, stage.Change("create "+Describe(o)))
			continue
		}
		opts := metav1.ApplyOptions{FieldManager: FieldManager, Force: true}
		if dryRun {
			opts.DryRun = []string{metav1.DryRunAll}
		}
		applied, err := ri.Apply(ctx, o.GetName(), o, opts)
		if apierrors.IsNotFound(err) {
			// An apply creates a missing object: the kind is not served (yet).
			return changes, stage.Temporary(fmt.Errorf("apply %s: the API server does not serve %s yet: %w", Describe(o), o.GroupVersionKind(), err))
		}
		if err != nil {
			return changes, Temporary(fmt.Errorf("apply %s: %w", Describe(o), err))
		}
		switch {
		case live == nil:
			changes = append(changes, stage.Change("create "+Describe(o)))
		case changed(live, applied, dryRun):
			changes = append(changes, stage.Change("update "+Describe(o)))
		}
	}
	return changes, nil
}

// changed compares the object before and after an apply. A real apply
// that changes nothing keeps the resourceVersion; a dry run never stores,
// so there the objects are compared without the bookkeeping an apply may
// touch (managed fields, generation, resourceVersion).
func changed(live, applied *unstructured.Unstructured, dryRun bool) bool {
	if !dryRun {
		return live.GetResourceVersion() != applied.GetResourceVersion()
	}
	strip := func(o *unstructured.Unstructured) map[string]any {
		c := o.DeepCopy()
		c.SetManagedFields(nil)
		c.SetResourceVersion("")
		c.SetGeneration(0)
		return c.Object
	}
	return !equality.Semantic.DeepEqual(strip(live), strip(applied))
}

// Temporary marks what clears by itself as temporary: the API server not
// listening yet, timeouts, overload, and a resource whose API is not
// served yet right after start. Its callers use the cluster admin's
// credentials (admin.conf), which kubeadm's cluster-admins binding always
// allows: a refusal (403) means an API server that has just started and
// has not loaded its RBAC policy yet, the first answer of the init node's
// API server coming back after a power cut (e2e, 2026-11-29).
func Temporary(err error) error {
	var ne net.Error
	switch {
	case utilnet.IsConnectionRefused(err), utilnet.IsProbableEOF(err), errors.As(err, &ne) && ne.Timeout(),
		apierrors.IsForbidden(err),
		apierrors.IsServerTimeout(err), apierrors.IsTimeout(err), apierrors.IsTooManyRequests(err),
		apierrors.IsServiceUnavailable(err), apierrors.IsInternalError(err), meta.IsNoMatchError(err),
		errors.Is(err, context.DeadlineExceeded):
		return stage.Temporary(err)
	}
	return err
}
