package verify

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// referenceReport is a report as the seed's controller would give it, with
// three failures: one section lost its default route, one pod is not
// ready, an image was pulled.
func referenceReport() *Report {
	r := &Report{Node: "controller.home.local", Role: "init", Config: "8a6a8c15f417", Source: "NoCloud volume /dev/sr0 (iso9660, label cidata)",
		Sections: []Section{
			{Name: "namespaces", Title: "Network namespaces (ip netns; the pod sandboxes' and the containers' namespaces)",
				Found: []string{
					"/run/netns/cni-19be561a-e22f-4e6d-8562-5abf81ac1183  net:[4026532246]",
					"pod kube-system/coredns-7c65d6cfc9-sr5mk  sandbox 457293a70d58c  netns /run/netns/cni-19be561a-e22f-4e6d-8562-5abf81ac1183  pid 2211: cni-19be561a-e22f-4e6d-8562-5abf81ac1183 net:[4026532246]",
					"container 8517fb7aa7f80 kube-proxy (pod kube-system/kube-proxy-7zqsq) pid 1877: host",
				},
				Checks: []Check{
					{"running pod sandboxes", true, "at least one (kube-proxy runs on every node)", "8 running, 6 of them on the host network"},
					{"pod kube-system/coredns-7c65d6cfc9-sr5mk has its own network namespace", true, "a namespace of its own, mounted at the netns path the runtime reports", "cni-19be561a-e22f-4e6d-8562-5abf81ac1183 net:[4026532246]"},
					{"container kube-proxy (pod kube-system/kube-proxy-7zqsq) is in its pod's network namespace", true, "host", "host"},
				}},
			{Name: "addresses", Title: "Addresses and routes (ip addr, ip route) compared with the config",
				Found: []string{
					"enp1s0  inet 172.16.0.11/24 scope global noprefixroute",
					"route 172.16.0.0/24 dev enp1s0 proto kernel scope link src 172.16.0.11 metric 100",
					"route 172.17.0.0/24 dev cni0 proto kernel scope link src 172.17.0.1 metric 0",
				},
				Checks: []Check{
					{"address 172.16.0.11/24 on enp1s0", true, "172.16.0.11/24", "enp1s0 has 172.16.0.11/24"},
					{"route default via 172.16.0.254 dev enp1s0 proto static metric 100", false, "default via 172.16.0.254 dev enp1s0 proto static metric 100", "no route to default (0.0.0.0/0)"},
					{"pod CIDR 172.17.0.0/24 of this node on cni0", true, "172.17.0.0/24 dev cni0", "172.17.0.0/24 dev cni0 proto kernel scope link src 172.17.0.1 metric 0"},
				}},
			{Name: "cluster", Title: "Nodes and pods (kubectl get nodes; kubectl get all -A)",
				Found: []string{"node/controller.home.local  Ready  control-plane  v1.37.2  172.16.0.11  172.17.0.0/24"},
				Checks: []Check{
					{"node controller.home.local Ready", true, "Ready", "Ready"},
					{"pod kube-system/coredns-7c65d6cfc9-zczmd running and ready", false, "Running, ready", "is Pending (ContainerCreating)\x1b[2J"},
				}},
			{Name: "containers", Title: "Containers and images (crictl ps -a; crictl images)",
				Found: []string{
					"pod kube-system/kube-proxy-7zqsq  container kube-proxy  image registry.k8s.io/kube-proxy:v1.37.2  Running  restarts 0  id 8517fb7aa7f80",
					"image registry.k8s.io/kube-proxy:v1.37.2  registry.k8s.io/kube-proxy@sha256:858a067920945b46ec55f99d2c8c8402ddb91c57d8aa705ab5dc61002f97455b  id 505d571f5fd56  pinned  20.3MB",
					"image docker.io/library/nginx:1.29  docker.io/library/nginx@sha256:0d17b565c37bcbd895e9d92315a05c1c3c9a29f762b011a10c54a66cd53c9b31  id 9a3a3d95f3a7c  not pinned  59.8MB",
				},
				Checks: []Check{
					{"container kube-proxy of pod kube-system/kube-proxy-7zqsq", true, "Running (or Exited 0: an init container that finished)", "Running, restarts 0"},
					{"image registry.k8s.io/kube-proxy:v1.37.2", true, "registry.k8s.io/kube-proxy@sha256:858a067920945b46ec55f99d2c8c8402ddb91c57d8aa705ab5dc61002f97455b, pinned", "registry.k8s.io/kube-proxy@sha256:858a067920945b46ec55f99d2c8c8402ddb91c57d8aa705ab5dc61002f97455b, pinned"},
					{"image docker.io/library/nginx:1.29", false, "only the images of /usr/share/kubeboot/images/index", "not in the pinned set: pulled or imported on the node"},
				}},
		}}
	r.finish()
	return r
}

// TestTextReport compares the text rendering with the golden file: found
// lines indented under their section, passing checks on one line, failures
// with what was expected and found, the summary naming the failed sections,
// and no control character reaching the terminal.
func TestTextReport(t *testing.T) {
	var b bytes.Buffer
	r := referenceReport()
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "reference.golden")
	if *update {
		if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), b.String()); diff != "" {
		t.Errorf("text report (-golden +got), rerun with -update if intended:\n%s", diff)
	}
	if r.OK || r.Checks != 11 || r.Failed != 3 {
		t.Errorf("ok %v, %d checks, %d failed; want false, 11, 3", r.OK, r.Checks, r.Failed)
	}
}

// TestJSONReport checks --json carries the same structure.
func TestJSONReport(t *testing.T) {
	r := referenceReport()
	var b bytes.Buffer
	if err := r.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(*r, back); diff != "" {
		t.Errorf("JSON round trip (-want +got):\n%s", diff)
	}
	for _, key := range []string{`"ok": false`, `"failed": 3`, `"name": "containers"`, `"found": "not in the pinned set: pulled or imported on the node"`, `"expected": "default via 172.16.0.254 dev enp1s0 proto static metric 100"`, `"found": "no route to default (0.0.0.0/0)"`} {
		if !strings.Contains(b.String(), key) {
			t.Errorf("JSON lacks %s:\n%s", key, b.String())
		}
	}
}

// TestReportBounds checks that a runaway listing is cut with a count and a
// long field is clipped.
func TestReportBounds(t *testing.T) {
	s := Section{Name: "cluster", Title: "t"}
	for i := 0; i < 2*maxFoundLines; i++ {
		s.found("pod/kube-system/p%d", i)
	}
	s.check("long", false, strings.Repeat("x", 5000), "y")
	r := &Report{Sections: []Section{s}}
	r.finish()
	got := r.Sections[0]
	if len(got.Found) != maxFoundLines || got.Found[maxFoundLines-1] != "... 301 more lines not shown" {
		t.Errorf("%d lines, last %q", len(got.Found), got.Found[len(got.Found)-1])
	}
	if n := len([]rune(got.Checks[0].Expected)); n != maxField+3 {
		t.Errorf("clipped field has %d runes", n)
	}
}
