package machineconfig

import (
	"os"
	"testing"
)

// bootstrapd parses the config on every boot and `kubeboot validate` on
// every call; these keep the strict positional decoder honest about cost.
func benchmarkParse(b *testing.B, path string, parse func(string, []byte) error) {
	data, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if err := parse(path, data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseController(b *testing.B) {
	benchmarkParse(b, "../configs/controller.yaml", func(f string, d []byte) error {
		_, err := Parse(f, d)
		return err
	})
}

func BenchmarkParseNetplanBond(b *testing.B) {
	benchmarkParse(b, "../configs/netplan/bond.yaml", func(f string, d []byte) error {
		_, err := ParseNetplan(f, d)
		return err
	})
}

func BenchmarkHash(b *testing.B) {
	c, err := Load("../configs/controller.yaml")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = c.Hash()
	}
}
