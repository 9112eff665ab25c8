package e2e

import (
	"bytes"
	"testing"
)

func TestVLANTagging(t *testing.T) {
	dst := []byte{0x52, 0x54, 0x00, 0x80, 0xad, 0xe6}
	src := []byte{0x52, 0x54, 0x00, 0x6a, 0x9d, 0xe6}
	payload := []byte{0x08, 0x00, 0x45, 0x00, 0x00, 0x1c}
	plain := append(append(append([]byte{}, dst...), src...), payload...)

	tag, ok := tagged(plain, 100)
	want := append(append(append(append([]byte{}, dst...), src...), 0x81, 0x00, 0x00, 100), payload...)
	if !ok || !bytes.Equal(tag, want) {
		t.Fatalf("tagged = % x, want % x", tag, want)
	}
	back, ok := untagged(tag, 100)
	if !ok || !bytes.Equal(back, plain) {
		t.Fatalf("untagged = % x, want % x", back, plain)
	}
	// A priority in the tag does not change the VLAN.
	prio := append([]byte{}, tag...)
	prio[14] |= 0xa0
	if back, ok := untagged(prio, 100); !ok || !bytes.Equal(back, plain) {
		t.Errorf("untagged with priority bits = % x, %v", back, ok)
	}
	for name, f := range map[string][]byte{
		"untagged frame": plain,
		"other VLAN":     func() []byte { o, _ := tagged(plain, 200); return o }(),
		"runt":           tag[:16],
	} {
		if out, ok := untagged(f, 100); ok {
			t.Errorf("%s: untagged passed it on as % x", name, out)
		}
	}
	if _, ok := tagged(plain[:10], 100); ok {
		t.Error("tagged accepted a frame shorter than an Ethernet header")
	}
}
