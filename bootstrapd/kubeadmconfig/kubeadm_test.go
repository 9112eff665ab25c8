package kubeadmconfig

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"kubeboot.dev/kubeboot/internal/cachetest"
	"kubeboot.dev/kubeboot/machineconfig"
)

// The pinned kubeadm (configs/image.lock) checks every rendered config the
// way `kubeadm init|join --config` reads it, strictly: unknown fields,
// bad values and ignored documents all fail the test.
func TestKubeadmConfigValidate(t *testing.T) {
	kubeadm := cachetest.File(t, "kubeadm")
	for _, c := range renderCases {
		t.Run(c.name, func(t *testing.T) {
			f := writeConfig(t, c.render(t).Config())
			stdout, stderr, err := run(exec.Command(kubeadm, "config", "validate", "--config", f))
			if err != nil || stdout != "ok\n" || stderr != "" {
				t.Fatalf("kubeadm config validate: %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
			}
		})
	}
}

// `kubeadm init --dry-run` runs every phase but preflight (skipPhases)
// against a scratch directory, catching what validation does not see; the
// files it would write show the rendered settings took effect.
func TestKubeadmInitDryRun(t *testing.T) {
	kubeadm := cachetest.File(t, "kubeadm")
	requireOverlayNamespace(t)
	for _, c := range renderCases {
		cfg := loadConfig(t, c.config)
		if cfg.Role != machineconfig.RoleInit {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			in := testInputs()
			if c.inputs != nil {
				c.inputs(&in)
			}
			// The static-pod patches must be where the config says.
			in.Dir = filepath.Join(t.TempDir(), "kubeadm")
			r, err := Render(cfg, in)
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Write("/"); err != nil {
				t.Fatal(err)
			}
			args := []string{"init", "--dry-run"}
			if !in.CAsPreinstalled {
				args = append(args, "--upload-certs")
			}
			out, dry := dryRun(t, kubeadm, r.Config(), args...)
			k := &cfg.Kubernetes
			nodeIP := k.AdvertiseAddress
			if len(in.NodeIPs) > 0 { // dual stack: both addresses
				nodeIP = joinAddrs(in)
			}
			// Slow-machine settings: liveness thresholds from the
			// static-pod patches, leader election and etcd timing flags.
			liveness := fmt.Sprintf("failureThreshold: %d\n      httpGet", livenessFailureThreshold)
			want := map[string][]string{
				"kubeadm-flags.env":            {"--node-ip=" + nodeIP},
				"kube-apiserver.yaml":          {"--advertise-address=" + k.AdvertiseAddress, "--service-cluster-ip-range=" + cidrList(k.ServiceSubnet), "--secure-port=6443", liveness},
				"config.yaml":                  {"cgroupDriver: systemd", "clusterDomain: " + k.DNSDomain, "resolvConf: /etc/resolv.conf"},
				"etcd.yaml":                    {"--election-timeout=5000", "--heartbeat-interval=500", liveness},
				"kube-controller-manager.yaml": {"--leader-elect-renew-deadline=40s", liveness},
				"kube-scheduler.yaml":          {"--leader-elect-lease-duration=60s", liveness},
			}
			if k.PodSubnet != "" {
				want["kube-controller-manager.yaml"] = append(want["kube-controller-manager.yaml"], "--cluster-cidr="+cidrList(k.PodSubnet))
			}
			if c.name == "patches-init" {
				want["config.yaml"] = append(want["config.yaml"], "maxPods: 200", "cpu: 500m", "memory: 256Mi")
				// Its controllerManager.extraArgs replace kubeboot's list
				// (docs/kubeadm.md, Slow machines).
				want["kube-controller-manager.yaml"] = []string{"--node-cidr-mask-size=25", "--cluster-cidr=" + cidrList(k.PodSubnet), liveness}
				want["kube-apiserver.yaml"] = append(want["kube-apiserver.yaml"], "--audit-log-maxage=30")
			}
			for _, file := range []string{"kube-apiserver.yaml", "kube-scheduler.yaml", "etcd.yaml"} {
				if data, _ := os.ReadFile(filepath.Join(dry, file)); bytes.Contains(data, []byte("periodSeconds: 1\n")) {
					t.Errorf("%s: a probe still every second (readinessProbe not patched):\n%s", file, data)
				}
			}
			if key, _ := os.ReadFile(filepath.Join(dry, "apiserver.key")); !bytes.Contains(key, []byte("BEGIN EC PRIVATE KEY")) {
				t.Error("apiserver.key is not an ECDSA key") // a key: not printed
			}
			for file, needles := range want {
				data, err := os.ReadFile(filepath.Join(dry, file))
				if err != nil {
					t.Fatalf("kubeadm wrote no %s: %v\n%s", file, err, out)
				}
				for _, n := range needles {
					if !bytes.Contains(data, []byte(n)) {
						t.Errorf("%s lacks %q:\n%s", file, n, data)
					}
				}
			}
			if len(k.CertSANs) > 0 {
				sans := certSANs(t, filepath.Join(dry, "apiserver.crt"))
				for _, san := range k.CertSANs {
					if !slices.Contains(sans, san) {
						t.Errorf("apiserver.crt lacks SAN %s: %v", san, sans)
					}
				}
			}
			// The join command kubeadm prints carries the rendered token,
			// and the certificate key when it uploads the CA keys: kubeadm
			// prints both, so its output must be masked.
			if !strings.Contains(out, "--token "+testToken) {
				t.Errorf("kubeadm did not create the rendered token:\n%s", out)
			}
			if !in.CAsPreinstalled && !strings.Contains(out, "[upload-certs] Using certificate key:\n"+testCertKey) {
				t.Errorf("kubeadm did not upload the CA keys with the rendered certificate key:\n%s", out)
			}
			if w := klogWarnings(out); len(w) > 0 {
				t.Errorf("kubeadm warned:\n%s", strings.Join(w, "\n"))
			}
		})
	}
}

// A joining node's kubelet settings reach kubeadm as a patch file. `kubeadm
// join` needs a cluster, so the file is handed to the same code through
// `kubeadm init phase kubelet-start` (both call kubeadm's
// WriteConfigToDisk with the patches directory) and the kubelet config it
// writes is checked: the patches applied in order, null deleting a key.
func TestKubeadmAppliesKubeletPatch(t *testing.T) {
	kubeadm := cachetest.File(t, "kubeadm")
	requireOverlayNamespace(t)
	worker := renderCase{"patches-worker", "testdata/patches-worker.yaml", workerInputs}.render(t)
	root := t.TempDir()
	if err := worker.Write(root); err != nil {
		t.Fatal(err)
	}
	cfg := loadConfig(t, "../../configs/controller.yaml")
	cfg.Kubernetes.KubeadmPatches = []machineconfig.KubeadmPatch{{Kind: "InitConfiguration", Patch: map[string]any{
		"patches": map[string]any{"directory": filepath.Join(root, "var/lib/kubeboot/kubeadm/patches")},
	}}}
	init, err := Render(cfg, testInputs())
	if err != nil {
		t.Fatal(err)
	}
	out, dry := dryRun(t, kubeadm, init.Config(), "init", "phase", "kubelet-start", "--dry-run")
	if !strings.Contains(out, `Applied patch of type "application/merge-patch+json" to target "kubeletconfiguration"`) {
		t.Errorf("kubeadm did not apply the patch file:\n%s", out)
	}
	data, err := os.ReadFile(filepath.Join(dry, "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"maxPods: 250", "nodefs.available: 5%", "cgroupDriver: systemd"} {
		if !bytes.Contains(data, []byte(n)) {
			t.Errorf("kubelet config lacks %q:\n%s", n, data)
		}
	}
	if bytes.Contains(data, []byte("memory.available")) {
		t.Errorf("the second patch did not delete evictionHard.memory.available:\n%s", data)
	}
}

// Every preflight check kubeadm runs here, failing or not, has a name the
// config validator accepts in kubernetes.ignorePreflightErrors: the
// validator's list of names matches the pinned kubeadm.
func TestPreflightCheckNamesAccepted(t *testing.T) {
	kubeadm := cachetest.File(t, "kubeadm")
	requireOverlayNamespace(t)
	seen := 0
	for _, c := range []renderCase{renderCases[0], renderCases[2]} { // init and worker
		cfg := loadConfig(t, c.config)
		verb := "join"
		if cfg.Role == machineconfig.RoleInit {
			verb = "init"
		}
		// Checks run whatever the result; a failing run is expected here
		// (no container runtime on the test host).
		out, _ := dryRun(t, kubeadm, c.render(t).Config(), verb, "phase", "preflight", "--dry-run")
		var names []string
		for _, m := range regexp.MustCompile(`\[(?:WARNING|ERROR) ([^\]]+)\]`).FindAllStringSubmatch(out, -1) {
			seen++
			names = append(names, m[1])
			cfg.Kubernetes.IgnorePreflightErrors = []string{m[1]}
			if err := cfg.Validate(); err != nil {
				t.Errorf("kubeadm %s reports check %q, the validator refuses it: %v", verb, m[1], err)
			}
		}
		t.Logf("kubeadm %s phase preflight reported: %s", verb, strings.Join(names, ", "))
	}
	if seen == 0 {
		t.Fatal("kubeadm reported no check at all; nothing was compared")
	}
}

func writeConfig(t *testing.T, data []byte) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "kubeadm.yaml")
	if err := os.WriteFile(f, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func run(cmd *exec.Cmd) (string, string, error) {
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// requireOverlayNamespace skips unless the test may mount: dryRun runs
// kubeadm in a private mount namespace with /etc, /var and /run behind
// overlays, so nothing it might write reaches the host.
func requireOverlayNamespace(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for a mount namespace with overlays over /etc, /var and /run (CI runs as root)")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare (util-linux) not installed: scripts/setup-host.sh installs it")
	}
}

// dryRun runs kubeadm with args and the config in a mount namespace whose
// /etc, /var and /run are overlays, and fails the test if kubeadm changed
// anything there: dry runs must write only to their scratch directory,
// which is returned with kubeadm's combined output. kubeadm's exit status
// is not judged here.
func dryRun(t *testing.T, kubeadm string, config []byte, args ...string) (string, string) {
	t.Helper()
	f := writeConfig(t, config)
	scratch, dry := t.TempDir(), t.TempDir()
	var script strings.Builder
	for _, d := range []string{"etc", "var", "run"} {
		upper, work := filepath.Join(scratch, d, "upper"), filepath.Join(scratch, d, "work")
		for _, p := range []string{upper, work} {
			if err := os.MkdirAll(p, 0o700); err != nil {
				t.Fatal(err)
			}
		}
		fmt.Fprintf(&script, "mount -t overlay overlay -o lowerdir=/%s,upperdir=%s,workdir=%s /%s || exit 97\n", d, upper, work, d)
	}
	script.WriteString(`exec "$@"`)
	cmd := exec.Command("unshare", append([]string{"--mount", "--propagation", "private", "sh", "-c", script.String(), "sh", kubeadm}, append(args, "--config", f)...)...)
	cmd.Env = append(os.Environ(), "KUBEADM_INIT_DRYRUN_DIR="+dry, "KUBEADM_JOIN_DRYRUN_DIR="+dry)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 97 {
		t.Skipf("cannot mount overlays in a mount namespace: %s", out)
	}
	for _, d := range []string{"etc", "var", "run"} {
		left, _ := os.ReadDir(filepath.Join(scratch, d, "upper"))
		for _, e := range left {
			t.Errorf("kubeadm %s wrote /%s/%s outside its dry-run directory", strings.Join(args, " "), d, e.Name())
		}
	}
	return string(out), dry
}

// klogWarnings are kubeadm's klog warning and error lines (W1129 ..., E1129 ...).
func klogWarnings(out string) []string {
	return regexp.MustCompile(`(?m)^[WE]\d{4} .*$`).FindAllString(out, -1)
}

// certSANs are the DNS names and IP addresses of a PEM certificate.
func certSANs(t *testing.T, file string) []string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s: no PEM block", file)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	sans := slices.Clone(cert.DNSNames)
	for _, ip := range cert.IPAddresses {
		sans = append(sans, ip.String())
	}
	return sans
}

func joinAddrs(in Inputs) string {
	s := make([]string, len(in.NodeIPs))
	for i, ip := range in.NodeIPs {
		s[i] = ip.String()
	}
	return strings.Join(s, ",")
}
