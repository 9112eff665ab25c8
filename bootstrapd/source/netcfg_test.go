package source

import (
	"context"
	"strings"
	"testing"
)

// network-config is merged as text (not re-encoded: the YAML encoder took
// 115 MiB for a 128 KiB flow list); every form netplan allows must merge.
func TestNetworkConfigForms(t *testing.T) {
	const body = "version: 2\nethernets:\n  nic0:\n    match:\n      macaddress: \"52:54:00:80:ad:b6\"\n    set-name: enp1s0\n    addresses: [192.0.2.5/24]\n"
	indented := "  " + strings.ReplaceAll(strings.TrimSuffix(body, "\n"), "\n", "\n  ") + "\n"
	for name, netcfg := range map[string]string{
		"under network:":          "network:\n" + indented,
		"bare":                    body,
		"document markers":        "%YAML 1.1\n---\nnetwork:\n" + indented + "...\n",
		"comment first":           "# written by a generator\n\nnetwork:\n" + indented,
		"quoted network key":      "\"network\" :\n" + indented,
		"CRLF":                    strings.ReplaceAll("network:\n"+indented, "\n", "\r\n"),
		"no newline at the end":   strings.TrimSuffix(body, "\n"),
		"block scalar in comment": "network:\n  # |\n" + indented,
	} {
		t.Run(name, func(t *testing.T) {
			img := isoImage(t, map[string][]byte{"user-data": []byte(userData), "meta-data": []byte(testMetaData), "network-config": []byte(netcfg)})
			res, err := Load(context.Background(), Options{Root: rootWithVolume(t, "cidata", img)})
			if err != nil {
				t.Fatal(err)
			}
			ifs := res.Config.Network.Interfaces
			if len(ifs) != 1 || ifs[0].Name != "enp1s0" || ifs[0].Addresses[0] != "192.0.2.5/24" {
				t.Errorf("interfaces = %+v", ifs)
			}
		})
	}
	// Roots that are not block mappings with plain keys at column 0 are
	// refused, as such a user-data is, rather than guessed at.
	for name, netcfg := range map[string]string{
		"flow mapping":            `{network: {version: 2, ethernets: {nic0: {addresses: [192.0.2.5/24]}}}}`,
		"content on the --- line": "--- {version: 2}\n",
		"indented root":           "  " + strings.ReplaceAll(strings.TrimSuffix("network:\n"+indented, "\n"), "\n", "\n  ") + "\n",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := parseNoCloud("v", []byte(userData), nil, []byte(netcfg), nil)
			if err == nil || !strings.Contains(err.Error(), "v: network-config") || !strings.Contains(err.Error(), "not supported") && !strings.Contains(err.Error(), "block mapping") {
				t.Errorf("err = %v", err)
			}
		})
	}
}
