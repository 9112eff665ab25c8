package podnetwork

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"kubeboot.dev/kubeboot/image/spec"
	"kubeboot.dev/kubeboot/machineconfig"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

const testImage = "ghcr.io/flannel-io/flannel:v0.28.10"

func loadConfig(t *testing.T, name string) *machineconfig.MachineConfig {
	t.Helper()
	cfg, err := machineconfig.Load("../../configs/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestRenderGolden renders the manifests for the reference controller
// (host-gw, 172.17.0.0/16) and for a dual-stack vxlan variant.
func TestRenderGolden(t *testing.T) {
	for _, tc := range []struct {
		golden string
		change func(*machineconfig.MachineConfig)
	}{
		{"controller.golden", func(*machineconfig.MachineConfig) {}},
		{"vxlan-dualstack.golden", func(c *machineconfig.MachineConfig) {
			c.Kubernetes.PodNetwork.Backend = machineconfig.PodNetworkVXLAN
			c.Kubernetes.PodSubnet = "172.17.0.0/16,fd00:17::/56"
		}},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			cfg := loadConfig(t, "controller.yaml")
			tc.change(cfg)
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			objs, err := Render(cfg, testImage)
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			for _, o := range objs {
				y, err := yaml.Marshal(o.Object)
				if err != nil {
					t.Fatal(err)
				}
				out.WriteString("---\n")
				out.Write(y)
			}
			p := filepath.Join("testdata", tc.golden)
			if *update {
				if err := os.WriteFile(p, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(p)
			if err != nil {
				t.Fatalf("%v (run go test -run TestRenderGolden -update ./bootstrapd/podnetwork)", err)
			}
			if !bytes.Equal(out.Bytes(), want) {
				t.Errorf("render differs from %s (go test -run TestRenderGolden -update ./bootstrapd/podnetwork):\n%s", p, out.String())
			}
		})
	}
}

func TestNetConf(t *testing.T) {
	cfg := loadConfig(t, "controller.yaml")
	nc, err := NetConf(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"Network": "172.17.0.0/16"`, `"Type": "host-gw"`, `"EnableIPv6": false`} {
		if !strings.Contains(string(nc), want) {
			t.Errorf("net-conf.json lacks %s:\n%s", want, nc)
		}
	}
}

func TestRenderRefusesOtherImages(t *testing.T) {
	cfg := loadConfig(t, "controller.yaml")
	for _, image := range []string{"docker.io/library/busybox:1", "ghcr.io/flannel-io/flannel:v1\"\nkind: Secret", ""} {
		if _, err := Render(cfg, image); err == nil {
			t.Errorf("Render accepted image %q", image)
		}
	}
}

// The stage finds, in the index the image builder writes, the flannel
// image configs/image.yaml pins.
func TestImageIndex(t *testing.T) {
	s, err := spec.Load("../../configs/image.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := s.PodNetworkImages()
	if len(want) != 1 {
		t.Fatalf("configs/image.yaml pod network images: %v", want)
	}
	dir := t.TempDir()
	index := filepath.Join(dir, "index")
	write := func(s string) {
		if err := os.WriteFile(index, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("registry.k8s.io/pause:3.10.2 sha256:aa pause_3.10.2.tar\n" + want[0] + " sha256:bb flannel_v0.28.10.tar\n")
	if got, err := Image(index); err != nil || got != want[0] {
		t.Errorf("Image = %q, %v; want %s", got, err, want[0])
	}
	if _, err := Render(loadConfig(t, "controller.yaml"), want[0]); err != nil {
		t.Errorf("the pinned image does not render: %v", err)
	}
	write("registry.k8s.io/pause:3.10.2 sha256:aa pause_3.10.2.tar\n")
	if _, err := Image(index); err == nil || !strings.Contains(err.Error(), "no ghcr.io/flannel-io/flannel image") {
		t.Errorf("an index without flannel: %v", err)
	}
	if _, err := Image(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing index was accepted")
	}
}
