package podnetwork

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
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"kubeboot.dev/kubeboot/bootstrapd/stage"
)

// FieldManager owns the fields kubeboot applies (server-side apply).
const FieldManager = "kubeboot"

// client resolves each object's resource through discovery.
type client struct {
	dyn    dynamic.Interface
	mapper meta.RESTMapper
}

func newClient(rc *rest.Config) (*client, error) {
	dc, err := discovery.NewDiscoveryClientForConfig(rc)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	return &client{dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))}, nil
}

func (c *client) resource(o *unstructured.Unstructured) (dynamic.ResourceInterface, error) {
	gvk := o.GroupVersionKind()
	m, err := c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", o.GetKind(), o.GetName(), err)
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		return c.dyn.Resource(m.Resource).Namespace(o.GetNamespace()), nil
	}
	return c.dyn.Resource(m.Resource), nil
}

func describe(o *unstructured.Unstructured) string {
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
	c, err := newClient(rc)
	if err != nil {
		return nil, err
	}
	var changes []stage.Change
	for _, o := range objs {
		ri, err := c.resource(o)
		if err != nil {
			return changes, classify(err)
		}
		live, err := ri.Get(ctx, o.GetName(), metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			live = nil
		case err != nil:
			return changes, classify(fmt.Errorf("get %s: %w", describe(o), err))
		}
		if dryRun && live == nil {
			// A dry run in a namespace not created yet would fail.
			changes = append(changes, stage.Change("create "+describe(o)))
			continue
		}
		opts := metav1.ApplyOptions{FieldManager: FieldManager, Force: true}
		if dryRun {
			opts.DryRun = []string{metav1.DryRunAll}
		}
		applied, err := ri.Apply(ctx, o.GetName(), o, opts)
		if err != nil {
			return changes, classify(fmt.Errorf("apply %s: %w", describe(o), err))
		}
		switch {
		case live == nil:
			changes = append(changes, stage.Change("create "+describe(o)))
		case changed(live, applied, dryRun):
			changes = append(changes, stage.Change("update "+describe(o)))
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

// classify marks what clears by itself as temporary: the API server not
// listening yet, timeouts, overload, and a resource whose API is not
// served yet right after start.
func classify(err error) error {
	var ne net.Error
	switch {
	case utilnet.IsConnectionRefused(err), utilnet.IsProbableEOF(err), errors.As(err, &ne) && ne.Timeout(),
		apierrors.IsServerTimeout(err), apierrors.IsTimeout(err), apierrors.IsTooManyRequests(err),
		apierrors.IsServiceUnavailable(err), apierrors.IsInternalError(err), meta.IsNoMatchError(err),
		errors.Is(err, context.DeadlineExceeded):
		return stage.Temporary(err)
	}
	return err
}
