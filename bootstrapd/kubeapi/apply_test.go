package kubeapi

import (
	"errors"
	"fmt"
	"syscall"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"kubeboot.dev/kubeboot/bootstrapd/stage"
)

// An API server coming up refuses connections, then may answer 403
// before its RBAC policy is loaded: both pass. A rejected certificate or
// a missing object does not.
func TestTemporary(t *testing.T) {
	secrets := schema.GroupResource{Resource: "secrets"}
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"connection refused", fmt.Errorf("read token: %w", syscall.ECONNREFUSED), true},
		{"forbidden", apierrors.NewForbidden(secrets, "bootstrap-token-abcdef", errors.New("RBAC: not loaded")), true},
		{"service unavailable", apierrors.NewServiceUnavailable("starting"), true},
		{"unauthorized", apierrors.NewUnauthorized("bad certificate"), false},
		{"not found", apierrors.NewNotFound(secrets, "bootstrap-token-abcdef"), false},
		{"invalid", apierrors.NewBadRequest("invalid object"), false},
	} {
		if got := stage.IsTemporary(Temporary(c.err)); got != c.want {
			t.Errorf("%s: temporary = %v, want %v", c.name, got, c.want)
		}
	}
}
