package source

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"kubeboot.dev/kubeboot/machineconfig"
)

// FuzzNetworkConfig feeds network-config documents to the netplan parser
// and to the NoCloud merge that puts them into user-data as text, here the
// worker config without a network section (seeds: configs/netplan and
// machineconfig's netplan test files). Neither may
// panic; a document the parser takes is either refused by the merge with
// its own message, or merges into a config that is valid exactly when the
// user-data config with the parsed network is, with the same network.
func FuzzNetworkConfig(f *testing.F) {
	seeds, _ := filepath.Glob("../../configs/netplan/*.yaml")
	more, _ := filepath.Glob("../../machineconfig/testdata/netplan-*.yaml")
	for _, p := range append(seeds, more...) {
		if strings.HasSuffix(p, ".native.yaml") {
			continue
		}
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	base, err := machineconfig.Parse("user-data", []byte(workerConfig))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, netcfg []byte) {
		if len(bytes.TrimSpace(netcfg)) == 0 {
			return // a blank network-config is no network-config, as for cloud-init
		}
		net, err := machineconfig.ParseNetplan("network-config", netcfg)
		res, merr := parseNoCloud("v", []byte(workerConfig), nil, netcfg, nil)
		if err != nil {
			if merr == nil {
				t.Fatalf("merged a network-config the parser refuses (%v)", err)
			}
			return
		}
		if merr != nil && (strings.Contains(merr.Error(), "v: network-config must be") || strings.Contains(merr.Error(), "is not supported") ||
			strings.Contains(merr.Error(), "merged is")) {
			return // refused by the merge, saying so
		}
		// The merged config went through Parse, which sets defaults
		// (nameservers) on the network too.
		defaulted := machineconfig.MachineConfig{Network: *net}
		defaulted.SetDefaults()
		want := *base
		want.Network = defaulted.Network
		verr := want.Validate()
		if (merr == nil) != (verr == nil) {
			t.Fatalf("merged config: %v\nuser-data config with the parsed network: %v", merr, verr)
		}
		if merr == nil && !reflect.DeepEqual(res.Config.Network, want.Network) {
			t.Fatalf("merged network %+v\nparsed network %+v", res.Config.Network, want.Network)
		}
	})
}
