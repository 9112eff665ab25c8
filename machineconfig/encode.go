package machineconfig

import (
	"bytes"

	"go.yaml.in/yaml/v3"
)

// Marshal encodes the config as the YAML document Parse reads back, with
// two-space indents as in configs/. Secrets are written in clear: the
// result is for a 0600 file.
func (c *MachineConfig) Marshal() []byte { return marshal(c) }

// Marshal encodes the bundle as the YAML document ParseBundle reads back;
// the result holds the secrets in clear.
func (b *Bundle) Marshal() []byte { return marshal(b) }

func marshal(v any) []byte {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		// The schema is strings, numbers, lists and maps of them.
		panic("machineconfig: marshal: " + err.Error())
	}
	if err := enc.Close(); err != nil {
		panic("machineconfig: marshal: " + err.Error())
	}
	return buf.Bytes()
}
