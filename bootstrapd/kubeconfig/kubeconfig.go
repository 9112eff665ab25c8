// Package kubeconfig is the stage that gives the configured users the
// cluster's admin kubeconfig, as the reference did by hand after kubeadm
// init:
//
//	mkdir -p $HOME/.kube
//	sudo cp -i /etc/kubernetes/admin.conf $HOME/.kube/config
//	sudo chown $(id -u):$(id -g) $HOME/.kube/config
//
// on control planes only (workers have no admin.conf). It converges: when
// kubeadm rotates admin.conf (kubeadm certs renew), the next boot copies it
// again. root is not given a copy unless listed in users: the image's
// /etc/profile.d/kubeboot-kubeconfig.sh sets KUBECONFIG=/etc/kubernetes/admin.conf
// for root on a node that has one, which is what the reference told root to
// do, and never goes stale.
package kubeconfig

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"

	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/bootstrapd/users"
	"kubeboot.dev/kubeboot/machineconfig"
	"kubeboot.dev/kubeboot/nodepath"
)

// UserFile is where a user's copy goes, relative to the home.
const UserFile = ".kube/config"

// maxSize bounds admin.conf: a kubeconfig with embedded certificates is a
// few KiB.
const maxSize = 1 << 20

// Stage is the kubeconfig stage.
type Stage struct{}

// New returns the kubeconfig stage.
func New() stage.Stage { return Stage{} }

func (Stage) Name() string { return "kubeconfig" }

// Inputs: the users who get a copy, and where.
func (Stage) Inputs(cfg *machineconfig.MachineConfig) any { return cfg.Users }

// Paths lists where the admin kubeconfig is on a node with this config:
// admin.conf (root's, through KUBECONFIG) then each user's copy. Empty on
// a worker.
func Paths(cfg *machineconfig.MachineConfig) []string {
	if cfg.Role == machineconfig.RoleWorker {
		return nil
	}
	out := []string{nodepath.AdminConf}
	for _, u := range cfg.Users {
		out = append(out, path.Join(u.Home, UserFile))
	}
	return out
}

func (s Stage) Plan(_ context.Context, env *stage.Env) ([]stage.Change, error) {
	return s.run(env, false)
}

func (s Stage) Apply(_ context.Context, env *stage.Env) ([]stage.Change, error) {
	return s.run(env, true)
}

func (Stage) run(env *stage.Env, apply bool) ([]stage.Change, error) {
	if len(env.Config.Users) == 0 {
		return nil, nil
	}
	data, err := readAdminConf(env)
	if err != nil {
		return nil, err
	}
	var changes []stage.Change
	for i, u := range env.Config.Users {
		acct, err := users.Lookup(env, u.Name)
		if err != nil {
			return changes, err
		}
		if acct == nil {
			return changes, fmt.Errorf("users[%d] (%s): no such account on the node (the users stage creates it)", i, u.Name)
		}
		c, err := users.SyncFile(env, *acct, UserFile, data, apply)
		changes = append(changes, c...)
		if err != nil {
			return changes, fmt.Errorf("users[%d] (%s): %w", i, u.Name, err)
		}
	}
	return changes, nil
}

func readAdminConf(env *stage.Env) ([]byte, error) {
	f, err := os.Open(env.Path(nodepath.AdminConf))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s does not exist: kubeadm init or join --control-plane writes it, and has not run on this node", nodepath.AdminConf)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", nodepath.AdminConf, err)
	}
	if len(data) > maxSize {
		return nil, fmt.Errorf("%s is larger than %d bytes", nodepath.AdminConf, maxSize)
	}
	return data, nil
}
