// Package kubeadm is the node's entry into the cluster, once in its life:
// `kubeadm init` on the init node (stage kubeadm-init), `kubeadm join` on
// the others (kubeadm-join, with --control-plane settings on control
// planes). Each attempt:
//
//  1. clears what an earlier, interrupted attempt left (kubeadm reset), so a
//     retry or a boot after a power cut starts clean;
//  2. on control planes, installs the cluster CAs from the config's secrets
//     into /etc/kubernetes/pki, so every control plane shares them and
//     nobody runs upload-certs;
//  3. on joining nodes, clears what a previous life of this node left in
//     the cluster (bootstrapd/rejoin);
//  4. renders kubeadm's config (bootstrapd/kubeadmconfig) 0600 into the
//     stage's state directory;
//  5. runs kubeadm's preflight phase itself and judges its findings (see
//     Judge): kubeadm then runs with the preflight phase skipped;
//  6. runs kubeadm, every line of its output to the journal with the
//     secrets masked, the last lines kept in kubeadm.log for status.
//
// A failed kubeadm is reset and the attempt reported as temporary, so the
// engine retries it within the step's limits.
package kubeadm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"kubeboot.dev/kubeboot/bootstrapd/backoff"
	"kubeboot.dev/kubeboot/bootstrapd/cri"
	"kubeboot.dev/kubeboot/bootstrapd/kubeadmconfig"
	"kubeboot.dev/kubeboot/bootstrapd/rejoin"
	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/clustersecrets"
	"kubeboot.dev/kubeboot/machineconfig"
	"kubeboot.dev/kubeboot/nodepath"
)

// Paths on the node.
const (
	// Binary is the image's kubeadm, run on the machine itself.
	Binary = "/usr/bin/kubeadm"
	// succeededFile, in the state directory, marks a kubeadm run that
	// returned 0: a power cut between it and the engine's record must not
	// make the next boot reset a working node.
	succeededFile = "succeeded"
)

// Stage runs kubeadm init or join.
type Stage struct {
	name string
	join bool
	// bin is the kubeadm to run; tests point it at the cached build.
	bin string
	// rejoin reaches what a rebuilt control plane needs (kubeadm-join).
	rejoin rejoin.Options
}

// Init is the kubeadm-init stage of the init node.
func Init() stage.Stage { return &Stage{name: "kubeadm-init", bin: Binary} }

// Join is the kubeadm-join stage of control-plane and worker nodes.
func Join() stage.Stage { return &Stage{name: "kubeadm-join", join: true, bin: Binary} }

func (s *Stage) Name() string { return s.name }

// Inputs: what goes into kubeadm's config, the node's name and addresses,
// and the credentials. It runs once, so a later change is reported, not
// applied (reflash the node).
func (s *Stage) Inputs(cfg *machineconfig.MachineConfig) any {
	return struct {
		Role     machineconfig.Role
		Hostname string
		K8s      machineconfig.Kubernetes
	}{cfg.Role, cfg.Hostname, cfg.Kubernetes}
}

// Validate checks that the image's kubeadm is the version the config names:
// kubeadm would otherwise fail late, or set up another version.
func (s *Stage) Validate(ctx context.Context, env *stage.Env) error {
	out, err := exec.CommandContext(ctx, s.bin, "version", "-o", "short").Output()
	if err != nil {
		return fmt.Errorf("run %s version: %w", s.bin, err)
	}
	if got := strings.TrimSpace(string(out)); got != env.Config.Kubernetes.Version {
		return fmt.Errorf("kubernetes.version is %s but the image's kubeadm is %s: use an image built for %s, or set kubernetes.version: %s", env.Config.Kubernetes.Version, got, env.Config.Kubernetes.Version, got)
	}
	return nil
}

// Plan says what Apply would do, reading only.
func (s *Stage) Plan(ctx context.Context, env *stage.Env) ([]stage.Change, error) {
	if s.succeeded(env) {
		return nil, nil
	}
	var c []stage.Change
	if leftovers(env) != "" {
		c = append(c, stage.Change("kubeadm reset: "+leftovers(env)))
	}
	if secrets := s.pkiSecrets(env.Config); secrets != nil {
		c = append(c, stage.Change("install the cluster CAs into "+nodepath.PKIDir))
	}
	return append(c, stage.Change(s.command(env.Config))), nil
}

func (s *Stage) command(cfg *machineconfig.MachineConfig) string {
	switch {
	case !s.join:
		return "kubeadm init (endpoint " + cfg.Kubernetes.ControlPlaneEndpoint + ")"
	case cfg.Role == machineconfig.RoleControlPlane:
		return "kubeadm join --control-plane " + cfg.Kubernetes.ControlPlaneEndpoint
	default:
		return "kubeadm join " + cfg.Kubernetes.ControlPlaneEndpoint
	}
}

func (s *Stage) Apply(ctx context.Context, env *stage.Env) ([]stage.Change, error) {
	if s.succeeded(env) {
		return nil, nil
	}
	cfg := env.Config
	creds := &cfg.Kubernetes.Credentials
	out := newOutput(env.Log, secretValues(cfg))
	defer func() {
		if err := out.Save(filepath.Join(env.StateDir, LogFile)); err != nil {
			env.Log.Warn("could not keep kubeadm's output", "err", err)
		}
	}()
	var changes []stage.Change

	if why := leftovers(env); why != "" {
		if err := s.reset(ctx, env, out); err != nil {
			return changes, err
		}
		changes = append(changes, stage.Change("kubeadm reset: "+why))
	}
	if secrets := s.pkiSecrets(cfg); secrets != nil {
		written, err := clustersecrets.InstallPKI(env.Path(nodepath.PKIDir), secrets)
		if err != nil {
			return changes, fmt.Errorf("install the cluster CAs into %s: %w", nodepath.PKIDir, err)
		}
		if len(written) > 0 {
			changes = append(changes, stage.Change(fmt.Sprintf("install the cluster CAs into %s (%s)", nodepath.PKIDir, strings.Join(written, ", "))))
		}
	}
	if s.join {
		evicted, err := waitWhileTemporary(ctx, env, prepareWaitMin, prepareWaitMax, func() ([]stage.Change, error) {
			return rejoin.Prepare(ctx, env, s.rejoin)
		})
		changes = append(changes, evicted...)
		if err != nil {
			return changes, err
		}
	}

	rendered, err := kubeadmconfig.Render(cfg, kubeadmconfig.Inputs{
		Token:           creds.JoinToken(),
		TokenTTL:        creds.TokenLifetime(),
		CACertHashes:    creds.DiscoveryHashes(),
		CertificateKey:  creds.CertificateKey,
		CAsPreinstalled: s.pkiSecrets(cfg) != nil,
		Dir:             nodePath(env, env.StateDir),
	})
	if err != nil {
		return changes, err
	}
	if err := rendered.Write(env.Root); err != nil {
		return changes, fmt.Errorf("write kubeadm's config: %w", err)
	}
	env.Log.Info("kubeadm config rendered", "path", rendered.ConfigPath())
	config := env.Path(rendered.ConfigPath())

	verb := []string{"init"}
	if s.join {
		verb = []string{"join"}
	}
	if err := s.preflight(ctx, env, out, verb, config); err != nil {
		return changes, err
	}
	args := append(verb, "--config", config)
	out.Mark("kubeadm %s", strings.Join(args, " "))
	if err := s.run(ctx, out, args...); err != nil {
		last := strings.Join(out.Tail(5), "\n")
		if rerr := s.reset(ctx, env, out); rerr != nil {
			env.Log.Warn("kubeadm reset after the failure failed too; the next attempt resets first", "err", rerr)
		}
		return changes, stage.Temporary(fmt.Errorf("kubeadm %s failed: %w; its last lines:\n%s", verb[0], err, last))
	}
	if err := os.WriteFile(filepath.Join(env.StateDir, succeededFile), []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o600); err != nil {
		return changes, err
	}
	return append(changes, stage.Change(s.command(cfg))), nil
}

// preflight runs kubeadm's preflight phase and fails on any finding
// nobody vouched for (Judge).
func (s *Stage) preflight(ctx context.Context, env *stage.Env, out *output, verb []string, config string) error {
	args := append(append([]string{}, verb...), "phase", "preflight", "--config", config)
	out.Mark("kubeadm %s", strings.Join(args, " "))
	runErr := s.run(ctx, out, args...)
	v := Judge(ParsePreflight(out.Output()), env.Data.Firewall, env.Config.Kubernetes.IgnorePreflightErrors)
	if err := v.save(filepath.Join(env.StateDir, PreflightFile)); err != nil {
		return err
	}
	for _, f := range v.Dropped {
		env.Log.Info("kubeadm preflight: dropped a warning the firewall stage has verified: the ports it names are open", "warning", f.String(), "open", strings.Join(env.Data.Firewall.Open, ","))
	}
	for _, f := range v.Accepted {
		env.Log.Warn("kubeadm preflight: passed on as the config asks (kubernetes.ignorePreflightErrors)", "finding", f.String())
	}
	if len(v.Fatal) > 0 {
		var lines []string
		for _, f := range v.Fatal {
			lines = append(lines, f.String())
		}
		return fmt.Errorf("kubeadm preflight found %d problem(s) on this node:\n  %s\nfix them, or list the check in kubernetes.ignorePreflightErrors", len(v.Fatal), strings.Join(lines, "\n  "))
	}
	if runErr != nil {
		return fmt.Errorf("kubeadm %s phase preflight: %w", verb[0], runErr)
	}
	return nil
}

// pkiSecrets are the secrets to install on a control plane, or nil (a
// worker, or a cluster whose init node makes its own CAs).
func (s *Stage) pkiSecrets(cfg *machineconfig.MachineConfig) *machineconfig.ClusterSecrets {
	if !cfg.Role.IsControlPlane() {
		return nil
	}
	secrets := cfg.Kubernetes.Credentials.ClusterSecrets()
	if secrets == nil || secrets.CA.Key == "" {
		return nil
	}
	return secrets
}

func (s *Stage) succeeded(env *stage.Env) bool {
	_, err := os.Stat(filepath.Join(env.StateDir, succeededFile))
	return err == nil
}

// run runs kubeadm with args, its output into out. Cancelling ctx stops it
// with SIGTERM, then SIGKILL.
func (s *Stage) run(ctx context.Context, out *output, args ...string) error {
	cmd := exec.CommandContext(ctx, s.bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 30 * time.Second
	return cmd.Run()
}

// reset undoes a kubeadm init or join: static pods, kubelet config, etcd
// data, certificates. The CAs are installed again by the next attempt.
// kubeadm reset stops the kubelet but only warns when the runtime is slow
// to answer its container cleanup (seen under TCG); the pods are then
// removed here, with room for a slow runtime, so that the next attempt
// finds its ports free.
func (s *Stage) reset(ctx context.Context, env *stage.Env, out *output) error {
	out.Mark("kubeadm reset --force")
	if err := s.run(ctx, out, "reset", "--force", "--cri-socket", kubeadmconfig.CRISocket); err != nil {
		return fmt.Errorf("kubeadm reset: %w", err)
	}
	conn, err := cri.Dial(env.Path(nodepath.ContainerdSocket))
	if err != nil {
		return err
	}
	defer conn.Close()
	n, err := cri.RemovePods(ctx, conn, podRemoveTimeout)
	if n > 0 {
		fmt.Fprintf(out, "removed %d pods kubeadm reset left running\n", n)
	}
	return err
}

// podRemoveTimeout bounds each runtime call of reset's pod cleanup: under
// TCG starting a pod sandbox took 80 s.
const podRemoveTimeout = 3 * time.Minute

// leftovers says what an interrupted kubeadm left on the node, or "".
func leftovers(env *stage.Env) string {
	for _, p := range []string{nodepath.KubeletConf, "/etc/kubernetes/manifests/kube-apiserver.yaml", "/etc/kubernetes/manifests/etcd.yaml", "/var/lib/etcd/member", "/var/lib/kubelet/config.yaml"} {
		if _, err := os.Stat(env.Path(p)); err == nil {
			return p + " is left from an earlier attempt"
		} else if !errors.Is(err, os.ErrNotExist) {
			return p + ": " + err.Error()
		}
	}
	return ""
}

// secretValues are the strings to mask in kubeadm's output: the token and
// its secret half, and the certificate key.
func secretValues(cfg *machineconfig.MachineConfig) []string {
	creds := &cfg.Kubernetes.Credentials
	token := creds.JoinToken().Reveal()
	values := []string{token, creds.CertificateKey.Reveal()}
	if _, secret, ok := strings.Cut(token, "."); ok {
		values = append(values, secret)
	}
	return values
}

// nodePath is p (under env.Root) as the node sees it.
func nodePath(env *stage.Env, p string) string {
	rel, err := filepath.Rel(env.Root, p)
	if err != nil {
		return p
	}
	return "/" + rel
}

// The pauses between rejoin.Prepare's tries start at prepareWaitMin and
// double up to prepareWaitMax.
const (
	prepareWaitMin = 5 * time.Second
	prepareWaitMax = 30 * time.Second
)

// waitWhileTemporary calls prepare until it succeeds, fails for good, or
// ctx (the step's time limit) ends, pausing from first to most between
// tries and reporting why.
// What a join waits for before kubeadm runs (the control-plane endpoint
// not answering in time, a stale Node still Ready) clears with time: under
// QEMU TCG the init node's API server missed 10 s timeouts for minutes,
// and the three attempts kept for kubeadm itself were gone in 5 minutes.
func waitWhileTemporary(ctx context.Context, env *stage.Env, first, most time.Duration, prepare func() ([]stage.Change, error)) ([]stage.Change, error) {
	var changes []stage.Change
	pause := backoff.New(first, most)
	for {
		c, err := prepare()
		changes = append(changes, c...)
		if err == nil || !stage.IsTemporary(err) {
			return changes, err
		}
		env.Report("waiting before kubeadm join: " + err.Error())
		env.Log.Info("waiting before kubeadm join", "why", err.Error(), "retry in", pause.Next().String())
		if pause.Wait(ctx) != nil {
			return changes, err
		}
	}
}
