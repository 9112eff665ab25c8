// Package waitready is the last stage of a node's boot: it waits until the
// cluster reports this node Ready and every kube-system pod scheduled on it
// running and ready (the static control-plane pods, kube-proxy, the DNS
// pods that landed here), so that "done" means the node works, not only
// that kubeadm returned.
//
// It reads the API with the node's own credentials: admin.conf on control
// planes, kubelet.conf (the kubelet's client certificate) on workers. The
// Node authorizer lets a node get its own Node object and list pods with a
// spec.nodeName=<itself> field selector, which is all this stage asks.
//
// It converges: on every boot its Plan says what is not ready yet (empty
// when all is), and Apply polls with backoff until that list is empty or
// the step's time limit is up, saying every ReportEvery what it waits for.
// An API server that does not answer yet (the control plane's static pods
// still starting after a reboot) is something to wait for, not an error.
// So, for RefusalGrace, is one that refuses the node's credentials: a
// restarted API server serves before its authorizer's caches are synced
// and forbids everything until they are (seen under QEMU TCG, where the
// init node's API server restarted while this stage waited).
package waitready

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"kubeboot.dev/kubeboot/bootstrapd/backoff"
	"kubeboot.dev/kubeboot/bootstrapd/kubeapi"
	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/machineconfig"
	"kubeboot.dev/kubeboot/nodepath"
)

// Namespace holds the pods the stage waits for.
const Namespace = "kube-system"

const (
	// maxPods bounds one list: a node runs a handful of kube-system pods.
	maxPods = 500
	// maxMessage bounds a condition message quoted in a reason.
	maxMessage = 160
)

// Stage is the wait-ready stage.
type Stage struct {
	// PollMin and PollMax bound the wait between checks: it starts at
	// PollMin and doubles up to PollMax.
	PollMin, PollMax time.Duration
	// ReportEvery is how often Apply says what it still waits for.
	ReportEvery time.Duration
	// RefusalGrace is how long Apply waits while the API server refuses
	// the node's credentials before it fails.
	RefusalGrace time.Duration
}

// New returns the wait-ready stage: checks 1 s apart at first, at most
// 5 s apart, a report every 15 s; 5 minutes of refused credentials fail.
func New() stage.Stage {
	return &Stage{PollMin: time.Second, PollMax: 5 * time.Second, ReportEvery: 15 * time.Second, RefusalGrace: 5 * time.Minute}
}

func (*Stage) Name() string { return "wait-ready" }

// Inputs: the node's name and role (which credentials it reads).
func (*Stage) Inputs(cfg *machineconfig.MachineConfig) any {
	return struct {
		NodeName string
		Role     machineconfig.Role
	}{cfg.Kubernetes.NodeName, cfg.Role}
}

// Credentials is the kubeconfig the node reads the API with: admin.conf
// on control planes, the kubelet's kubelet.conf on workers.
func Credentials(cfg *machineconfig.MachineConfig) string {
	if cfg.Role == machineconfig.RoleWorker {
		return nodepath.KubeletConf
	}
	return nodepath.AdminConf
}

// Plan lists what is not ready yet, changing nothing.
func (s *Stage) Plan(ctx context.Context, env *stage.Env) ([]stage.Change, error) {
	cs, err := client(env)
	if err != nil {
		return nil, err
	}
	waiting, _ := check(ctx, cs, env.Config.Kubernetes.NodeName)
	return changes(waiting), nil
}

// Apply waits until nothing is left to wait for, or ctx ends.
func (s *Stage) Apply(ctx context.Context, env *stage.Env) ([]stage.Change, error) {
	cs, err := client(env)
	if err != nil {
		return nil, err
	}
	node := env.Config.Kubernetes.NodeName
	started := time.Now()
	pause := backoff.New(s.PollMin, s.PollMax)
	var reported, refusedSince time.Time
	for {
		waiting, refused := check(ctx, cs, node)
		switch {
		case refused == nil:
			refusedSince = time.Time{}
		case refusedSince.IsZero():
			refusedSince = time.Now()
		case time.Since(refusedSince) >= s.RefusalGrace:
			return nil, fmt.Errorf("the API server has refused the node's credentials for %s: %w", time.Since(refusedSince).Round(time.Second), refused)
		}
		if len(waiting) == 0 {
			env.Log.Info("node ready", "node", node, "waited", time.Since(started).Round(time.Second).String())
			return nil, nil
		}
		summary := fmt.Sprintf("waiting %s: %s", time.Since(started).Round(time.Second), strings.Join(waiting, "; "))
		if reported.IsZero() || time.Since(reported) >= s.ReportEvery {
			env.Report(summary)
			env.Log.Info("waiting for the node to be ready", "node", node, "for", strings.Join(waiting, "; "))
			reported = time.Now()
		}
		if pause.Wait(ctx) != nil {
			return nil, fmt.Errorf("node %s not ready after %s: %s", node, time.Since(started).Round(time.Second), strings.Join(waiting, "; "))
		}
	}
}

func changes(waiting []string) []stage.Change {
	var out []stage.Change
	for _, w := range waiting {
		out = append(out, stage.Change("not ready yet: "+w))
	}
	return out
}

// client reads the node's credentials.
func client(env *stage.Env) (*kubeapi.Client, error) {
	rc, err := kubeapi.Config(env, Credentials(env.Config), "wait-ready")
	if err != nil {
		return nil, err
	}
	return kubeapi.NewClient(rc)
}

// check lists what is not ready: the node, then each kube-system pod bound
// to it. An API server that cannot be reached, is not serving yet or
// refuses the credentials is listed as a reason to wait; a refusal is
// also returned as refused, for Apply to bound.
func check(ctx context.Context, cs *kubeapi.Client, node string) (waiting []string, refused error) {
	rctx, cancel := context.WithTimeout(ctx, kubeapi.RequestTimeout)
	defer cancel()
	n := &corev1.Node{}
	err := cs.Get(rctx, kubeapi.Nodes, "", node, n)
	switch {
	case apierrors.IsNotFound(err):
		return []string{fmt.Sprintf("node %s is not registered yet", node)}, nil
	case err != nil:
		return notAnswered(err)
	}
	if ok, why := NodeReady(n); !ok {
		waiting = append(waiting, fmt.Sprintf("node %s is not Ready (%s)", node, why))
	}
	pods := &corev1.PodList{}
	if err := cs.List(rctx, kubeapi.Pods, Namespace, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node, Limit: maxPods}, pods); err != nil {
		return notAnswered(err)
	}
	items := pods.Items
	slices.SortFunc(items, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	for i := range items {
		if why := PodWaiting(&items[i]); why != "" {
			waiting = append(waiting, fmt.Sprintf("pod %s/%s %s", Namespace, items[i].Name, why))
		}
	}
	return waiting, nil
}

// notAnswered is the reason to wait for a request the API server did not
// answer, and whether that was a refusal of the credentials.
func notAnswered(err error) (waiting []string, refused error) {
	if apierrors.IsUnauthorized(err) || apierrors.IsForbidden(err) {
		return []string{"the API server refuses the node's credentials: " + short(err.Error())}, err
	}
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		return []string{fmt.Sprintf("the API server answers %d: %s", status.Status().Code, short(status.Status().Message))}, nil
	}
	return []string{"the API server cannot be reached: " + short(err.Error())}, nil
}

// NodeReady reports whether n's Ready condition is true and, when not,
// why.
func NodeReady(n *corev1.Node) (bool, string) {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			if c.Status == corev1.ConditionTrue {
				return true, ""
			}
			return false, strings.TrimSuffix(c.Reason+": "+short(c.Message), ": ")
		}
	}
	return false, "the kubelet has not reported yet"
}

// PodWaiting says why p is not running and ready, or "" when it is (or
// has completed, or is going away).
func PodWaiting(p *corev1.Pod) string {
	if p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded {
		return ""
	}
	var reasons []string
	for _, cs := range append(slices.Clone(p.Status.InitContainerStatuses), p.Status.ContainerStatuses...) {
		if w := cs.State.Waiting; w != nil && w.Reason != "" && !slices.Contains(reasons, w.Reason) {
			reasons = append(reasons, w.Reason)
		}
	}
	detail := ""
	if len(reasons) > 0 {
		detail = " (" + strings.Join(reasons, ", ") + ")"
	}
	if p.Status.Phase != corev1.PodRunning {
		return fmt.Sprintf("is %s%s", orUnknown(string(p.Status.Phase)), detail)
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return ""
		}
	}
	return "is running but not ready" + detail
}

func orUnknown(s string) string {
	if s == "" {
		return "Unknown"
	}
	return s
}

func short(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > maxMessage {
		return s[:maxMessage] + "..."
	}
	return s
}
