package kubeapi

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
)

// Resources bootstrapd reads and writes.
var (
	Nodes   = schema.GroupVersionResource{Version: "v1", Resource: "nodes"}
	Pods    = schema.GroupVersionResource{Version: "v1", Resource: "pods"}
	Secrets = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}
)

// Client reads and writes typed objects (k8s.io/api structs) through
// client-go's dynamic client. Not client-go's clientset: its scheme
// registers every API group when the program starts, about 10 MiB of
// resident memory for a daemon that reads Nodes, Pods and a Secret.
type Client struct{ dyn dynamic.Interface }

// NewClient makes a Client for rc.
func NewClient(rc *rest.Config) (*Client, error) {
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	return &Client{dyn: dyn}, nil
}

func (c *Client) resource(gvr schema.GroupVersionResource, ns string) dynamic.ResourceInterface {
	if ns == "" {
		return c.dyn.Resource(gvr)
	}
	return c.dyn.Resource(gvr).Namespace(ns)
}

// Get reads the object ns/name (ns "" for cluster-scoped) into into, a
// pointer to its k8s.io/api type. API errors keep their type
// (apierrors.IsNotFound works).
func (c *Client) Get(ctx context.Context, gvr schema.GroupVersionResource, ns, name string, into any) error {
	u, err := c.resource(gvr, ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	return fromUnstructured(u.Object, into)
}

// List reads the objects matching opts into into, a pointer to the list
// type (corev1.PodList).
func (c *Client) List(ctx context.Context, gvr schema.GroupVersionResource, ns string, opts metav1.ListOptions, into any) error {
	u, err := c.resource(gvr, ns).List(ctx, opts)
	if err != nil {
		return err
	}
	return fromUnstructured(u.UnstructuredContent(), into)
}

// Create creates obj (its TypeMeta set) in ns.
func (c *Client) Create(ctx context.Context, gvr schema.GroupVersionResource, ns string, obj any) error {
	u, err := toUnstructured(obj)
	if err != nil {
		return err
	}
	_, err = c.resource(gvr, ns).Create(ctx, u, metav1.CreateOptions{FieldManager: FieldManager})
	return err
}

// Update replaces obj (read with Get, its TypeMeta set) in ns.
func (c *Client) Update(ctx context.Context, gvr schema.GroupVersionResource, ns string, obj any) error {
	u, err := toUnstructured(obj)
	if err != nil {
		return err
	}
	_, err = c.resource(gvr, ns).Update(ctx, u, metav1.UpdateOptions{FieldManager: FieldManager})
	return err
}

func fromUnstructured(m map[string]any, into any) error {
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(m, into); err != nil {
		return fmt.Errorf("decode %T: %w", into, err)
	}
	return nil
}

func toUnstructured(obj any) (*unstructured.Unstructured, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, fmt.Errorf("encode %T: %w", obj, err)
	}
	return &unstructured.Unstructured{Object: m}, nil
}
