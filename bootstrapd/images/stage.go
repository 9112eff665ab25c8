// Package images is the stage that makes sure the pinned container images
// are in containerd for the kubelet, pinned, and never pulled:
//
//   - the image builder prepares containerd's store at build time with
//     Import (image/store), so on a fresh node every image is already
//     there and this stage changes nothing;
//   - on every boot it checks each image of the baked index
//     (/usr/share/kubeboot/images/index) in namespace k8s.io: the tag points
//     at the locked manifest digest, the digest and ID references exist,
//     every reference is labelled pinned and managed, and the layers are
//     unpacked for the overlayfs snapshotter;
//   - what is missing is imported from the baked archive (checked against
//     the locked digest first); an image of the same name with another
//     digest is an error, never overwritten.
//
// The stage reads no part of the machine config: its input is the baked
// index, which changes only with the image.
package images

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"

	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/machineconfig"
	"kubeboot.dev/kubeboot/nodepath"
)

// Bounds of one run: reading containerd's state is quick; one import of
// the largest archive takes about 15 s under TCG emulation.
const (
	verifyTimeout = 30 * time.Second
	importTimeout = 10 * time.Minute
)

// Stage is the images stage.
type Stage struct{}

// New returns the images stage.
func New() stage.Stage { return Stage{} }

func (Stage) Name() string { return "images" }

// Inputs is nil: the stage reads nothing from the machine config.
func (Stage) Inputs(*machineconfig.MachineConfig) any { return nil }

// Validate checks, without containerd, that the baked index is readable
// and every archive it names is there.
func (Stage) Validate(_ context.Context, env *stage.Env) error {
	entries, err := ReadIndex(env.Root)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if st, err := os.Stat(ArchivePath(env.Root, e)); err != nil || !st.Mode().IsRegular() {
			errs = append(errs, fmt.Errorf("%s: archive %s/%s is missing from the image", e.Ref, nodepath.ImagesDir, e.File))
		}
	}
	return errors.Join(errs...)
}

func (s Stage) Plan(ctx context.Context, env *stage.Env) ([]stage.Change, error) {
	return s.run(ctx, env, false)
}

func (s Stage) Apply(ctx context.Context, env *stage.Env) ([]stage.Change, error) {
	return s.run(ctx, env, true)
}

func (Stage) run(ctx context.Context, env *stage.Env, apply bool) ([]stage.Change, error) {
	entries, err := ReadIndex(env.Root)
	if err != nil {
		return nil, err
	}
	c, err := Connect(ctx, env.Path(nodepath.ContainerdSocket))
	if err != nil {
		return nil, stage.Temporary(err)
	}
	defer c.Close()
	sts, err := verify(ctx, c, entries)
	if err != nil {
		return nil, err
	}
	// A wrong image anywhere stops the stage before it changes anything.
	if err := Mismatches(sts); err != nil {
		return nil, err
	}
	var (
		changes []stage.Change
		todo    []Status
		errs    []error
	)
	for _, st := range sts {
		if st.OK() {
			continue
		}
		changes = append(changes, stage.Change(fmt.Sprintf("import %s (%s) from %s/%s: %s", st.Ref, st.Digest, nodepath.ImagesDir, st.File, st.Missing())))
		// Every archive needed is checked before the first import.
		errs = append(errs, CheckArchive(st.Entry, ArchivePath(env.Root, st.Entry)))
		todo = append(todo, st)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if !apply {
		return changes, nil
	}
	for _, st := range todo {
		start := time.Now()
		ictx, cancel := context.WithTimeout(ctx, importTimeout)
		err := Import(ictx, c, st.Entry, ArchivePath(env.Root, st.Entry))
		cancel()
		if err != nil {
			return changes, unavailableIsTemporary(err)
		}
		env.Log.Info("image imported", "ref", st.Ref, "digest", st.Digest, "seconds", time.Since(start).Round(time.Millisecond).Seconds())
	}
	if len(todo) > 0 {
		// What was imported must now check out.
		sts, err := verify(ctx, c, entries)
		if err != nil {
			return changes, err
		}
		for _, st := range sts {
			if !st.OK() {
				return changes, fmt.Errorf("%s is still not ready after its import: %s", st.Ref, st.Missing())
			}
		}
	}
	return changes, nil
}

func verify(ctx context.Context, c *client.Client, entries []Entry) ([]Status, error) {
	ctx, cancel := context.WithTimeout(ctx, verifyTimeout)
	defer cancel()
	sts, err := Verify(ctx, c, entries)
	return sts, unavailableIsTemporary(err)
}

// unavailableIsTemporary marks errors of a containerd that went away
// (restarting) as worth retrying.
func unavailableIsTemporary(err error) error {
	if errdefs.IsUnavailable(err) {
		return stage.Temporary(err)
	}
	return err
}

// VerifyNode is Verify for the node at root (the index under root,
// containerd's socket under root): what `bootstrapd verify` and the
// end-to-end tests report.
func VerifyNode(ctx context.Context, root string) ([]Status, error) {
	entries, err := ReadIndex(root)
	if err != nil {
		return nil, err
	}
	c, err := Connect(ctx, (&stage.Env{Root: root}).Path(nodepath.ContainerdSocket))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return Verify(ctx, c, entries)
}
