package verify

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kubeboot.dev/kubeboot/bootstrapd/kubeadm"
	"kubeboot.dev/kubeboot/bootstrapd/state"
)

// TestKubeadmSection checks the kubeadm section against state directories
// as the kubeadm stage and the engine leave them: a clean init passes
// (the firewalld warning dropped as verified); a warning passed on through
// ignorePreflightErrors, a missing preflight record, a done marker of
// another config and a failed marker each fail, saying what was found.
func TestKubeadmSection(t *testing.T) {
	ctrl, _ := exampleConfig(t, "controller.yaml", nil)
	wrk, _ := exampleConfig(t, "worker.yaml", nil)
	firewalld := kubeadm.Finding{Level: "WARNING", Check: "Firewalld", Message: "firewalld is active, please ensure ports [6443 10250] are open or your cluster may not function correctly"}
	swap := kubeadm.Finding{Level: "WARNING", Check: "Swap", Message: "swap is supported for cgroup v2 only"}
	verdict := func(t *testing.T, root, stageName string, v kubeadm.Verdict) {
		data, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(state.Open(root).StageDir(stageName), kubeadm.PreflightFile), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		worker   bool
		setup    func(t *testing.T, root string)
		failing  string // the check that fails, "" for none
		foundHas string
	}{
		{name: "init, firewalld dropped", setup: func(t *testing.T, root string) {
			verdict(t, root, "kubeadm-init", kubeadm.Verdict{Dropped: []kubeadm.Finding{firewalld}})
		}},
		{name: "worker join, no finding", worker: true, setup: func(t *testing.T, root string) {
			verdict(t, root, "kubeadm-join", kubeadm.Verdict{})
		}},
		{name: "a warning passed on", setup: func(t *testing.T, root string) {
			verdict(t, root, "kubeadm-init", kubeadm.Verdict{Dropped: []kubeadm.Finding{firewalld}, Accepted: []kubeadm.Finding{swap}})
		}, failing: "kubeadm preflight: no warning passed on", foundHas: "[WARNING Swap]: swap is supported for cgroup v2 only"},
		{name: "no preflight record", setup: func(t *testing.T, root string) {},
			failing: "kubeadm preflight: no warning passed on", foundHas: "no record of kubeadm's preflight at /var/lib/kubeboot/stages/kubeadm-init/preflight.json"},
		{name: "done for another config", setup: func(t *testing.T, root string) {
			verdict(t, root, "kubeadm-init", kubeadm.Verdict{})
			if err := state.Open(root).PutDone(state.Done{ConfigHash: "0123abcd", Time: time.Now()}); err != nil {
				t.Fatal(err)
			}
		}, failing: "done marker", foundHas: "present, for config 0123abcd"},
		{name: "failed marker", setup: func(t *testing.T, root string) {
			verdict(t, root, "kubeadm-init", kubeadm.Verdict{})
			if err := state.Open(root).PutFailure(state.Failure{Stage: "wait-ready", Reason: "node not ready after 15m0s", Time: time.Now()}); err != nil {
				t.Fatal(err)
			}
		}, failing: "no failed marker", foundHas: "stage wait-ready failed at "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, stageName := ctrl, "kubeadm-init"
			if tc.worker {
				res, stageName = wrk, "kubeadm-join"
			}
			root := t.TempDir()
			st := state.Open(root)
			now := time.Now().UTC()
			if err := st.PutStage(state.StageRecord{Stage: stageName, Kind: "once", Fingerprint: "f", ConfigHash: res.Config.Hash(), Started: now, Finished: now, Attempts: 1}); err != nil {
				t.Fatal(err)
			}
			if err := st.PutDone(state.Done{ConfigHash: res.Config.Hash(), Time: now}); err != nil {
				t.Fatal(err)
			}
			tc.setup(t, root)
			s := prepare(Options{Root: root, Config: res.Config, Source: res.Source}).kubeadm(ctx)
			if tc.failing == "" {
				allHold(t, s)
				return
			}
			for _, c := range s.Checks {
				if c.Name == tc.failing {
					if c.OK || !strings.Contains(c.Found, tc.foundHas) {
						t.Errorf("%s: %+v, want a failure finding %q", c.Name, c, tc.foundHas)
					}
				} else if !c.OK {
					t.Errorf("%s fails too: %+v", c.Name, c)
				}
			}
			checkNamed(t, s, tc.failing)
		})
	}
}
