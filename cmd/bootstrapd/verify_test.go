package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os/exec"
	"strings"
	"testing"

	"kubeboot.dev/kubeboot/bootstrapd/verify"
)

func TestVerifyUsageAndNoConfig(t *testing.T) {
	root := t.TempDir()
	for _, args := range [][]string{
		{"verify", "--root", root, "extra"},
		{"verify", "--root", root, "--nope"},
	} {
		var stdout, stderr bytes.Buffer
		if code := dispatch(args, &stdout, &stderr); code != exitUsage {
			t.Errorf("bootstrapd %v: exit %d, want %d\n%s", args, code, exitUsage, stderr.String())
		}
	}
	var stdout, stderr bytes.Buffer
	if code := dispatch([]string{"verify", "--root", root}, &stdout, &stderr); code != exitFail {
		t.Errorf("without a config: exit %d, want %d", code, exitFail)
	}
	if !strings.Contains(stderr.String(), "no machine config found") || stdout.Len() != 0 {
		t.Errorf("without a config: stdout %q, stderr %q", stdout.String(), stderr.String())
	}
}

// verifyOnNode runs bootstrapd verify in the node's namespaces and returns
// its exit status, stdout and stderr apart.
func (n *node) verify(args ...string) (int, string, string) {
	n.t.Helper()
	full := append([]string{"netns", "exec", n.ns, "nsenter", "--uts=" + n.uts, binary(n.t), "verify"}, args...)
	cmd := exec.Command("ip", full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, stdout.String(), stderr.String()
	case errors.As(err, &exit):
		return exit.ExitCode(), stdout.String(), stderr.String()
	}
	n.t.Fatalf("bootstrapd verify %v: %v\n%s", args, err, stderr.String())
	return 0, "", ""
}

// TestVerifyAfterTheHostPhase runs the host stages of configs/controller.yaml
// on a reference-shaped node, then bootstrapd verify, as text and as JSON:
// the links, addresses, routes and our firewall hold; what only a
// Kubernetes node has (a runtime, an API server, kube-proxy's rules,
// kubeadm's record) does not, so it exits 1 and says why; no output holds
// a secret of the config.
func TestVerifyAfterTheHostPhase(t *testing.T) {
	needRootAndTools(t)
	n := newNode(t)
	n.mustRun("run", "--config", controllerConfig, "--root", n.root, "--only", "hostname,network,firewall")

	code, text, stderr := n.verify("--config", controllerConfig, "--root", n.root)
	if code != exitFail {
		t.Errorf("verify: exit %d, want %d\n%s%s", code, exitFail, text, stderr)
	}
	noSecrets(t, "verify's text output", text+stderr)
	for _, want := range []string{
		"node:   controller.home.local (role init)",
		"   ok    route default via 172.16.0.254 dev enp1s0 proto static metric 100\n",
		"   ok    enp1s0 MAC address\n",
		"   FAIL  the API server answers the node's credentials\n",
		"5. Nodes and pods (kubectl get nodes; kubectl get all -A)\n",
		"6. Containers and images (crictl ps -a; crictl images)\n   FAIL  the runtime answers on the CRI\n",
		"7. kubeadm preflight and bootstrapd's done marker\n",
		"verify: FAILED, ",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("verify's text lacks %q:\n%s", want, text)
		}
	}

	code, out, stderr := n.verify("--config", controllerConfig, "--root", n.root, "--json")
	if code != exitFail {
		t.Errorf("verify --json: exit %d, want %d\n%s", code, exitFail, stderr)
	}
	noSecrets(t, "verify's JSON output", out+stderr)
	var r verify.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("verify --json: %v\n%s", err, out)
	}
	if r.OK || r.Node != "controller.home.local" || r.Failed == 0 || r.Failed >= r.Checks {
		t.Errorf("report: ok %v, node %q, %d of %d failed", r.OK, r.Node, r.Failed, r.Checks)
	}
	// What the host phase made holds; what needs Kubernetes does not.
	wantFail := map[string]bool{"pod links": true, "pod CIDR of this node on cni0": true,
		"kube-proxy's chains (ip)": true, "kube-proxy has synced the Services (ip)": true}
	for _, s := range r.Sections {
		for _, c := range s.Checks {
			switch s.Name {
			case "links", "addresses", "nftables":
				if c.OK == wantFail[c.Name] {
					t.Errorf("%s: %s: ok %v (expected %s, found %s)", s.Name, c.Name, c.OK, c.Expected, c.Found)
				}
			case "namespaces", "cluster", "containers":
				if c.OK {
					t.Errorf("%s: %s holds without a runtime or an API server: %s", s.Name, c.Name, c.Found)
				}
			}
		}
	}
}
