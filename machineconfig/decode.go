package machineconfig

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"kubeboot.dev/kubeboot/internal/printable"
)

// Parse decodes a machine config strictly, applies the defaults (see
// SetDefaults) and validates it. On any problem it returns a nil config and
// an ErrorList holding every problem found, each with file, line, column and
// field path. Files the config names (credentials.secretsBundle) are not
// read: use ParseWithFiles for that.
func Parse(filename string, data []byte) (*MachineConfig, error) {
	return ParseWithFiles(filename, data, nil)
}

// ParseWithFiles is Parse that also reads the files the config names
// through files: credentials.secretsBundle is parsed with ParseBundle,
// checked against the role and kept in Credentials.Bundle, reduced to what
// the role needs. A file that cannot be read is an error at the field that
// names it; the bundle's own problems are reported at its own lines.
func ParseWithFiles(filename string, data []byte, files Files) (*MachineConfig, error) {
	d := newDecoder(filename)
	root := d.parseDocument(data, MaxSize, "a mapping starting with apiVersion: "+APIVersion)
	if root == nil {
		return nil, d.errs.errOrNil()
	}
	if k := mappingValue(root, "kind"); k != nil && k.Kind == yaml.ScalarNode && k.Value != Kind && suggest(k.Value, []string{Kind}) == "" {
		// Another kind of document (an ImageSpec, say): its fields would
		// all be "unknown keys" here, which hides the one real problem.
		d.fail("kind", pos(k), "kind %q: this file is not a %s, so nothing else was checked", k.Value, Kind)
		return nil, d.errs.errOrNil()
	}
	cfg := &MachineConfig{}
	d.decodeMachineConfig(root, cfg)
	if root.Kind != yaml.MappingNode || d.nodes >= maxNodes {
		return nil, d.errs.errOrNil() // nothing sensible to validate
	}
	cfg.SetDefaults()
	if files != nil {
		d.readBundle(filename, &cfg.Kubernetes.Credentials, files)
	}
	d.report(validateConfig(cfg))
	if err := d.errs.errOrNil(); err != nil {
		return nil, err
	}
	if b := cfg.Kubernetes.Credentials.Bundle; b != nil {
		cfg.Kubernetes.Credentials.Bundle = b.ForRole(cfg.Role)
	}
	return cfg, nil
}

// readBundle reads and parses credentials.secretsBundle into cr.Bundle.
func (d *decoder) readBundle(filename string, cr *Credentials, files Files) {
	const field = "kubernetes.credentials.secretsBundle"
	name := cr.SecretsBundle
	if name == "" || d.bad[field] || strings.ContainsAny(name, "\x00\n") {
		return
	}
	at := d.where[field].value
	data, err := files(name)
	if err != nil {
		d.fail(field, at, "secretsBundle %q: %v (kubeboot secrets gen -o FILE makes a bundle)", name, err)
		return
	}
	shown := name
	if !filepath.IsAbs(name) {
		shown = filepath.Join(filepath.Dir(filename), name)
	}
	b, err := ParseBundle(shown, data)
	if err != nil {
		var list ErrorList
		if errors.As(err, &list) {
			d.errs = append(d.errs, list...)
		}
		d.fail(field, at, "secretsBundle %q is not a valid cluster secrets bundle (see the errors in %s)", name, shown)
		return
	}
	cr.Bundle = &b.ClusterSecrets
}

// Load reads the file at path and parses it with Parse.
func Load(path string) (*MachineConfig, error) {
	data, err := ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

// LoadWithFiles reads the file at path and parses it with ParseWithFiles;
// the files it names are read relative to its directory, or at their
// absolute paths on this machine.
func LoadWithFiles(path string) (*MachineConfig, error) {
	data, err := ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseWithFiles(path, data, FilesFrom("", filepath.Dir(path)))
}

// ReadFile reads at most MaxSize bytes of a config file, so that a huge
// file or a device such as /dev/zero fails at once with a clear error
// instead of filling memory.
func ReadFile(path string) ([]byte, error) {
	data, err := readAtMost(path, MaxSize, false)
	if errors.Is(err, errTooLarge) {
		return nil, ErrorList{tooLarge(path)}
	}
	if err != nil {
		return nil, fmt.Errorf("machine config: %w", err)
	}
	return data, nil
}

func tooLarge(file string) Error {
	return Error{File: file, Line: 1, Column: 1, Message: fmt.Sprintf("larger than %d KiB, the limit for a machine config (real ones are a few KiB)", MaxSize>>10)}
}

// ParseNetplan decodes a cloud-init network-config version 2 document (the
// netplan format), with or without the top-level "network:" key, into the
// internal network model and validates it.
func ParseNetplan(filename string, data []byte) (*Network, error) {
	d := newDecoder(filename)
	root := d.parseDocument(data, MaxSize, "a mapping with version: 2")
	if root == nil {
		return nil, d.errs.errOrNil()
	}
	d.where[""] = located{value: pos(root)}
	if root.Kind != yaml.MappingNode {
		d.fail("", pos(root), "expected a mapping with version: 2, found %s", describe(root))
		return nil, d.errs.errOrNil()
	}
	n, display := root, ""
	if v := mappingValue(root, "network"); v != nil && len(root.Content) == 2 {
		n, display = d.resolve(v), "network"
		d.record("network", root.Content[0], n)
		if n == nil {
			return nil, d.errs.errOrNil()
		}
	}
	if n.Kind != yaml.MappingNode {
		d.fail(display, pos(n), "expected a mapping with version: 2, found %s", describe(n))
		return nil, d.errs.errOrNil()
	}
	if mappingValue(n, "version") == nil {
		// As in a machine config's network section, where version is what
		// tells netplan from the native form; cloud-init needs it too.
		d.fail(display, pos(n), "version is required: a network-config v2 document has version: 2")
	}
	var net Network
	d.decodeNetplan(n, display, "network", &net)
	var c checker
	c.network(&net, "network")
	d.report(c.probs)
	if err := d.errs.errOrNil(); err != nil {
		return nil, err
	}
	return &net, nil
}

type position struct{ line, column int }

func pos(n *yaml.Node) position { return position{n.Line, n.Column} }

// located is where a field is in the file and how the file spells its path
// (which differs from the internal path for netplan input).
type located struct {
	display string
	key     position // the key of a mapping entry; zero for list items
	value   position
}

// decoder walks a yaml.Node tree into the Go structs itself, so that it
// knows the position of every field and can report every problem at once.
type decoder struct {
	file  string
	errs  ErrorList
	where map[string]located // internal path -> position and display path
	bad   map[string]bool    // display paths that failed to decode
	// incomplete are display paths of mappings with an unknown key: a
	// "missing field" problem there is most likely that misspelled key.
	incomplete map[string]bool
	nodes      int // nodes visited, bounded against alias bombs
	// yaml11Bools accepts yes/no/on/off as booleans, as netplan does.
	yaml11Bools bool
	netplan     bool
	// secrets are the scalar nodes decoded into a Secret: an alias of one
	// elsewhere would put the secret into errors that quote that field.
	secrets map[*yaml.Node]bool
	// secretFile is set for a secrets bundle: its errors quote no key and
	// no value, since a file named as a bundle may be any file (a key in
	// the wrong place, /etc/shadow) and its text the secret.
	secretFile bool
}

// maxNodes bounds the work for documents whose aliases expand enormously;
// a real machine config has a few hundred nodes.
const maxNodes = 200000

// maxDepth bounds the nesting of free-form values (kubeadm patches).
const maxDepth = 64

func newDecoder(file string) *decoder {
	return &decoder{file: file, where: map[string]located{}, bad: map[string]bool{}, incomplete: map[string]bool{}, secrets: map[*yaml.Node]bool{}}
}

func (d *decoder) fail(path string, at position, format string, args ...any) {
	d.add(Error{Line: at.line, Column: at.column, Path: path, Message: fmt.Sprintf(format, args...)})
	d.bad[path] = true
}

// add records a problem in this file. Its message and path may quote keys
// and values from the file: they are escaped (one error is one line, and
// a terminal shows it rather than obeys it) and clipped (a value may be as
// long as the file).
func (d *decoder) add(e Error) {
	e.File, e.Message, e.Path = d.file, clip(printable.String(e.Message)), clip(printable.String(e.Path))
	d.errs = append(d.errs, e)
}

// record remembers where the field at path is; key is nil for list items.
func (d *decoder) record(path string, key, value *yaml.Node) {
	l := located{display: path, value: pos(value)}
	if key != nil {
		l.key = pos(key)
	} else {
		l.key = l.value
	}
	d.where[path] = l
}

// alias makes the internal path resolve to where the display path is.
func (d *decoder) alias(internal, display string) {
	if l, ok := d.where[display]; ok {
		d.where[internal] = l
	}
}

// internalPathRE finds field paths quoted in messages ("also
// network.interfaces[0]") so they can be shown as the file spells them.
var internalPathRE = regexp.MustCompile(`network(\.[A-Za-z]+|\[[0-9]+\])+`)

var yamlLineErr = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// parseDocument parses data into the root node of its single document, or
// records a syntax error and returns nil; expect says what an empty
// document should have held.
func (d *decoder) parseDocument(data []byte, limit int, expect string) *yaml.Node {
	if len(data) > limit {
		d.fail("", position{1, 1}, "larger than %d KiB, the limit for %s (real ones are a few KiB)", limit>>10, expect)
		return nil
	}
	doc, err := parseYAML(data)
	if err != nil {
		d.syntaxError(data, err)
		return nil
	}
	if doc == nil || len(doc.Content) == 0 {
		d.fail("", position{1, 1}, "the document is empty; expected %s", expect)
		return nil
	}
	root := d.resolve(doc.Content[0])
	if root != nil && root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		d.fail("", position{1, 1}, "the document is empty; expected %s", expect)
		return nil
	}
	return root
}

var errMultipleDocuments = errors.New("more than one YAML document; a machine config is a single document")

// parseYAML parses exactly one document. The YAML library panics on a few
// malformed inputs; those become syntax errors instead of crashing the
// caller (bootstrapd must report, not die).
func parseYAML(data []byte) (doc *yaml.Node, err error) {
	defer func() {
		if r := recover(); r != nil {
			doc, err = nil, fmt.Errorf("yaml: malformed document (%v)", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var first yaml.Node
	if err := dec.Decode(&first); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, err
	}
	var second yaml.Node
	switch err := dec.Decode(&second); {
	case errors.Is(err, io.EOF):
		return &first, nil
	case err != nil:
		return nil, err
	}
	return nil, errMultipleDocuments
}

// syntaxError reports a YAML syntax error at the line that causes it. The
// YAML library names the line where the enclosing block starts, which for an
// indentation mistake can be far above it; the first prefix of the document
// that fails with the same message ends at the real culprit.
func (d *decoder) syntaxError(data []byte, err error) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if m := yamlLineErr.FindStringSubmatch(err.Error()); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	lines := strings.SplitAfter(string(data), "\n")
	if errors.Is(err, errMultipleDocuments) {
		for i, l := range lines {
			if i > 0 && strings.HasPrefix(l, "---") {
				line = i + 1
				break
			}
		}
	} else {
		line = culpritLine(data, lines, max(line, 1), msg)
	}
	if line < 1 {
		line = 1
	}
	if line > len(lines) {
		line = len(lines)
	}
	col := 1
	text := ""
	if line >= 1 && line <= len(lines) {
		text = lines[line-1]
		col = len(text) - len(strings.TrimLeft(text, " \t")) + 1
	}
	hint := ""
	switch {
	case strings.Contains(strings.TrimRight(text[:col-1], "\n"), "\t") || strings.Contains(msg, "cannot start any token") && strings.Contains(text, "\t"):
		hint = " (YAML does not allow tabs for indentation; use spaces)"
	case strings.Contains(msg, "did not find expected key"), strings.Contains(msg, "mapping values are not allowed"),
		strings.Contains(msg, "did not find expected '-' indicator"), strings.Contains(msg, "block mapping"):
		hint = " (check the indentation of this line)"
	}
	if col > len(strings.TrimRight(text, "\r\n")) {
		col = 1
	}
	// Name the last field read before the broken line, so the user sees
	// where in the structure the break is.
	if line > 1 && line <= len(lines) && !d.secretFile {
		before := len(strings.Join(lines[:line-1], ""))
		if doc, err := parseYAML(data[:before]); err == nil && doc != nil {
			if p := lastPath(doc, ""); p != "" {
				hint += "; it follows " + p
			}
		}
	}
	d.add(Error{Line: line, Column: col, Message: "YAML syntax error: " + msg + hint})
}

// lastPath is the field path of the last value in a parsed document.
func lastPath(n *yaml.Node, path string) string {
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) > 0 {
			return lastPath(n.Content[0], path)
		}
	case yaml.MappingNode:
		if k := len(n.Content); k >= 2 {
			return lastPath(n.Content[k-1], join(path, n.Content[k-2].Value))
		}
	case yaml.SequenceNode:
		if k := len(n.Content); k >= 1 {
			return lastPath(n.Content[k-1], index(path, k-1))
		}
	}
	return path
}

// culpritLine finds the line at or after from whose addition makes a
// prefix of the document fail with msg: the culprit of an indentation
// mistake that the library reports at the start of the enclosing block.
// It bisects between the prefix before from (taken as not failing) and the
// whole document (failing with msg), so a document of n lines costs about
// log2(n) parses instead of n: the search once made every exec of the fuzz
// target parse the document once per line.
func culpritLine(data []byte, lines []string, from int, msg string) int {
	ends := make([]int, len(lines)+1) // ends[i]: bytes in the first i lines
	for i, l := range lines {
		ends[i+1] = ends[i] + len(l)
	}
	lo, hi := from-1, len(lines) // lo lines pass (assumed), hi lines fail with msg
	if lo >= hi {
		return from
	}
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		if _, err := parseYAML(data[:ends[mid]]); err != nil && sameSyntaxError(err, msg) {
			hi = mid
		} else {
			lo = mid
		}
	}
	return hi
}

func sameSyntaxError(err error, msg string) bool {
	s := strings.TrimPrefix(err.Error(), "yaml: ")
	if m := yamlLineErr.FindStringSubmatch(err.Error()); m != nil {
		s = m[2]
	}
	return s == msg
}

// resolve follows aliases and counts visited nodes; nil means the budget
// is spent (reported once).
func (d *decoder) resolve(n *yaml.Node) *yaml.Node {
	d.nodes++
	if d.nodes == maxNodes {
		d.fail("", pos(n), "the document is too complex (aliases expand to more than %d nodes)", maxNodes)
	}
	if d.nodes >= maxNodes {
		return nil
	}
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func (d *decoder) decodeMachineConfig(root *yaml.Node, cfg *MachineConfig) {
	d.where[""] = located{value: pos(root), key: pos(root)}
	d.decode(root, reflect.ValueOf(cfg).Elem(), "")
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// mapKey is the path of an entry of a free-form map: sysctl keys and label
// keys hold dots and slashes, so they are quoted in brackets.
func mapKey(path, key string) string {
	return path + "[" + strconv.Quote(key) + "]"
}

func index(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

// describe names the kind of YAML value a node holds, for type errors. It
// never includes the value itself, which may be a secret.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!str":
			return "a string"
		case "!!int":
			return "an integer"
		case "!!float":
			return "a number"
		case "!!bool":
			return "a boolean"
		case "!!null":
			return "nothing"
		case "!!timestamp":
			return "a timestamp"
		}
		return "a value tagged " + strconv.Quote(n.Tag) // a tag may hold any character, a newline too
	}
	return "an unexpected YAML node"
}

func expected(t reflect.Type) string {
	if t == reflect.TypeFor[map[string]any]() {
		return "a mapping"
	}
	switch t.Kind() {
	case reflect.Struct, reflect.Map:
		return "a mapping"
	case reflect.Slice:
		return "a list"
	case reflect.String:
		return "a string"
	case reflect.Int, reflect.Int64, reflect.Int32:
		return "an integer"
	case reflect.Bool:
		return "a boolean (true or false)"
	case reflect.Pointer:
		return expected(t.Elem())
	}
	return t.String()
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!null" }

func (d *decoder) typeError(path string, n *yaml.Node, t reflect.Type) {
	d.fail(path, pos(n), "expected %s, found %s", expected(t), describe(n))
}

// decode fills v from n; path is the display path of the value.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	written := n
	if n = d.resolve(n); n == nil {
		return
	}
	if isNull(n) {
		return // an empty value is the same as leaving the key out
	}
	t := v.Type()
	switch {
	case t == reflect.TypeFor[Network]():
		d.decodeNetwork(n, v.Addr().Interface().(*Network), path)
		return
	case t == reflect.TypeFor[map[string]any]():
		if n.Kind != yaml.MappingNode {
			d.typeError(path, n, t)
			return
		}
		if m, ok := d.decodeAny(n, path, 0).(map[string]any); ok {
			v.Set(reflect.ValueOf(m))
		}
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			d.typeError(path, n, t)
			return
		}
		d.decodeStruct(n, v, path)
	case reflect.Pointer:
		p := reflect.New(t.Elem())
		d.decode(n, p.Elem(), path)
		v.Set(p)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.typeError(path, n, t)
			return
		}
		s := reflect.MakeSlice(t, len(n.Content), len(n.Content))
		for i, item := range n.Content {
			p := index(path, i)
			d.record(p, nil, item)
			d.decode(item, s.Index(i), p)
		}
		v.Set(s)
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			d.typeError(path, n, t)
			return
		}
		m := reflect.MakeMapWithSize(t, len(n.Content)/2)
		d.eachEntry(n, path, func(key string) string { return mapKey(path, key) }, func(key string, k, val *yaml.Node) {
			p := mapKey(path, key)
			d.record(p, k, val)
			ev := reflect.New(t.Elem()).Elem()
			d.decode(val, ev, p)
			m.SetMapIndex(reflect.ValueOf(key).Convert(t.Key()), ev)
		})
		v.Set(m)
	case reflect.String:
		if t == reflect.TypeFor[Secret]() {
			d.decodeSecret(written, n, v, path)
			return
		}
		if d.copiesSecret(written, n, path) {
			return
		}
		if s, ok := d.scalarString(n, path); ok {
			v.SetString(s)
		}
	case reflect.Int, reflect.Int64, reflect.Int32:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!int" {
			d.typeError(path, n, t)
			return
		}
		var i int64
		if err := n.Decode(&i); err != nil || v.OverflowInt(i) {
			d.fail(path, pos(n), "integer out of range")
			return
		}
		v.SetInt(i)
	case reflect.Bool:
		b, ok := d.scalarBool(n)
		if !ok {
			if n.Kind == yaml.ScalarNode && n.Tag == "!!str" && slices.Contains([]string{"yes", "no", "on", "off"}, strings.ToLower(n.Value)) {
				d.fail(path, pos(n), "expected a boolean, found the string %q; write true or false", n.Value)
				return
			}
			d.typeError(path, n, t)
			return
		}
		v.SetBool(b)
	default:
		panic("machineconfig: no decoder for " + t.String())
	}
}

// decodeSecret decodes a Secret from n (written is the node as the file
// has it, n resolved). An anchor or alias there could copy the secret into
// fields whose errors quote their value (a user name, a label): refused.
func (d *decoder) decodeSecret(written, n *yaml.Node, v reflect.Value, path string) {
	if n.Kind == yaml.ScalarNode {
		d.secrets[n] = true
	}
	if written.Kind == yaml.AliasNode || n.Anchor != "" {
		d.fail(path, pos(written), "a secret cannot be an anchor (&) or an alias (*): a copy of it in another field would be shown by that field's errors")
		return
	}
	if s, ok := d.scalarString(n, path); ok {
		v.SetString(s)
	}
}

// copiesSecret reports, at path, an alias (written) whose node n is a
// secret's, before any message can quote its value.
func (d *decoder) copiesSecret(written, n *yaml.Node, path string) bool {
	if !d.secrets[n] {
		return false
	}
	d.fail(path, pos(written), "an alias of a secret; secrets are never copied into other fields (the value is not shown)")
	return true
}

func (d *decoder) scalarString(n *yaml.Node, path string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		d.typeError(path, n, reflect.TypeFor[string]())
		return "", false
	}
	switch n.Tag {
	case "!!str", "!!int", "!!float", "!!timestamp":
		return n.Value, true
	case "!!bool":
		d.fail(path, pos(n), "expected a string, found a boolean; quote it if it is meant as text")
		return "", false
	}
	d.fail(path, pos(n), "expected a string, found %s", describe(n))
	return "", false
}

func (d *decoder) scalarBool(n *yaml.Node) (bool, bool) {
	if n.Kind != yaml.ScalarNode {
		return false, false
	}
	if n.Tag == "!!bool" {
		var b bool
		err := n.Decode(&b)
		return b, err == nil
	}
	if d.yaml11Bools && n.Tag == "!!str" {
		switch strings.ToLower(n.Value) {
		case "yes", "on", "y":
			return true, true
		case "no", "off", "n":
			return false, true
		}
	}
	return false, false
}

// eachEntry calls fn for every key of a mapping, reporting non-string keys,
// merge keys and duplicate keys instead.
func (d *decoder) eachEntry(n *yaml.Node, path string, pathOf func(key string) string, fn func(key string, k, v *yaml.Node)) {
	seen := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := d.resolve(n.Content[i])
		if k == nil {
			return
		}
		if d.copiesSecret(n.Content[i], k, path) {
			continue
		}
		v := n.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.Tag == "!!null" {
			d.fail(path, pos(k), "mapping keys must be plain strings, found %s", describe(k))
			continue
		}
		if k.Tag == "!!merge" {
			d.fail(path, pos(k), "merge keys (<<) are not supported; write the fields out")
			continue
		}
		if first, dup := seen[k.Value]; dup {
			if d.secretFile {
				d.fail(path, pos(k), "duplicate key (first at line %d; keys of this file are not shown)", first.Line)
			} else {
				d.fail(pathOf(k.Value), pos(k), "duplicate key %q (first at line %d)", k.Value, first.Line)
			}
			continue
		}
		seen[k.Value] = k
		fn(k.Value, k, v)
	}
}

// structFields maps YAML keys to (possibly inline-nested) struct fields and
// lists the keys in declaration order.
func structFields(t reflect.Type) (map[string][]int, []string) {
	fields := map[string][]int{}
	var names []string
	var walk func(t reflect.Type, prefix []int)
	walk = func(t reflect.Type, prefix []int) {
		for i := range t.NumField() {
			f := t.Field(i)
			tag := f.Tag.Get("yaml")
			name, opts, _ := strings.Cut(tag, ",")
			idx := append(slices.Clone(prefix), i)
			if strings.Contains(opts, "inline") {
				walk(f.Type, idx)
				continue
			}
			if !f.IsExported() || name == "-" || name == "" {
				continue
			}
			fields[name] = idx
			names = append(names, name)
		}
	}
	walk(t, nil)
	return fields, names
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	fields, names := structFields(v.Type())
	d.eachEntry(n, path, func(key string) string { return join(path, key) }, func(key string, k, val *yaml.Node) {
		p := join(path, key)
		f, ok := fields[key]
		if !ok {
			d.unknownKey(p, k, key, names)
			return
		}
		d.record(p, k, val)
		d.decode(val, v.FieldByIndex(f), p)
	})
}

// netplanUnsupported are netplan keys kubeboot knows but does not implement;
// they get a clearer message than "unknown key".
var netplanUnsupported = map[string]bool{
	"accept-ra": true, "activation-mode": true, "critical": true, "dhcp-identifier": true,
	"dhcp4-overrides": true, "dhcp6-overrides": true, "driver": true, "emit-lldp": true,
	"ipv6-address-generation": true, "ipv6-address-token": true, "ipv6-mtu": true,
	"ipv6-privacy": true, "link-local": true, "macaddress": true, "routing-policy": true,
	"wakeonlan": true, "on-link": true, "table": true, "scope": true, "type": true, "from": true,
	"receive-checksum-offload": true, "transmit-checksum-offload": true, "tcp-segmentation-offload": true,
	"generic-segmentation-offload": true, "generic-receive-offload": true, "large-receive-offload": true,
	"ad-select": true, "all-slaves-active": true, "arp-interval": true, "arp-ip-targets": true,
	"arp-validate": true, "arp-all-targets": true, "up-delay": true, "down-delay": true,
	"fail-over-mac-policy": true, "gratuitous-arp": true, "packets-per-slave": true,
	"primary-reselect-policy": true, "resend-igmp": true, "learn-packet-interval": true,
	"min-links": true, "bridges": true, "wifis": true, "tunnels": true, "vrfs": true, "modems": true,
	"nm-devices": true, "dummy-devices": true, "virtual-ethernets": true, "openvswitch": true,
	"infiniband-mode": true, "neigh-suppress": true, "embedded-switch-mode": true,
}

// unknownKey reports key at path; the mapping holding it is marked
// incomplete and a suggested key as bad, so that "X is required" is not
// reported next to "did you mean X?".
func (d *decoder) unknownKey(path string, k *yaml.Node, key string, valid []string) {
	parent := strings.TrimSuffix(path, key)
	parent = strings.TrimSuffix(parent, ".")
	d.incomplete[parent] = true
	if s := suggest(key, valid); s != "" {
		d.bad[join(parent, s)] = true
	}
	if d.netplan && netplanUnsupported[key] {
		d.fail(path, pos(k), "netplan key %q is not supported by kubeboot", key)
		return
	}
	if d.secretFile && suggest(key, valid) == "" {
		// Not a misspelt key of the schema: maybe a line of a key, or of
		// a file that is no bundle at all.
		d.fail(parent, pos(k), "unknown key (not shown: it is no misspelling of a key, and this file holds secrets); valid keys: %s", strings.Join(valid, ", "))
		return
	}
	msg := fmt.Sprintf("unknown key %q", key)
	if s := didYouMean(key, valid); s != "" {
		msg += s
	} else if len(valid) > 0 {
		msg += "; valid keys: " + strings.Join(valid, ", ")
	}
	d.fail(path, pos(k), "%s", msg)
}

// decodeAny decodes a free-form value (kubeadm patches) into the shapes
// encoding/json produces, so it can be merged into generated documents.
func (d *decoder) decodeAny(n *yaml.Node, path string, depth int) any {
	written := n
	if n = d.resolve(n); n == nil {
		return nil
	}
	if depth > maxDepth {
		d.fail(path, pos(n), "nested more than %d levels deep", maxDepth)
		return nil
	}
	switch n.Kind {
	case yaml.MappingNode:
		m := map[string]any{}
		d.eachEntry(n, path, func(key string) string { return join(path, key) }, func(key string, k, v *yaml.Node) {
			p := join(path, key)
			d.record(p, k, v)
			m[key] = d.decodeAny(v, p, depth+1)
		})
		return m
	case yaml.SequenceNode:
		s := make([]any, len(n.Content))
		for i, item := range n.Content {
			p := index(path, i)
			d.record(p, nil, item)
			s[i] = d.decodeAny(item, p, depth+1)
		}
		return s
	case yaml.ScalarNode:
		if d.copiesSecret(written, n, path) {
			return nil
		}
		switch n.Tag {
		case "!!null":
			return nil
		case "!!bool":
			var b bool
			_ = n.Decode(&b)
			return b
		case "!!int":
			var i int64
			if err := n.Decode(&i); err != nil {
				d.fail(path, pos(n), "integer out of range")
				return nil
			}
			return i
		case "!!float":
			var f float64
			if err := n.Decode(&f); err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
				d.fail(path, pos(n), "expected a finite number (JSON has no NaN or infinity)")
				return nil
			}
			return f
		case "!!str", "!!timestamp":
			return n.Value
		}
		d.fail(path, pos(n), "unsupported YAML tag %q", n.Tag)
		return nil
	}
	d.fail(path, pos(n), "unexpected YAML node")
	return nil
}

// mappingValue returns the value of key in mapping n, or nil.
func mappingValue(n *yaml.Node, key string) *yaml.Node {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Kind == yaml.ScalarNode && n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// decodeNetwork accepts the native form or, when the section holds a
// version key, cloud-init network-config v2.
func (d *decoder) decodeNetwork(n *yaml.Node, net *Network, path string) {
	if n.Kind != yaml.MappingNode {
		d.typeError(path, n, reflect.TypeFor[Network]())
		return
	}
	if mappingValue(n, "version") != nil {
		d.decodeNetplan(n, path, path, net)
		return
	}
	fields, names := structFields(reflect.TypeFor[Network]())
	v := reflect.ValueOf(net).Elem()
	d.eachEntry(n, path, func(key string) string { return join(path, key) }, func(key string, k, val *yaml.Node) {
		p := join(path, key)
		f, ok := fields[key]
		if !ok {
			if key == "ethernets" || key == "renderer" {
				d.fail(p, pos(k), "unknown key %q; for cloud-init network-config v2 add \"version: 2\" to this section", key)
				return
			}
			d.unknownKey(p, k, key, names)
			return
		}
		d.record(p, k, val)
		d.decode(val, v.FieldByIndex(f), p)
	})
}

// report turns validation problems into errors at the right place. Problems
// under a path that already failed to decode are dropped: the decode error
// says it better.
func (d *decoder) report(probs []problem) {
	for _, p := range probs {
		l, suffix := d.locate(p.path)
		display := l.display + suffix
		if l.display == "" && suffix != "" {
			display = strings.TrimPrefix(suffix, ".")
		}
		if d.underBad(display) || d.incomplete[display] {
			continue
		}
		msg := internalPathRE.ReplaceAllStringFunc(p.msg, func(ref string) string {
			if l, suffix := d.locate(ref); l.display != "" {
				return l.display + suffix
			}
			return ref
		})
		at := l.value
		if p.atKey || suffix != "" {
			at = l.key
		}
		d.add(Error{Line: at.line, Column: at.column, Path: display, Message: msg})
	}
}

// locate finds the nearest recorded ancestor of an internal path and the
// part of the path below it.
func (d *decoder) locate(path string) (located, string) {
	p := path
	for {
		if l, ok := d.where[p]; ok {
			return l, path[len(p):]
		}
		if p == "" {
			return located{}, path
		}
		cut := max(strings.LastIndexByte(p, '.'), strings.LastIndexByte(p, '['))
		if cut < 0 {
			p = ""
		} else {
			p = p[:cut]
		}
	}
}

// underBad reports whether path or one of its ancestors failed to decode.
func (d *decoder) underBad(path string) bool {
	for p := path; p != ""; {
		if d.bad[p] {
			return true
		}
		p = p[:max(strings.LastIndexByte(p, '.'), strings.LastIndexByte(p, '['), 0)]
	}
	return false
}
