// Package users is the stage that creates the machine config's accounts
// (users[]) and keeps their homes private, and the one place that manages
// what bootstrapd puts into a user's home (the kubeconfig stage's
// ~/.kube/config goes through SyncFile, as do the SSH keys this stage
// writes to ~/.ssh/authorized_keys).
//
// Accounts are made with the image's own tools (useradd from Debian's
// passwd package), so /etc/passwd, shadow, group and gshadow stay
// consistent and locked the way every other tool expects. The image's /home
// is a symlink to var/home (as on Fedora CoreOS), so the default homes
// /home/NAME live on STATE, the node's only writable disk besides /etc.
package users

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/machineconfig"
)

// Shell is the login shell of the accounts the stage creates.
const Shell = "/bin/bash"

// HomeMode is the mode of every configured user's home.
const HomeMode fs.FileMode = 0o700

// useraddTimeout bounds one useradd run (it waits for the passwd lock).
const useraddTimeout = 30 * time.Second

// Stage is the users stage.
type Stage struct{}

// New returns the users stage.
func New() stage.Stage { return Stage{} }

func (Stage) Name() string { return "users" }

// Inputs: the configured users (names, uids, homes after defaults).
func (Stage) Inputs(cfg *machineconfig.MachineConfig) any { return cfg.Users }

// Validate refuses, before anything changes, what useradd would refuse or
// what would leave an account unlike the config: an existing account with
// another uid or home, a uid taken by another account, a home on the
// read-only image, no useradd.
func (Stage) Validate(_ context.Context, env *stage.Env) error {
	db, err := readAccounts(env)
	if err != nil {
		return err
	}
	var errs []error
	for i, u := range env.Config.Users {
		if err := db.conflict(i, u); err != nil {
			errs = append(errs, err)
			continue
		}
		if db.byName[u.Name] != nil {
			continue
		}
		if _, err := exec.LookPath("useradd"); err != nil {
			errs = append(errs, fmt.Errorf("%s: cannot create it: useradd is not installed (Debian package passwd)", who(i, u)))
		}
		if err := writable(env, u.Home); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", who(i, u), err))
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

// run finds, and with apply makes, every change: missing accounts, then
// each home's existence, owner and mode.
func (Stage) run(ctx context.Context, env *stage.Env, apply bool) ([]stage.Change, error) {
	db, err := readAccounts(env)
	if err != nil {
		return nil, err
	}
	// Every conflict first, so that a config with one creates nobody.
	var conflicts []error
	for i, u := range env.Config.Users {
		conflicts = append(conflicts, db.conflict(i, u))
	}
	if err := errors.Join(conflicts...); err != nil {
		return nil, err
	}
	var changes []stage.Change
	for i, u := range env.Config.Users {
		acct := db.byName[u.Name]
		if acct == nil {
			desc := "next free uid"
			if u.UID != nil {
				desc = "uid " + strconv.Itoa(*u.UID)
			}
			changes = append(changes, stage.Change(fmt.Sprintf("create user %s (%s, home %s)", u.Name, desc, u.Home)))
			if !apply {
				continue
			}
			if err := useradd(ctx, env, u, db.groups[u.Name]); err != nil {
				return changes, fmt.Errorf("%s: %w", who(i, u), err)
			}
			if db, err = readAccounts(env); err != nil {
				return changes, err
			}
			if acct = db.byName[u.Name]; acct == nil {
				return changes, fmt.Errorf("%s: useradd succeeded but /etc/passwd has no such account", who(i, u))
			}
		}
		c, err := syncHome(env, *acct, apply)
		changes = append(changes, c...)
		if err != nil {
			return changes, fmt.Errorf("%s: %w", who(i, u), err)
		}
		if len(u.SSHAuthorizedKeys) == 0 {
			continue // a file the user made is theirs
		}
		c, err = SyncFile(env, *acct, AuthorizedKeysFile, AuthorizedKeys(i, u), apply)
		changes = append(changes, c...)
		if err != nil {
			return changes, fmt.Errorf("%s: %w", who(i, u), err)
		}
	}
	return changes, nil
}

// AuthorizedKeysFile is where sshd (AuthorizedKeysFile's default) looks
// for a user's keys, relative to the home.
const AuthorizedKeysFile = ".ssh/authorized_keys"

// AuthorizedKeys is the content of users[i]'s authorized_keys: the
// config's keys, one a line, under a line saying where they come from.
func AuthorizedKeys(i int, u machineconfig.User) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# users[%d].sshAuthorizedKeys of the machine config, written by bootstrapd: edits here are replaced\n", i)
	for _, k := range u.SSHAuthorizedKeys {
		b.WriteString(strings.TrimSpace(k) + "\n")
	}
	return b.Bytes()
}

// who names users[i] in errors.
func who(i int, u machineconfig.User) string { return fmt.Sprintf("users[%d] (%s)", i, u.Name) }

// conflict is why users[i] cannot be made to match the node's accounts.
func (db *accountDB) conflict(i int, u machineconfig.User) error {
	if a := db.byName[u.Name]; a != nil {
		switch {
		case u.UID != nil && a.UID != *u.UID:
			return fmt.Errorf("%s: the account exists on the node with uid %d, the config says uid %d; remove uid from the config or reflash", who(i, u), a.UID, *u.UID)
		case a.Home != u.Home:
			return fmt.Errorf("%s: the account exists on the node with home %s, the config says %s", who(i, u), a.Home, u.Home)
		}
		return nil
	}
	if u.UID != nil {
		if other, taken := db.byUID[*u.UID]; taken {
			return fmt.Errorf("%s: uid %d belongs to the account %s on the node", who(i, u), *u.UID, other)
		}
	}
	return nil
}

// useradd creates u with its home (copied from /etc/skel) and, unless a
// group of that name exists already, a group of its own (gid = uid when
// free). Under a root other than "/" (tests, a mounted image) it edits the
// files there with --prefix instead of the running system's.
func useradd(ctx context.Context, env *stage.Env, u machineconfig.User, groupExists bool) error {
	var args []string
	if root := filepath.Clean(env.Root); root != "/" {
		args = append(args, "--prefix", root)
	}
	args = append(args, "--create-home", "--home-dir", u.Home, "--shell", Shell)
	if u.UID != nil {
		args = append(args, "--uid", strconv.Itoa(*u.UID))
	}
	if groupExists {
		args = append(args, "--gid", u.Name)
	} else {
		args = append(args, "--user-group")
	}
	args = append(args, u.Name)
	ctx, cancel := context.WithTimeout(ctx, useraddTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "useradd", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("useradd %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(tail(out, 1024)))
	}
	env.Log.Info("created user", "user", u.Name, "home", u.Home)
	return nil
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// writable checks that home can be created: its nearest existing ancestor
// is not on a read-only file system (the image's /, /usr, /srv, /opt).
func writable(env *stage.Env, home string) error {
	p := home
	for {
		info, err := os.Stat(env.Path(p))
		if err == nil {
			if !info.IsDir() {
				return fmt.Errorf("home %s: %s is not a directory", home, p)
			}
			var st unix.Statfs_t
			if err := unix.Statfs(env.Path(p), &st); err != nil {
				return fmt.Errorf("home %s: %w", home, err)
			}
			if st.Flags&unix.ST_RDONLY != 0 {
				return fmt.Errorf("home %s: %s is on a read-only file system (on a node only /var and /etc are writable; /home is /var/home): put the home under /home or /var", home, p)
			}
			return nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("home %s: %w", home, err)
		}
		p = filepath.Dir(p)
	}
}

// syncHome makes acct's home an existing directory, mode 0700, owned by
// the account.
func syncHome(env *stage.Env, acct Account, apply bool) ([]stage.Change, error) {
	path := env.Path(acct.Home)
	info, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		c := stage.Change(fmt.Sprintf("%s: create home %s (0700)", acct.Name, acct.Home))
		if !apply {
			return []stage.Change{c}, nil
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, err
		}
		if err := os.Mkdir(path, HomeMode); err != nil {
			return nil, err
		}
		if err := os.Chown(path, acct.UID, acct.GID); err != nil {
			return nil, err
		}
		return []stage.Change{c}, os.Chmod(path, HomeMode)
	}
	if err != nil {
		return nil, err
	}
	if !info.IsDir() {
		return nil, fmt.Errorf("home %s is not a directory", acct.Home)
	}
	var changes []stage.Change
	uid, gid := owner(info)
	if uid != acct.UID || gid != acct.GID {
		changes = append(changes, stage.Change(fmt.Sprintf("%s: home %s owner %d:%d -> %d:%d", acct.Name, acct.Home, uid, gid, acct.UID, acct.GID)))
		if apply {
			if err := os.Chown(path, acct.UID, acct.GID); err != nil {
				return changes, err
			}
		}
	}
	if info.Mode().Perm() != HomeMode {
		changes = append(changes, stage.Change(fmt.Sprintf("%s: home %s mode %04o -> %04o", acct.Name, acct.Home, info.Mode().Perm(), HomeMode)))
		if apply {
			if err := os.Chmod(path, HomeMode); err != nil {
				return changes, err
			}
		}
	}
	return changes, nil
}

func owner(info fs.FileInfo) (uid, gid int) {
	st := info.Sys().(*syscall.Stat_t)
	return int(st.Uid), int(st.Gid)
}
