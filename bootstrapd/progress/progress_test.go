package progress

import (
	"context"
	"fmt"
	"os/exec"
	"testing"
	"time"

	"kubeboot.dev/kubeboot/bootstrapd/engine"
	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/bootstrapd/state"
	"kubeboot.dev/kubeboot/machineconfig"
)

type nop string

func (n nop) Name() string                                            { return string(n) }
func (nop) Inputs(*machineconfig.MachineConfig) any                   { return nil }
func (nop) Plan(context.Context, *stage.Env) ([]stage.Change, error)  { return nil, nil }
func (nop) Apply(context.Context, *stage.Env) ([]stage.Change, error) { return nil, nil }

var plan = []engine.Step{
	{Stage: nop("hostname"), Kind: engine.Converge, Phase: "host"},
	{Stage: nop("network"), Kind: engine.Converge, Phase: "host"},
	{Stage: nop("kubeadm-join"), Kind: engine.Once, Phase: "kubernetes", When: engine.ForRoles(machineconfig.RoleWorker)},
	{Stage: nop("kubeconfig"), Kind: engine.Converge, Phase: "kubernetes", When: engine.ForRoles(machineconfig.RoleInit)},
}

func states(t *testing.T, root string) string {
	t.Helper()
	b, err := Read(root)
	if err != nil || b == nil {
		t.Fatalf("read: %v %v", b, err)
	}
	lines, err := Lines(state.Open(root), b, plan, nil)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range lines {
		out = append(out, l.Stage+": "+l.State)
	}
	return fmt.Sprint(out)
}

// TestInterruptedRunAndALaterRunOnTheSameBoot: a run whose process died
// during a step shows it interrupted and the steps after it waiting; a
// later run of only some steps keeps what the first found for the others.
func TestInterruptedRunAndALaterRunOnTheSameBoot(t *testing.T) {
	root := t.TempDir()
	cfg := &machineconfig.MachineConfig{Role: machineconfig.RoleWorker}
	rec, err := Start(root, plan, cfg)
	if err != nil {
		t.Fatal(err)
	}
	rec.StepStarted("hostname")
	rec.StepEnded(engine.Outcome{Stage: "hostname", Action: engine.Applied, Duration: time.Second, Attempts: 1}, nil)
	rec.StepStarted("network")
	if got, want := states(t, root), "[hostname: applied on this boot network: running kubeadm-join: waits for network kubeconfig: not for this role]"; got != want {
		t.Errorf("while running:\n got %s\nwant %s", got, want)
	}

	// The process is gone without ending the run: a power cut, a kill.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	rec.boot.PID = dead.Process.Pid
	rec.write()
	if got, want := states(t, root), "[hostname: applied on this boot network: interrupted kubeadm-join: waits for network (interrupted) kubeconfig: not for this role]"; got != want {
		t.Errorf("after the crash:\n got %s\nwant %s", got, want)
	}

	// A second run on this boot, of network only, that ends.
	rec, err = Start(root, plan, cfg)
	if err != nil {
		t.Fatal(err)
	}
	rec.StepStarted("network")
	rec.StepEnded(engine.Outcome{Stage: "network", Action: engine.UpToDate, Duration: time.Millisecond, Attempts: 1}, nil)
	rec.End()
	if got, want := states(t, root), "[hostname: applied on this boot network: up to date on this boot kubeadm-join: not run on this boot kubeconfig: not for this role]"; got != want {
		t.Errorf("after a second run:\n got %s\nwant %s", got, want)
	}
}
