package machineconfig

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
)

// Hash is the SHA-256 (hex) of a canonical encoding of the config: the same
// settings give the same hash whatever the key order, comments or
// whitespace of the file. bootstrapd compares it to know whether a stage
// already applied this very config. Secrets are part of the hash (a new
// token is a new config); the hash does not reveal them.
func (c *MachineConfig) Hash() string {
	h := sha256.New()
	// encoding/json writes struct fields in declaration order and map keys
	// sorted, which is canonical for this schema.
	b, err := json.Marshal(c)
	if err != nil {
		// Only reachable for configs built in code with values JSON cannot
		// hold (NaN in a patch); Parse rejects those.
		b = fmt.Appendf(nil, "unencodable: %v", err)
	}
	fmt.Fprintf(h, "%s\n", APIVersion)
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}
