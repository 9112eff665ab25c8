package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"kubeboot.dev/kubeboot/bootstrapd/progress"
)

// powerCut is one point of the first boot at which the power-cut scenario
// pulls the plug: as soon as at holds for this boot's progress. seen is
// when (host clock) the lab first saw each stage running on this boot.
type powerCut struct {
	name string
	at   func(b *progress.Boot, seen map[string]time.Time) (cut, missed bool)
}

// powerCuts are issue 12's points: the host phase under way, stage
// boundaries, and the middle of the kubeadm stage (certificates and static
// pods; later, the API server's objects). The images and network stages
// of a fresh node take under a second (the store is baked, the network
// is three netlink calls): no poll from outside lands inside them, so
// their boundaries stand for them.
var powerCuts = []powerCut{
	{"the host phase under way", func(b *progress.Boot, _ map[string]time.Time) (bool, bool) { return b != nil, false }},
	{"after images", stageEnded("images")},
	{"kubeadm-init running 45 s", stageRunningFor("kubeadm-init", 45*time.Second)},
	{"kubeadm-init running 150 s", stageRunningFor("kubeadm-init", 150*time.Second)},
	{"after kubeadm-init", stageEnded("kubeadm-init")},
	{"after podnetwork", stageEnded("podnetwork")},
	{"wait-ready running 30 s", stageRunningFor("wait-ready", 30*time.Second)},
}

func stepOf(b *progress.Boot, stage string) (progress.Step, bool) {
	if b == nil {
		return progress.Step{}, false
	}
	i := slices.IndexFunc(b.Steps, func(s progress.Step) bool { return s.Stage == stage })
	if i < 0 {
		return progress.Step{}, false
	}
	return b.Steps[i], true
}

func stageEnded(stage string) func(*progress.Boot, map[string]time.Time) (bool, bool) {
	return func(b *progress.Boot, _ map[string]time.Time) (bool, bool) {
		s, ok := stepOf(b, stage)
		ended, _ := finished(s)
		return ok && ended, false
	}
}

// stageRunningFor cuts once stage has run for d; it is missed when the
// stage ends first.
func stageRunningFor(stage string, d time.Duration) func(*progress.Boot, map[string]time.Time) (bool, bool) {
	return func(b *progress.Boot, seen map[string]time.Time) (bool, bool) {
		s, ok := stepOf(b, stage)
		if !ok {
			return false, false
		}
		if ended, _ := finished(s); ended {
			return false, true
		}
		if s.State != progress.Running {
			return false, false
		}
		if _, ok := seen[stage]; !ok {
			seen[stage] = time.Now()
		}
		return time.Since(seen[stage]) >= d, false
	}
}

// powercut (make faults): a controller's first boot has its power cut
// (QEMU SIGKILLed) at each of powerCuts in turn, booting the same disk
// again after each; then it must converge with no help: bootstrapd done,
// the node Ready, kube-system running, and `bootstrapd verify` holding the
// same checks, section by section, as the uninterrupted controller's
// first boot of this run (when the controller scenario ran).
func (s *sc) powercut(ctx context.Context) error {
	for _, vm := range s.lab.VMs() { // the same addresses, and the CPU
		if err := vm.Kill(); err != nil {
			return err
		}
	}
	ctl := s.nodes["ctl"]
	s.nodes = map[string]*node{}
	if err := s.ensureSecrets(ctx); err != nil {
		return err
	}
	n, err := s.addNode(ctx, "pcut", controllerConfig)
	if err != nil {
		return err
	}
	vm := n.vm
	tried, cut := 0, 0
	for i, pc := range powerCuts {
		if err := vm.Start(ctx); err != nil {
			return err
		}
		b := s.newBoot(vm, fmt.Sprintf("boot %d", i+1), vm.Started, 0)
		if _, err := vm.WaitBoot(ctx, 0); err != nil {
			return err
		}
		state, missed, err := s.cutWhen(ctx, vm, pc)
		if err != nil {
			return err
		}
		tried++
		if missed {
			s.ok("pcut: %s: missed (the stage ended between two polls); powered off instead", pc.name)
			if err := vm.Kill(); err != nil { // the next point starts from a power-on all the same
				return err
			}
			continue
		}
		cut++
		s.ok("pcut: power cut %.0f s after power-on, %s: %s", b.since(time.Now()), pc.name, state)
	}
	b, err := s.initUp(ctx, n, "after the power cuts")
	if err != nil {
		return err
	}
	if err := s.verify(ctx, n, b); err != nil {
		return err
	}
	s.ok("pcut: %d points tried, %d cut, converged: bootstrapd done, node Ready, kube-system running, bootstrapd verify holds", tried, cut)
	if ctl == nil {
		return nil
	}
	return sameVerifySections(filepath.Join(ctl.vm.LogDir, "verify-first-boot.txt"), filepath.Join(vm.LogDir, "verify-after-the-power-cuts.txt"), s.ok)
}

// cutWhen polls the boot's progress until pc says cut (then kills QEMU)
// or missed; it returns each step's state at that moment.
func (s *sc) cutWhen(ctx context.Context, vm *VM, pc powerCut) (string, bool, error) {
	seen := map[string]time.Time{}
	for {
		b, err := vm.Progress(ctx)
		if err != nil {
			return "", false, err
		}
		if c, missed := pc.at(b, seen); c || missed {
			if c {
				if err := vm.Kill(); err != nil {
					return "", false, err
				}
			}
			return stepStates(b), missed, nil
		}
		if b != nil && !b.Ended.IsZero() {
			return "", false, fmt.Errorf("%s: bootstrapd ended before the point %q", vm.Name, pc.name)
		}
		select {
		case <-ctx.Done():
			return "", false, fmt.Errorf("%s: waiting for the point %q: %w", vm.Name, pc.name, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

// stepStates is "stage state" for each step that applies and has started.
func stepStates(b *progress.Boot) string {
	if b == nil {
		return "bootstrapd not started"
	}
	var l []string
	for _, s := range b.Steps {
		if s.Applies && s.State != "" {
			l = append(l, s.Stage+" "+s.State)
		}
	}
	if len(l) == 0 {
		return "bootstrapd started, no stage yet"
	}
	return strings.Join(l, ", ")
}

// verifySection is a section heading of `bootstrapd verify`'s report ("4.
// nftables ruleset ...") and a check line ("   ok    ...").
var (
	verifySection = regexp.MustCompile(`^(\d+)\. `)
	verifyCheck   = regexp.MustCompile(`^   (ok|FAIL|WARN)\s`)
)

// sameVerifySections compares two `bootstrapd verify` reports section by
// section: the same number of checks, every one ok. The checks name pods
// and namespaces whose suffixes differ between two clusters, so they are
// counted, not compared line by line.
func sameVerifySections(want, got string, ok func(string, ...any)) error {
	count := func(p string) (map[string]int, error) {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		m, section := map[string]int{}, ""
		for _, l := range strings.Split(string(data), "\n") {
			if v := verifySection.FindStringSubmatch(l); v != nil {
				section = v[1]
			}
			if v := verifyCheck.FindStringSubmatch(l); v != nil {
				if v[1] != "ok" {
					return nil, fmt.Errorf("%s: section %s: %s", p, section, strings.TrimSpace(l))
				}
				m[section]++
			}
		}
		return m, nil
	}
	w, err := count(want)
	if err != nil {
		return err
	}
	g, err := count(got)
	if err != nil {
		return err
	}
	for sec, nw := range w {
		if g[sec] != nw {
			return fmt.Errorf("bootstrapd verify section %s: %d checks after the power cuts, %d on the uninterrupted boot (%s, %s)", sec, g[sec], nw, got, want)
		}
	}
	for sec, ng := range g {
		if _, ok := w[sec]; !ok {
			return fmt.Errorf("bootstrapd verify section %s: %d checks after the power cuts, none on the uninterrupted boot", sec, ng)
		}
	}
	ok("pcut: bootstrapd verify holds the same checks, section by section, as the uninterrupted controller's first boot")
	return nil
}
