package users

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"

	"kubeboot.dev/kubeboot/bootstrapd/stage"
)

// FileMode and DirMode are the modes of what SyncFile puts into a home:
// what bootstrapd installs there is a credential (a kubeconfig, SSH keys).
const (
	FileMode fs.FileMode = 0o600
	DirMode  fs.FileMode = 0o700
)

// SyncFile makes ~/rel (rel like ".kube/config": one directory and a
// file) hold data, mode 0600, in a directory of mode 0700, both owned by
// acct; with apply false it only lists what it would change. The content
// is never quoted in changes or errors.
//
// The home belongs to the user, who may have planted a symlink where the
// directory or the file goes: every access goes through an os.Root opened
// at the home, so nothing resolves outside it, a symlink in place of the
// directory is an error, and the file is replaced by renaming a new one
// over it (never written through), with owner and mode set on the open
// file descriptor.
func SyncFile(env *stage.Env, acct Account, rel string, data []byte, apply bool) ([]stage.Change, error) {
	dir, name := path.Split(rel)
	dir = path.Clean(dir)
	if dir == "." || path.Dir(dir) != "." || name == "" || !fs.ValidPath(rel) {
		return nil, fmt.Errorf("%q is not a directory and a file name under a home", rel)
	}
	shown := path.Join(acct.Home, rel)
	change := func(format string, a ...any) stage.Change {
		return stage.Change(acct.Name + ": " + fmt.Sprintf(format, a...))
	}
	root, err := os.OpenRoot(env.Path(acct.Home))
	if errors.Is(err, fs.ErrNotExist) && !apply {
		return []stage.Change{change("install %s (home %s does not exist yet)", shown, acct.Home)}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("home of %s: %w", acct.Name, err)
	}
	defer root.Close()

	var changes []stage.Change
	created := false
	info, err := root.Lstat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		changes = append(changes, change("create %s (%04o)", path.Join(acct.Home, dir), DirMode))
		if !apply {
			return append(changes, change("install %s (%04o)", shown, FileMode)), nil
		}
		if err := root.Mkdir(dir, DirMode); err != nil {
			return changes, err
		}
		created = true
	case err != nil:
		return nil, err
	case !info.IsDir():
		return nil, fmt.Errorf("%s is not a directory (a %s); move it away and bootstrapd installs %s", path.Join(acct.Home, dir), info.Mode().Type(), shown)
	}
	d, err := root.Open(dir)
	if err != nil {
		return changes, err
	}
	defer d.Close()
	c, err := syncOwnerMode(d, acct, DirMode, apply)
	if !created { // a new directory's owner and mode are part of "create"
		for _, s := range c {
			changes = append(changes, change("%s %s", path.Join(acct.Home, dir), s))
		}
	}
	if err != nil {
		return changes, err
	}

	same, err := sameContent(root, rel, data)
	if err != nil {
		return changes, err
	}
	if !same {
		changes = append(changes, change("install %s (%04o)", shown, FileMode))
		if apply {
			if err := replace(root, d, dir, name, data, acct); err != nil {
				return changes, fmt.Errorf("install %s: %w", shown, err)
			}
		}
		return changes, nil
	}
	f, err := root.Open(rel)
	if err != nil {
		return changes, err
	}
	defer f.Close()
	c, err = syncOwnerMode(f, acct, FileMode, apply)
	for _, s := range c {
		changes = append(changes, change("%s %s", shown, s))
	}
	return changes, err
}

// sameContent reports whether rel is a regular file holding exactly data;
// it reads at most one byte more than data.
func sameContent(root *os.Root, rel string, data []byte) (bool, error) {
	info, err := root.Lstat(rel)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !info.Mode().IsRegular() || info.Size() != int64(len(data)) {
		return false, nil
	}
	f, err := root.Open(rel)
	if err != nil {
		return false, err
	}
	defer f.Close()
	cur, err := io.ReadAll(io.LimitReader(f, int64(len(data))+1))
	if err != nil {
		return false, err
	}
	return bytes.Equal(cur, data), nil
}

// syncOwnerMode compares, and with apply sets, the owner and mode of an
// open file; it returns the changes in words ("owner 0:0 -> 1000:1000").
func syncOwnerMode(f *os.File, acct Account, mode fs.FileMode, apply bool) ([]string, error) {
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	var out []string
	if uid, gid := owner(info); uid != acct.UID || gid != acct.GID {
		out = append(out, fmt.Sprintf("owner %d:%d -> %d:%d", uid, gid, acct.UID, acct.GID))
		if apply {
			if err := f.Chown(acct.UID, acct.GID); err != nil {
				return out, err
			}
		}
	}
	if info.Mode().Perm() != mode {
		out = append(out, fmt.Sprintf("mode %04o -> %04o", info.Mode().Perm(), mode))
		if apply {
			if err := f.Chmod(mode); err != nil {
				return out, err
			}
		}
	}
	return out, nil
}

// replace writes data to a new file in dir and renames it over dir/name,
// so a reader sees the old or the new file, never half of one.
func replace(root *os.Root, d *os.File, dir, name string, data []byte, acct Account) error {
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return err
	}
	tmp := path.Join(dir, "."+name+".tmp-"+hex.EncodeToString(rnd[:]))
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, FileMode)
	if err != nil {
		return err
	}
	defer root.Remove(tmp) // fails harmlessly after the rename
	err = errors.Join(f.Chown(acct.UID, acct.GID), f.Chmod(FileMode))
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := root.Rename(tmp, path.Join(dir, name)); err != nil {
		return err
	}
	return d.Sync()
}
