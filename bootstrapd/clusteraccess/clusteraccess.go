// Package clusteraccess is the init node's stage that keeps what joining
// nodes need from the cluster, on every boot:
//
//   - the bootstrap token of the config (credentials.token, or the
//     cluster secrets'), with which nodes join. kubeadm init creates it;
//     this stage puts it back when someone deleted it, and rotates it when
//     the config's token changes, without an init (its own fingerprint
//     holds only the token and its lifetime). A token with a lifetime is
//     created once and allowed to expire: its expiry is not renewed;
//   - the RBAC that lets a rebuilt control plane find the other control
//     planes and remove its stale Node (clustersecrets.NodeRebuildRBAC).
package clusteraccess

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"kubeboot.dev/kubeboot/atomicfile"
	"kubeboot.dev/kubeboot/bootstrapd/kubeapi"
	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/clustersecrets"
	"kubeboot.dev/kubeboot/machineconfig"
	"kubeboot.dev/kubeboot/nodepath"
)

// Bootstrap token Secrets, as kubeadm and the API server's bootstrap
// authenticator know them (k8s.io/cluster-bootstrap).
const (
	tokenNamespace = "kube-system"
	tokenPrefix    = "bootstrap-token-"
	tokenType      = corev1.SecretType("bootstrap.kubernetes.io/token")
	tokenGroups    = "system:bootstrappers:kubeadm:default-node-token"
)

// createdFile, in the stage's state directory, names the token ids this
// stage (or kubeadm init) has seen created: a token with a lifetime that
// is gone has expired and stays gone.
const createdFile = "tokens-created"

// New returns the cluster-access stage.
func New() stage.Stage { return Stage{} }

// Stage is the cluster-access stage.
type Stage struct{}

func (Stage) Name() string { return "cluster-access" }

// Inputs: the token and its lifetime only.
func (Stage) Inputs(cfg *machineconfig.MachineConfig) any {
	cr := &cfg.Kubernetes.Credentials
	return struct {
		Token machineconfig.Secret
		TTL   string
	}{cr.JoinToken(), cr.TokenTTL}
}

func (s Stage) Plan(ctx context.Context, env *stage.Env) ([]stage.Change, error) {
	return s.run(ctx, env, false)
}

func (s Stage) Apply(ctx context.Context, env *stage.Env) ([]stage.Change, error) {
	return s.run(ctx, env, true)
}

func (s Stage) run(ctx context.Context, env *stage.Env, apply bool) ([]stage.Change, error) {
	rc, err := kubeapi.Config(env, nodepath.AdminConf, s.Name())
	if errors.Is(err, fs.ErrNotExist) && !apply {
		return []stage.Change{"ensure the bootstrap token and the node-rebuild RBAC (after kubeadm init)"}, nil
	}
	if err != nil {
		return nil, stage.Temporary(err)
	}
	changes, err := s.token(ctx, env, rc, apply)
	if err != nil {
		return changes, err
	}
	objs, err := kubeapi.Decode("clustersecrets.NodeRebuildRBAC", strings.NewReader(clustersecrets.NodeRebuildRBAC))
	if err != nil {
		return changes, err
	}
	run := kubeapi.Plan
	if apply {
		run = kubeapi.Apply
	}
	more, err := run(ctx, rc, objs)
	return append(changes, more...), err
}

// token makes the token Secret hold the config's token.
func (s Stage) token(ctx context.Context, env *stage.Env, rc *rest.Config, apply bool) ([]stage.Change, error) {
	cr := &env.Config.Kubernetes.Credentials
	id, secret, ok := strings.Cut(cr.JoinToken().Reveal(), ".")
	if !ok {
		return nil, errors.New("no bootstrap token in the config or its cluster secrets")
	}
	cs, err := kubeapi.NewClient(rc)
	if err != nil {
		return nil, err
	}
	name := tokenPrefix + id
	cur := &corev1.Secret{}
	err = cs.Get(ctx, kubeapi.Secrets, tokenNamespace, name, cur)
	switch {
	case apierrors.IsNotFound(err):
		ttl := cr.TokenLifetime()
		if ttl > 0 && s.seen(env, id) {
			env.Log.Info("the bootstrap token has expired and is not created again; give the config a new token to let nodes join", "token-id", id)
			return nil, nil
		}
		change := stage.Change("create bootstrap token " + id + lifetime(ttl))
		if !apply {
			return []stage.Change{change}, nil
		}
		obj := &corev1.Secret{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: tokenNamespace},
			Type:       tokenType,
			StringData: tokenData(id, secret, ttl),
		}
		if err := cs.Create(ctx, kubeapi.Secrets, tokenNamespace, obj); err != nil {
			return nil, kubeapi.Temporary(fmt.Errorf("create bootstrap token %s: %w", id, err))
		}
		return []stage.Change{change}, s.remember(env, id)
	case err != nil:
		return nil, kubeapi.Temporary(fmt.Errorf("read bootstrap token %s: %w", id, err))
	}
	if apply {
		if err := s.remember(env, id); err != nil {
			return nil, err
		}
	}
	want := tokenData(id, secret, 0)
	delete(want, "description") // kubeadm writes its own
	var differ []string
	for k, v := range want {
		if string(cur.Data[k]) != v {
			differ = append(differ, k)
		}
	}
	if len(differ) == 0 && cur.Type == tokenType {
		return nil, nil
	}
	change := stage.Change(fmt.Sprintf("update bootstrap token %s (%d field(s) differ)", id, len(differ)))
	if !apply {
		return []stage.Change{change}, nil
	}
	if cur.Data == nil {
		cur.Data = map[string][]byte{}
	}
	for k, v := range want {
		cur.Data[k] = []byte(v)
	}
	cur.Type = tokenType
	cur.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"}
	if err := cs.Update(ctx, kubeapi.Secrets, tokenNamespace, cur); err != nil {
		return nil, kubeapi.Temporary(fmt.Errorf("update bootstrap token %s: %w", id, err))
	}
	return []stage.Change{change}, nil
}

// tokenData is the Secret's content (k8s.io/cluster-bootstrap/token/api);
// with ttl > 0 it expires then.
func tokenData(id, secret string, ttl time.Duration) map[string]string {
	d := map[string]string{
		"token-id":                       id,
		"token-secret":                   secret,
		"usage-bootstrap-authentication": "true",
		"usage-bootstrap-signing":        "true",
		"auth-extra-groups":              tokenGroups,
		"description":                    "kubeboot: the bootstrap token of the machine configs",
	}
	if ttl > 0 {
		d["expiration"] = time.Now().Add(ttl).UTC().Format(time.RFC3339)
	}
	return d
}

func lifetime(ttl time.Duration) string {
	if ttl > 0 {
		return " (expires in " + ttl.String() + ")"
	}
	return " (never expires)"
}

// seen reports whether the token id was created before on this node.
func (Stage) seen(env *stage.Env, id string) bool {
	data, _ := os.ReadFile(filepath.Join(env.StateDir, createdFile))
	for _, l := range strings.Split(string(data), "\n") {
		if l == id {
			return true
		}
	}
	return false
}

// remember notes the token id as created.
func (s Stage) remember(env *stage.Env, id string) error {
	if s.seen(env, id) {
		return nil
	}
	p := filepath.Join(env.StateDir, createdFile)
	data, _ := os.ReadFile(p)
	return atomicfile.Write(p, append(data, []byte(id+"\n")...), 0o600, 0o700)
}
