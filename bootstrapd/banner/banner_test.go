package banner

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kubeboot.dev/kubeboot/bootstrapd"
	"kubeboot.dev/kubeboot/bootstrapd/engine"
	"kubeboot.dev/kubeboot/bootstrapd/progress"
	"kubeboot.dev/kubeboot/bootstrapd/stage"
	"kubeboot.dev/kubeboot/bootstrapd/state"
	"kubeboot.dev/kubeboot/internal/netnstest"
	"kubeboot.dev/kubeboot/machineconfig"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// The config of the reference controller, with its example credentials.
const controllerConfig = "../../configs/controller.yaml"

var (
	t0       = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	testAddr = []string{"enp1s0 172.16.0.11/24", "enp2s0 10.0.0.11/24"}
)

func load(t *testing.T, role machineconfig.Role) *machineconfig.MachineConfig {
	t.Helper()
	cfg, err := machineconfig.Load(controllerConfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Role = role
	return cfg
}

// record writes a stage record as the engine does after an apply.
func record(t *testing.T, st *state.Store, name, duration string) {
	t.Helper()
	if err := st.PutStage(state.StageRecord{Stage: name, Kind: "converge", Fingerprint: "f", ConfigHash: "c",
		Started: t0, Finished: t0.Add(time.Second), Duration: duration, Attempts: 1}); err != nil {
		t.Fatal(err)
	}
}

// boot replays a run through the recorder: each of ended finished with the
// given action and duration, then running (if not "") started.
func boot(t *testing.T, root string, cfg *machineconfig.MachineConfig, plan []engine.Step, ended map[string]engine.Action, running, activity string) {
	t.Helper()
	rec, err := progress.Start(root, plan, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range plan {
		a, ok := ended[s.Name()]
		if !ok {
			continue
		}
		rec.StepStarted(s.Name())
		var err error
		if a == "" {
			err = fmt.Errorf("failed")
		}
		if e := rec.StepEnded(engine.Outcome{Stage: s.Name(), Action: a, Duration: 1500 * time.Millisecond, Attempts: 1}, err); e != nil {
			t.Fatal(e)
		}
	}
	if running != "" {
		rec.StepStarted(running)
	}
	if activity != "" {
		rec.Activity(activity)
	}
	if running == "" {
		rec.End()
	}
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	p := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(p, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("%s differs from %s (go test -update rewrites it):\n--- got\n%s--- want\n%s", name, p, got, want)
	}
	for _, line := range strings.Split(got, "\n") {
		if len([]rune(line)) > Width {
			t.Errorf("line longer than %d columns: %q", Width, line)
		}
	}
}

// collect is Collect with the test's fixed addresses (Addresses itself is
// tested against a namespace the test makes).
func collect(t *testing.T, root string, cfg *machineconfig.MachineConfig) View {
	t.Helper()
	v, err := Collect(root, cfg, bootstrapd.Plan())
	if err != nil {
		t.Fatal(err)
	}
	v.Addresses = testAddr
	return v
}

// secrets are the credentials of configs/controller.yaml.
func secrets(cfg *machineconfig.MachineConfig) []string {
	return []string{cfg.Kubernetes.Credentials.Token.Reveal(), cfg.Kubernetes.Credentials.CertificateKey.Reveal()}
}

func noSecret(t *testing.T, cfg *machineconfig.MachineConfig, text string) {
	t.Helper()
	for _, s := range secrets(cfg) {
		if s != "" && strings.Contains(text, s) {
			t.Errorf("the banner holds a secret of the config:\n%s", text)
		}
	}
}

// TestBannerFromState renders the banner from real state directories (the
// state package's records and markers, this boot's progress written by
// the recorder) for the moments a node goes through, against golden files;
// and checks that the config's credentials never reach it.
func TestBannerFromState(t *testing.T) {
	plan := bootstrapd.Plan()
	host := map[string]engine.Action{"hostname": engine.UpToDate, "network": engine.Applied, "firewall": engine.Applied, "sysprep": engine.UpToDate, "users": engine.Applied}

	t.Run("init running wait-ready", func(t *testing.T) {
		root := t.TempDir()
		cfg := load(t, machineconfig.RoleInit)
		st := state.Open(root)
		for name := range host {
			record(t, st, name, "1.5s")
		}
		ended := map[string]engine.Action{"kubeconfig": engine.Applied}
		for k, v := range host {
			ended[k] = v
		}
		boot(t, root, cfg, plan, ended, "wait-ready", "wait-ready: waiting 45s: node controller.home.local is not Ready (KubeletNotReady: container runtime network not ready)")
		v := collect(t, root, cfg)
		golden(t, "init-running", Render(v))
		noSecret(t, cfg, Issue(v))
	})

	t.Run("worker failed", func(t *testing.T) {
		root := t.TempDir()
		cfg := load(t, machineconfig.RoleWorker)
		st := state.Open(root)
		record(t, st, "hostname", "4ms")
		ended := map[string]engine.Action{"hostname": engine.UpToDate, "network": ""}
		boot(t, root, cfg, plan, ended, "", "failed: stage network: enp1s0: no carrier")
		// A reason with a terminal escape and a backslash, as a tool may print.
		if err := st.PutFailure(state.Failure{Stage: "network", Reason: "stage network: link enp1s0 \x1b[31mdown\x1b[0m, path C:\\x", Attempts: 8, Time: t0}); err != nil {
			t.Fatal(err)
		}
		v := collect(t, root, cfg)
		golden(t, "worker-failed", Render(v))
		issue := Issue(v)
		if strings.ContainsRune(issue, 0x1b) || !strings.Contains(issue, `path C:\\x`) {
			t.Errorf("the issue file lets an escape through or leaves a backslash single:\n%q", issue)
		}
		noSecret(t, cfg, issue)
	})

	t.Run("done", func(t *testing.T) {
		root := t.TempDir()
		cfg := load(t, machineconfig.RoleInit)
		st := state.Open(root)
		var timings []state.StageTiming
		for _, s := range plan {
			record(t, st, s.Name(), "2s")
			timings = append(timings, state.StageTiming{Stage: s.Name(), Duration: "2s", Attempts: 1})
		}
		if err := st.PutDone(state.Done{ConfigHash: "c", Source: "test", Stages: timings, Time: t0}); err != nil {
			t.Fatal(err)
		}
		ended := map[string]engine.Action{}
		for _, s := range plan {
			ended[s.Name()] = engine.UpToDate
		}
		boot(t, root, cfg, plan, ended, "", "done")
		v := collect(t, root, cfg)
		golden(t, "init-done", Render(v))
		noSecret(t, cfg, Issue(v))
	})

	t.Run("no config", func(t *testing.T) {
		root := t.TempDir()
		st := state.Open(root)
		if err := st.PutFailure(state.Failure{Stage: "source", Reason: "stage source: no machine config found", Attempts: 1, Time: t0}); err != nil {
			t.Fatal(err)
		}
		v := collect(t, root, nil)
		v.Hostname = "image-default" // Collect read the test machine's name
		golden(t, "no-config", Render(v))
	})
}

// TestWriteOnlyWhenChanged: the issue file is rewritten (and agetty asked
// to redraw) only when the banner changed.
func TestWriteOnlyWhenChanged(t *testing.T) {
	root := t.TempDir()
	v := View{Hostname: "n1", Role: "worker", Addresses: testAddr}
	for i, want := range []bool{true, false} {
		changed, err := Write(root, v)
		if err != nil || changed != want {
			t.Errorf("write %d: changed %v, %v", i, changed, err)
		}
	}
	info, err := os.Stat(filepath.Join(root, IssueFile))
	if err != nil || info.Mode().Perm() != 0o644 {
		t.Fatalf("issue file: %v %v", info, err)
	}
	v.Role = "init"
	if changed, _ := Write(root, v); !changed {
		t.Error("a new role did not rewrite the banner")
	}
}

// TestAddressesFromTheKernel reads the addresses of a namespace the test
// makes: global ones of every link but loopback, in link order.
func TestAddressesFromTheKernel(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace")
	}
	name := fmt.Sprintf("kbt-banner-%d", os.Getpid())
	h := netnstest.New(t, name)
	netnstest.Run(t, "ip", "-n", name, "link", "add", "enp1s0", "type", "veth", "peer", "name", "p1")
	netnstest.Run(t, "ip", "-n", name, "link", "add", "enp2s0", "type", "veth", "peer", "name", "p2")
	netnstest.Run(t, "ip", "-n", name, "addr", "add", "172.16.0.11/24", "dev", "enp1s0")
	netnstest.Run(t, "ip", "-n", name, "addr", "add", "2001:db8::11/64", "dev", "enp1s0", "nodad")
	netnstest.Run(t, "ip", "-n", name, "addr", "add", "10.0.0.11/24", "dev", "enp2s0")
	netnstest.Run(t, "ip", "-n", name, "link", "set", "enp1s0", "up")
	var got []string
	env := &stage.Env{NetNS: h}
	if err := env.InNetNS(func() (err error) { got, err = Addresses(); return err }); err != nil {
		t.Fatal(err)
	}
	if want := "[enp1s0 172.16.0.11/24 enp1s0 2001:db8::11/64 enp2s0 10.0.0.11/24]"; fmt.Sprint(got) != want {
		t.Errorf("addresses %v, want %s", got, want)
	}
}

// TestAgettyShowsTheBanner has the real agetty (util-linux) print the issue
// file as it would above the login prompt (--show-issue, on a terminal
// script(1) makes): what it shows is exactly Render's text, backslashes and
// all, however agetty reads its escapes.
func TestAgettyShowsTheBanner(t *testing.T) {
	for _, tool := range []string{"agetty", "script"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (util-linux, bsdutils)", tool)
		}
	}
	v := View{Hostname: `n1\n`, Role: "worker", Addresses: testAddr,
		Failed: &state.Failure{Stage: "network", Reason: `C:\x \4 \e[31m`, Attempts: 2, Time: t0},
		Lines:  []progress.Line{{Stage: "network", State: "failed", Detail: `C:\x \4 \e[31m`, Problem: true}}}
	p := filepath.Join(t.TempDir(), "kubeboot.issue")
	if err := os.WriteFile(p, []byte(Issue(v)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("script", "-qec", "agetty --show-issue --issue-file "+p, "/dev/null").CombinedOutput()
	if err != nil {
		t.Fatalf("agetty --show-issue: %v\n%s", err, out)
	}
	got := strings.TrimSpace(strings.ReplaceAll(string(out), "\r\n", "\n"))
	if want := strings.TrimSpace(Render(v)); got != want {
		t.Errorf("agetty shows:\n%s\nwant:\n%s", got, want)
	}
}
