package kubeadm

import (
	"slices"
	"testing"

	"kubeboot.dev/kubeboot/bootstrapd/stage"
)

// referenceOutput is what `kubeadm init` printed in the reference procedure
// (shared/seed), plus an error line in kubeadm's format.
const referenceOutput = `[init] Using Kubernetes version: v1.31.0
[preflight] Running pre-flight checks
	[WARNING Firewalld]: firewalld is active, please ensure ports [6443 10250] are open or your cluster may not function correctly
	[WARNING FileExisting-socat]: socat not found in system path
	[WARNING Service-Kubelet]: kubelet service is not enabled, please run 'systemctl enable kubelet.service'
error execution phase preflight: [preflight] Some fatal errors occurred:
	[ERROR FileContent--proc-sys-net-ipv4-ip_forward]: /proc/sys/net/ipv4/ip_forward contents are not set to 1
[preflight] If you know what you are doing, you can make a check non-fatal with ` + "`--ignore-preflight-errors=...`"

func TestParsePreflight(t *testing.T) {
	got := ParsePreflight(referenceOutput)
	want := []Finding{
		{"WARNING", "Firewalld", "firewalld is active, please ensure ports [6443 10250] are open or your cluster may not function correctly"},
		{"WARNING", "FileExisting-socat", "socat not found in system path"},
		{"WARNING", "Service-Kubelet", "kubelet service is not enabled, please run 'systemctl enable kubelet.service'"},
		{"ERROR", "FileContent--proc-sys-net-ipv4-ip_forward", "/proc/sys/net/ipv4/ip_forward contents are not set to 1"},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("ParsePreflight =\n%q\nwant\n%q", got, want)
	}
}

func checks(fs []Finding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.Check)
	}
	return out
}

func TestJudge(t *testing.T) {
	findings := ParsePreflight(referenceOutput)
	controlPlane := []string{"2379-2380/tcp", "6443/tcp", "10250/tcp", "10257/tcp", "10259/tcp"}
	for _, tc := range []struct {
		name                     string
		fw                       stage.FirewallResult
		ignore                   []string
		dropped, accepted, fatal []string
	}{
		{"firewalld verified both ports", stage.FirewallResult{Backend: "firewalld", Open: controlPlane}, nil,
			[]string{"Firewalld"}, nil, []string{"FileExisting-socat", "Service-Kubelet", "FileContent--proc-sys-net-ipv4-ip_forward"}},
		{"a range covers the port", stage.FirewallResult{Backend: "firewalld", Open: []string{"6000-7000/tcp", "10250/tcp"}}, nil,
			[]string{"Firewalld"}, nil, []string{"FileExisting-socat", "Service-Kubelet", "FileContent--proc-sys-net-ipv4-ip_forward"}},
		{"one port not verified", stage.FirewallResult{Backend: "firewalld", Open: []string{"6443/tcp"}}, nil,
			nil, nil, []string{"Firewalld", "FileExisting-socat", "Service-Kubelet", "FileContent--proc-sys-net-ipv4-ip_forward"}},
		{"udp is not tcp", stage.FirewallResult{Backend: "firewalld", Open: []string{"6443/udp", "10250/udp"}}, nil,
			nil, nil, []string{"Firewalld", "FileExisting-socat", "Service-Kubelet", "FileContent--proc-sys-net-ipv4-ip_forward"}},
		{"ports opened by nftables: firewalld's own rules unknown", stage.FirewallResult{Backend: "nftables", Open: controlPlane}, nil,
			nil, nil, []string{"Firewalld", "FileExisting-socat", "Service-Kubelet", "FileContent--proc-sys-net-ipv4-ip_forward"}},
		{"backend none vouches for nothing", stage.FirewallResult{Backend: "none"}, nil,
			nil, nil, []string{"Firewalld", "FileExisting-socat", "Service-Kubelet", "FileContent--proc-sys-net-ipv4-ip_forward"}},
		{"ignored checks pass, in any case", stage.FirewallResult{Backend: "firewalld", Open: controlPlane}, []string{"fileexisting-socat", "Service-Kubelet", "FileContent--proc-sys-net-ipv4-ip_forward"},
			[]string{"Firewalld"}, []string{"FileExisting-socat", "Service-Kubelet", "FileContent--proc-sys-net-ipv4-ip_forward"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := Judge(findings, tc.fw, tc.ignore)
			if !slices.Equal(checks(v.Dropped), tc.dropped) || !slices.Equal(checks(v.Accepted), tc.accepted) || !slices.Equal(checks(v.Fatal), tc.fatal) {
				t.Errorf("dropped %v accepted %v fatal %v; want %v %v %v", checks(v.Dropped), checks(v.Accepted), checks(v.Fatal), tc.dropped, tc.accepted, tc.fatal)
			}
		})
	}
}
