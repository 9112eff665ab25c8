package source

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"kubeboot.dev/kubeboot/internal/cidatatest"
)

// userData is a worker config without a hostname, whose firewall names
// enp1s0: valid only once network-config supplies that link.
const userData = `#cloud-config-like comment: this is a kubeboot machine config
apiVersion: kubeboot.dev/v1alpha1
kind: MachineConfig
role: worker
network:
  interfaces:
    - name: eth9
      addresses: [192.0.2.5/24]
kubernetes:
  version: v1.37.2
  controlPlaneEndpoint: controller.home.local:6443
  credentials:
    token: kbex01.exampletoken0001
    caCertHashes: ["sha256:0000000000000000000000000000000000000000000000000000000000000000"]
`

const testMetaData = "instance-id: iid-worker-01\nlocal-hostname: worker.home.local\n"

func referenceNetplan(t *testing.T) []byte {
	t.Helper()
	data, err := os.ReadFile("../../configs/netplan/reference.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// fatImage builds a real FAT volume labelled CIDATA with mkfs.vfat + mcopy.
func fatImage(t *testing.T, files map[string][]byte) string {
	t.Helper()
	return cidatatest.FAT(t, 0, 2048, files)
}

// isoImage builds a real ISO9660 volume labelled cidata, as cloud-localds does.
func isoImage(t *testing.T, files map[string][]byte) string {
	t.Helper()
	return cidatatest.ISO(t, true, files, nil)
}

// rootWithVolume makes a node root whose /dev/disk/by-label/<label> is the
// image, as udev would link it.
func rootWithVolume(t *testing.T, label, img string) string {
	t.Helper()
	root := t.TempDir()
	dir := filepath.Join(root, "dev/disk/by-label")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(img, filepath.Join(dir, label)); err != nil {
		t.Fatal(err)
	}
	return root
}

func TestNoCloudVolumes(t *testing.T) {
	files := func(t *testing.T) map[string][]byte {
		return map[string][]byte{"user-data": []byte(userData), "meta-data": []byte(testMetaData), "network-config": referenceNetplan(t)}
	}
	for _, tc := range []struct {
		name, label, fsType string
		image               func(*testing.T, map[string][]byte) string
	}{
		{"FAT", "CIDATA", "fat", fatImage},
		{"ISO9660", "cidata", "iso9660", isoImage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := rootWithVolume(t, tc.label, tc.image(t, files(t)))
			res, err := Load(context.Background(), Options{Root: root})
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(res.Source, "NoCloud volume "+filepath.Join(root, "dev/disk/by-label", tc.label)+" ("+tc.fsType) ||
				!strings.Contains(res.Source, "label \""+tc.label+"\"") {
				t.Errorf("Source = %q", res.Source)
			}
			if res.InstanceID != "iid-worker-01" {
				t.Errorf("InstanceID = %q", res.InstanceID)
			}
			cfg := res.Config
			if cfg.Hostname != "worker.home.local" {
				t.Errorf("hostname = %q, want meta-data's local-hostname", cfg.Hostname)
			}
			// network-config replaced user-data's network section.
			ifs := cfg.Network.Interfaces
			if len(ifs) != 2 || ifs[0].Name != "enp1s0" || ifs[0].Match == nil || ifs[0].Match.MACAddress != "52:54:00:80:ad:b6" ||
				ifs[0].Addresses[0] != "172.16.0.11/24" || ifs[1].Name != "enp2s0" {
				t.Errorf("interfaces = %+v, want network-config's enp1s0 and enp2s0", ifs)
			}
			if cfg.Kubernetes.Credentials.Token.Reveal() != "kbex01.exampletoken0001" {
				t.Error("user-data's token was lost in the merge")
			}
		})
	}
}

func TestNoCloudPrecedenceAndErrors(t *testing.T) {
	withName := strings.Replace(userData, "role: worker\n", "role: worker\nhostname: from-user-data\n", 1)
	img := isoImage(t, map[string][]byte{"user-data": []byte(withName), "meta-data": []byte(testMetaData)})
	res, err := Load(context.Background(), Options{Root: rootWithVolume(t, "cidata", img)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Config.Hostname != "from-user-data" {
		t.Errorf("hostname = %q: user-data's must win over local-hostname", res.Config.Hostname)
	}
	if ifs := res.Config.Network.Interfaces; len(ifs) != 1 || ifs[0].Name != "eth9" {
		t.Errorf("without network-config the user-data network must stay: %+v", ifs)
	}

	// An error in user-data keeps its line number although network-config
	// replaced (blanked) the lines of the network section before it.
	bad := strings.Replace(userData, "  controlPlaneEndpoint:", "  controlPlaneEndpont:", 1)
	badLine := 1 + strings.Count(bad[:strings.Index(bad, "controlPlaneEndpont")], "\n")
	img = fatImage(t, map[string][]byte{"user-data": []byte(bad), "network-config": referenceNetplan(t)})
	_, err = Load(context.Background(), Options{Root: rootWithVolume(t, "CIDATA", img)})
	if err == nil || !strings.Contains(err.Error(), "user-data:"+strconv.Itoa(badLine)+":") || !strings.Contains(err.Error(), "controlPlaneEndpont") {
		t.Errorf("err = %v, want user-data:%d: about controlPlaneEndpont", err, badLine)
	}

	img = fatImage(t, map[string][]byte{"meta-data": []byte(testMetaData)})
	_, err = Load(context.Background(), Options{Root: rootWithVolume(t, "CIDATA", img)})
	if err == nil || !strings.Contains(err.Error(), "user-data") || !strings.Contains(err.Error(), "CIDATA") {
		t.Errorf("err = %v, want a missing user-data named with the volume", err)
	}
}

func writeRootFile(t *testing.T, root, p, data string) {
	t.Helper()
	full := filepath.Join(root, p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(full, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

const workerConfig = `apiVersion: kubeboot.dev/v1alpha1
kind: MachineConfig
role: worker
hostname: w1.home.local
kubernetes:
  version: v1.37.2
  controlPlaneEndpoint: controller.home.local:6443
  credentials:
    token: kbex01.exampletoken0001
    caCertHashes: ["sha256:0000000000000000000000000000000000000000000000000000000000000000"]
`

func TestHTTPSourceRetriesAndPins(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The server is still starting for the first two requests.
		if hits.Add(1) <= 2 {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte(workerConfig))
	}))
	t.Cleanup(srv.Close)
	sum := sha256.Sum256([]byte(workerConfig))
	pin := hex.EncodeToString(sum[:])
	fast := func(root string) Options {
		return Options{Root: root, HTTPAttempts: 4, HTTPBackoff: 10 * time.Millisecond}
	}

	t.Run("retries after two failures, pin matches", func(t *testing.T) {
		hits.Store(0)
		root := t.TempDir()
		u := strings.Replace(srv.URL, "http://", "http://user:hunter2@", 1) + "/m.yaml"
		writeRootFile(t, root, "/proc/cmdline", "BOOT_IMAGE=/vmlinuz ro kubeboot.config="+u+" kubeboot.config.sha256=sha256:"+pin+"\n")
		res, err := Load(context.Background(), fast(root))
		if err != nil {
			t.Fatal(err)
		}
		if hits.Load() != 3 {
			t.Errorf("%d requests, want 3", hits.Load())
		}
		if res.Config.Hostname != "w1.home.local" {
			t.Errorf("hostname = %q", res.Config.Hostname)
		}
		if want := "kernel command line " + strings.Replace(srv.URL, "http://", "http://REDACTED@", 1) + "/m.yaml"; res.Source != want {
			t.Errorf("Source = %q, want %q (credentials redacted)", res.Source, want)
		}
	})
	t.Run("pin mismatch", func(t *testing.T) {
		hits.Store(2)
		root := t.TempDir()
		writeRootFile(t, root, "/proc/cmdline", "kubeboot.config="+srv.URL+"/m.yaml kubeboot.config.sha256="+strings.Repeat("0", 64))
		_, err := Load(context.Background(), fast(root))
		if err == nil || !strings.Contains(err.Error(), "sha256 is "+pin) {
			t.Errorf("err = %v, want a sha256 mismatch naming the real sum", err)
		}
	})
	t.Run("gives up", func(t *testing.T) {
		hits.Store(-100)
		root := t.TempDir()
		writeRootFile(t, root, "/proc/cmdline", "kubeboot.config="+srv.URL+"/m.yaml")
		_, err := Load(context.Background(), fast(root))
		if err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "after 4 attempts") {
			t.Errorf("err = %v", err)
		}
	})
}

func TestSourceOrder(t *testing.T) {
	root := t.TempDir()
	writeRootFile(t, root, BakedPath, strings.Replace(workerConfig, "w1.home.local", "baked", 1))
	writeRootFile(t, root, "/srv/node.yaml", strings.Replace(workerConfig, "w1.home.local", "from-cmdline", 1))
	explicit := filepath.Join(t.TempDir(), "explicit.yaml")
	if err := os.WriteFile(explicit, []byte(strings.Replace(workerConfig, "w1.home.local", "explicit", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	load := func(o Options) (string, string) {
		t.Helper()
		res, err := Load(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		return res.Config.Hostname, res.Source
	}

	if h, s := load(Options{Root: root}); h != "baked" || s != "image "+BakedPath {
		t.Errorf("without other sources got %q from %q, want the baked file", h, s)
	}
	img := fatImage(t, map[string][]byte{"user-data": []byte(strings.Replace(workerConfig, "w1.home.local", "nocloud", 1))})
	root2 := rootWithVolume(t, "CIDATA", img)
	writeRootFile(t, root2, BakedPath, workerConfig)
	if h, _ := load(Options{Root: root2}); h != "nocloud" {
		t.Errorf("NoCloud must win over the baked file, got %q", h)
	}
	for _, loc := range []string{"/srv/node.yaml", "file:///srv/node.yaml"} {
		writeRootFile(t, root, "/proc/cmdline", "quiet kubeboot.config="+loc)
		if h, s := load(Options{Root: root}); h != "from-cmdline" || s != "kernel command line /srv/node.yaml" {
			t.Errorf("kubeboot.config=%s: got %q from %q", loc, h, s)
		}
	}
	if h, s := load(Options{Root: root, ConfigPath: explicit}); h != "explicit" || s != "--config "+explicit {
		t.Errorf("--config must win over everything, got %q from %q", h, s)
	}

	// A command line naming a config that is missing is an error, not a
	// reason to fall back to the baked config.
	writeRootFile(t, root, "/proc/cmdline", "kubeboot.config=/srv/missing.yaml")
	if _, err := Load(context.Background(), Options{Root: root}); err == nil || !strings.Contains(err.Error(), "/srv/missing.yaml") {
		t.Errorf("err = %v", err)
	}
	writeRootFile(t, root, "/proc/cmdline", "kubeboot.config=relative.yaml")
	if _, err := Load(context.Background(), Options{Root: root}); err == nil || !strings.Contains(err.Error(), "absolute path") {
		t.Errorf("err = %v", err)
	}

	if _, err := Load(context.Background(), Options{Root: t.TempDir()}); !errors.Is(err, ErrNoConfig) {
		t.Errorf("empty root: err = %v, want ErrNoConfig", err)
	}
}

func TestParseCmdline(t *testing.T) {
	got := ParseCmdline(`BOOT_IMAGE=/boot/vmlinuz root=UUID=1 "kubeboot.config=/srv/a b.yaml" kubeboot.config.sha256=ab kubeboot.other console=ttyS0 kubeboot.config=/last.yaml` + "\n")
	want := map[string]string{"kubeboot.config": "/last.yaml", "kubeboot.config.sha256": "ab", "kubeboot.other": ""}
	if len(got) != len(want) {
		t.Errorf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if got := ParseCmdline(`a "kubeboot.config=/srv/a b.yaml" b`)["kubeboot.config"]; got != "/srv/a b.yaml" {
		t.Errorf("quoted value = %q", got)
	}
}
