package source

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"kubeboot.dev/kubeboot/clustersecrets"
	"kubeboot.dev/kubeboot/internal/cidatatest"
	"kubeboot.dev/kubeboot/machineconfig"
)

var generated = sync.OnceValues(clustersecrets.Generate)

func testSecrets(t *testing.T) *machineconfig.ClusterSecrets {
	t.Helper()
	s, err := generated()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// withBundle is userData (a worker) with a hostname, naming a bundle
// instead of a CA hash.
func withBundle(role, bundle string) string {
	s := strings.Replace(userData, `caCertHashes: ["sha256:0000000000000000000000000000000000000000000000000000000000000000"]`, "secretsBundle: "+bundle, 1)
	return strings.Replace(s, "role: worker", "role: "+role+"\nhostname: n1.home.local", 1)
}

// checkInstalled checks the node's copy at BundlePath: 0600 in 0700, the
// role's share only, and that a second Install writes nothing.
func checkInstalled(t *testing.T, root string, res *Result, want *machineconfig.ClusterSecrets) {
	t.Helper()
	if err := res.Install(root); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(root, BundlePath)
	info, err := os.Stat(p)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("installed bundle: %v %v", info, err)
	}
	if dir, _ := os.Stat(filepath.Dir(p)); dir.Mode().Perm() != 0o700 {
		t.Errorf("bundle directory mode %v", dir.Mode())
	}
	b, err := machineconfig.LoadBundle(p)
	if err != nil || b.ClusterSecrets != *want {
		t.Errorf("installed bundle differs from the role's share (%v)", err)
	}
	before := info.ModTime()
	if err := res.Install(root); err != nil {
		t.Fatal(err)
	}
	if info, _ := os.Stat(p); !info.ModTime().Equal(before) {
		t.Error("second Install rewrote the bundle")
	}
}

// A bundle next to user-data on the volume is read; a worker keeps only
// the CA certificate and the token, on Result and on disk.
func TestNoCloudSecretsBundleNextToUserData(t *testing.T) {
	s := testSecrets(t)
	img := fatImage(t, map[string][]byte{"user-data": []byte(withBundle("worker", "./secrets.yaml")), "meta-data": []byte(testMetaData), "secrets.yaml": clustersecrets.Marshal(s)})
	root := rootWithVolume(t, "CIDATA", img)
	res, err := Load(context.Background(), Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	want := s.ForRole(machineconfig.RoleWorker)
	if res.Secrets == nil || *res.Secrets != *want || res.Secrets != res.Config.Kubernetes.Credentials.ClusterSecrets() {
		t.Fatal("Result.Secrets is not the worker's share of the bundle")
	}
	if res.Config.Kubernetes.Credentials.JoinToken() != "kbex01.exampletoken0001" {
		t.Error("credentials.token must take precedence over the bundle's")
	}
	if h, _ := s.CACertHash(); res.Config.Kubernetes.Credentials.DiscoveryHashes()[0] != h {
		t.Error("the CA hash is not the bundle's")
	}
	checkInstalled(t, root, res, want)

	// A config without secrets removes the node's old copy.
	res.Secrets = nil
	if err := res.Install(root); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, BundlePath)); !os.IsNotExist(err) {
		t.Error("the old bundle is still there")
	}

	img = fatImage(t, map[string][]byte{"user-data": []byte(withBundle("worker", "./secrets.yaml")), "meta-data": []byte(testMetaData)})
	_, err = Load(context.Background(), Options{Root: rootWithVolume(t, "CIDATA", img)})
	if err == nil || !strings.Contains(err.Error(), `kubernetes.credentials.secretsBundle: secretsBundle "./secrets.yaml": not on the volume next to user-data`) {
		t.Errorf("missing bundle: err = %v", err)
	}
}

// Every source resolves a bundle path the way the docs say: next to the
// config for --config, a local kernel-command-line path and the baked
// config; absolute paths under the node's root; a URL's config only by an
// absolute path.
func TestBundlePathsPerSource(t *testing.T) {
	s := testSecrets(t)
	bundle := clustersecrets.Marshal(s)

	t.Run("--config, relative", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "secrets.yaml"), bundle, 0o600)
		os.WriteFile(filepath.Join(dir, "cp.yaml"), []byte(withBundle("control-plane", "secrets.yaml")), 0o600)
		res, err := Load(context.Background(), Options{Root: t.TempDir(), ConfigPath: filepath.Join(dir, "cp.yaml")})
		if err != nil {
			t.Fatal(err)
		}
		if res.Secrets == nil || *res.Secrets != *s {
			t.Error("a control plane did not get the whole bundle")
		}
	})
	t.Run("kernel command line file, absolute bundle under root", func(t *testing.T) {
		root := t.TempDir()
		writeRootFile(t, root, "/etc/kubeboot/secrets.yaml", string(bundle))
		writeRootFile(t, root, "/srv/m.yaml", withBundle("control-plane", "/etc/kubeboot/secrets.yaml"))
		writeRootFile(t, root, "/proc/cmdline", "ro kubeboot.config=/srv/m.yaml\n")
		res, err := Load(context.Background(), Options{Root: root})
		if err != nil {
			t.Fatal(err)
		}
		if res.Secrets == nil || *res.Secrets != *s {
			t.Error("bundle not read under the node's root")
		}
	})
	t.Run("baked config, bundle next to it", func(t *testing.T) {
		root := t.TempDir()
		writeRootFile(t, root, filepath.Join(filepath.Dir(BakedPath), "secrets.yaml"), string(bundle))
		writeRootFile(t, root, BakedPath, withBundle("worker", "secrets.yaml"))
		res, err := Load(context.Background(), Options{Root: root})
		if err != nil {
			t.Fatal(err)
		}
		if res.Secrets == nil || res.Secrets.HasPrivateKeys() || res.Secrets.CA.Cert != s.CA.Cert {
			t.Error("baked worker config: bundle not read or not reduced")
		}
		checkInstalled(t, root, res, s.ForRole(machineconfig.RoleWorker))
	})
	t.Run("URL, relative bundle refused", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte(withBundle("worker", "secrets.yaml")))
		}))
		t.Cleanup(srv.Close)
		root := t.TempDir()
		writeRootFile(t, root, "/proc/cmdline", "kubeboot.config="+srv.URL+"/m.yaml\n")
		_, err := Load(context.Background(), Options{Root: root, HTTPAttempts: 1})
		if err == nil || !strings.Contains(err.Error(), "cannot name a file next to it") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("inline secrets", func(t *testing.T) {
		dir := t.TempDir()
		cfg := strings.Replace(withBundle("control-plane", "x"), "    secretsBundle: x\n", "    secrets:\n"+indent(string(bundle[strings.Index(string(bundle), "token:"):]), "      "), 1)
		os.WriteFile(filepath.Join(dir, "cp.yaml"), []byte(cfg), 0o600)
		res, err := Load(context.Background(), Options{Root: t.TempDir(), ConfigPath: filepath.Join(dir, "cp.yaml")})
		if err != nil {
			t.Fatal(err)
		}
		if res.Secrets == nil || *res.Secrets != *s {
			t.Error("inline secrets are not on Result")
		}
	})
}

func indent(s, pad string) string {
	return pad + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n"+pad) + "\n"
}

// A symlink on an ISO volume where the bundle should be reads as nothing:
// it is an error at the field, not an empty bundle installed silently.
func TestNoCloudBundleSymlinkRefused(t *testing.T) {
	img := cidatatest.ISO(t, true, map[string][]byte{"user-data": []byte(withBundle("worker", "secrets.yaml")), "meta-data": []byte(testMetaData)},
		map[string]string{"secrets.yaml": "/etc/shadow"})
	root := rootWithVolume(t, "cidata", img)
	_, err := Load(context.Background(), Options{Root: root})
	if err == nil || !strings.Contains(err.Error(), "kubernetes.credentials.secretsBundle") {
		t.Errorf("err = %v, want an error at secretsBundle", err)
	}
	if _, err := os.Stat(filepath.Join(root, BundlePath)); err == nil {
		t.Error("a bundle was installed")
	}
}
