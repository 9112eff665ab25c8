package kubeadmconfig

import (
	"maps"
	"slices"

	"go.yaml.in/yaml/v3"
)

// toNode turns a value (a document struct, or a decoded patch) into a YAML
// tree. Struct fields keep their declaration order; map keys are sorted.
func toNode(v any) (*yaml.Node, error) {
	var n yaml.Node
	if err := n.Encode(v); err != nil {
		return nil, err
	}
	return &n, nil
}

// mergePatch applies an RFC 7386 JSON merge patch to the YAML tree target
// and returns the result: a mapping patch merges key by key (null deletes
// a key), anything else replaces the target, lists included. Keys keep
// their place; new keys follow, in sorted order, so output is stable.
func mergePatch(target *yaml.Node, patch any) (*yaml.Node, error) {
	obj, ok := patch.(map[string]any)
	if !ok {
		return toNode(patch)
	}
	if target == nil || target.Kind != yaml.MappingNode {
		target = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	}
	for _, key := range slices.Sorted(maps.Keys(obj)) {
		at := keyIndex(target, key)
		if obj[key] == nil {
			if at >= 0 {
				target.Content = slices.Delete(target.Content, at, at+2)
			}
			continue
		}
		var old *yaml.Node
		if at >= 0 {
			old = target.Content[at+1]
		}
		merged, err := mergePatch(old, obj[key])
		if err != nil {
			return nil, err
		}
		if at >= 0 {
			target.Content[at+1] = merged
		} else {
			target.Content = append(target.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, merged)
		}
	}
	return target, nil
}

// keyIndex is the index of key's key node in mapping n, or -1.
func keyIndex(n *yaml.Node, key string) int {
	if n == nil || n.Kind != yaml.MappingNode {
		return -1
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return i
		}
	}
	return -1
}

// child is the value at the path of mapping keys below n, or nil.
func child(n *yaml.Node, keys ...string) *yaml.Node {
	for _, k := range keys {
		at := keyIndex(n, k)
		if at < 0 {
			return nil
		}
		n = n.Content[at+1]
	}
	return n
}

// secretFields are where kubeadm's documents hold secrets (kubeadm marks
// them datapolicy:"token" or "security-key"), patched values included.
var secretFields = map[string][][]string{
	kindInit: {{"certificateKey"}},
	kindJoin: {{"discovery", "bootstrapToken", "token"}, {"discovery", "tlsBootstrapToken"}, {"controlPlane", "certificateKey"}},
}

// redact replaces every secret value in a rendered document.
func redact(doc *yaml.Node, kind string) {
	hide := func(n *yaml.Node) {
		if n != nil && n.Kind == yaml.ScalarNode {
			*n = yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: redactedValue}
		}
	}
	for _, p := range secretFields[kind] {
		hide(child(doc, p...))
	}
	if kind != kindInit {
		return
	}
	if tokens := child(doc, "bootstrapTokens"); tokens != nil && tokens.Kind == yaml.SequenceNode {
		for _, t := range tokens.Content {
			hide(child(t, "token"))
		}
	}
}
