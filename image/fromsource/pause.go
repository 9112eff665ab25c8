package fromsource

import (
	"context"
	_ "embed"
	"os"
	"path/filepath"

	"kubeboot.dev/kubeboot/image/lock"
)

// pauseSource is kubeboot's own pause program (pause/pause.c).
//
//go:embed pause/pause.c
var pauseSource []byte

// buildPause compiles pause.c statically with gcc, stamping version (the
// pause image tag kubeadm expects, e.g. 3.10.2).
func (b *Builder) buildPause(ctx context.Context, version string) (lock.File, error) {
	dir := filepath.Join(b.Cache.Dir, "build", "pause-"+version)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return lock.File{}, err
	}
	src := filepath.Join(dir, "pause.c")
	if err := os.WriteFile(src, pauseSource, 0o644); err != nil {
		return lock.File{}, err
	}
	out := filepath.Join(dir, "pause")
	if err := b.run(ctx, dir, "gcc pause", nil, "gcc", "-Os", "-Wall", "-Werror", "-static",
		"-ffile-prefix-map="+dir+"=.", `-DVERSION="`+version+`"`, "-o", out, src); err != nil {
		return lock.File{}, err
	}
	if err := b.run(ctx, dir, "strip pause", nil, "strip", out); err != nil {
		return lock.File{}, err
	}
	sha, _, err := b.Cache.PutFile(out, "")
	if err != nil {
		return lock.File{}, err
	}
	st, err := os.Stat(out)
	if err != nil {
		return lock.File{}, err
	}
	return lock.File{Name: "pause", Kind: lock.KindBinary, Version: version, Source: "gcc:image/fromsource/pause/pause.c", SHA256: sha, Size: st.Size()}, nil
}
