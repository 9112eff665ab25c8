package kubeadmconfig

import "testing"

// bootstrapd renders the kubeadm config on every boot of a node that has
// not joined yet, and `bootstrapd plan` on every call (issue 12 asks for
// this figure). The three roles, and the init node with patches of every
// kind.
func BenchmarkRender(b *testing.B) {
	for _, c := range []renderCase{renderCases[0], renderCases[1], renderCases[2], renderCases[8]} {
		b.Run(c.name, func(b *testing.B) {
			cfg := loadConfig(b, c.config)
			in := testInputs()
			if c.inputs != nil {
				c.inputs(&in)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Render(cfg, in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
