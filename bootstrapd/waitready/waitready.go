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
}

// New returns the wait-ready stage: checks 1 s apart at first, at most
// 5 s apart, a report every 15 s.
func New() stage.Stage {
	return &Stage{PollMin: time.Second, PollMax: 5 * time.Second, ReportEvery: 15 * time.Second}
}

func (*Stage) Name() string { return "wait-ready" }

// Inputs: the node's name and role (which credentials it reads).
func (*Stage) Inputs(cfg *machineconfig.MachineConfig) any {
	return struct {
		NodeName string
		Role     machineconfig.Role
	}{cfg.Kubernetes.NodeName, cfg.Role}
}

// credentials is the kubeconfig the stage reads the API with on a node
// with this config.
func credentials(cfg *machineconfig.MachineConfig) string {
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
	waiting, err := check(ctx, cs, env.Config.Kubernetes.NodeName)
	return changes(waiting), err
}

// Apply waits until nothing is left to wait for, or ctx ends.
func (s *Stage) Apply(ctx context.Context, env *stage.Env) ([]stage.Change, error) {
	cs, err := client(env)
	if err != nil {
		return nil, err
	}
	node := env.Config.Kubernetes.NodeName
	started := time.Now()
	wait := s.PollMin
	var reported time.Time
	for {
		waiting, err := check(ctx, cs, node)
		if err != nil {
			return nil, err
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
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("node %s not ready after %s: %s", node, time.Since(started).Round(time.Second), strings.Join(waiting, "; "))
		case <-time.After(wait):
		}
		wait = min(wait*2, s.PollMax)
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
	rc, err := kubeapi.Config(env, credentials(env.Config), "wait-ready")
	if err != nil {
		return nil, err
	}
	return kubeapi.NewClient(rc)
}

// check lists what is not ready: the node, then each kube-system pod bound
// to it. An API server that cannot be reached or is not serving yet is
// listed as a reason to wait; an answer that will not change by waiting
// (the credentials are refused) is an error.
func check(ctx context.Context, cs *kubeapi.Client, node string) ([]string, error) {
	rctx, cancel := context.WithTimeout(ctx, kubeapi.RequestTimeout)
	defer cancel()
	n := &corev1.Node{}
	err := cs.Get(rctx, kubeapi.Nodes, "", node, n)
	switch {
	case apierrors.IsNotFound(err):
		return []string{fmt.Sprintf("node %s is not registered yet", node)}, nil
	case err != nil:
		return waitOrFail(err)
	}
	var waiting []string
	if ok, why := nodeReady(n); !ok {
		waiting = append(waiting, fmt.Sprintf("node %s is not Ready (%s)", node, why))
	}
	pods := &corev1.PodList{}
	if err := cs.List(rctx, kubeapi.Pods, Namespace, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node, Limit: maxPods}, pods); err != nil {
		return waitOrFail(err)
	}
	items := pods.Items
	slices.SortFunc(items, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	for i := range items {
		if why := podWaiting(&items[i]); why != "" {
			waiting = append(waiting, fmt.Sprintf("pod %s/%s %s", Namespace, items[i].Name, why))
		}
	}
	return waiting, nil
}

func waitOrFail(err error) ([]string, error) {
	if apierrors.IsUnauthorized(err) || apierrors.IsForbidden(err) {
		return nil, fmt.Errorf("the API server refuses the node's credentials: %w", err)
	}
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		return []string{fmt.Sprintf("the API server answers %d: %s", status.Status().Code, short(status.Status().Message))}, nil
	}
	return []string{"the API server cannot be reached: " + short(err.Error())}, nil
}

func nodeReady(n *corev1.Node) (bool, string) {
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

// podWaiting says why p is not running and ready, or "" when it is (or
// has completed, or is going away).
func podWaiting(p *corev1.Pod) string {
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
