package policy

import (
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// decoder turns a yaml.Node tree into the config structs strictly: an
// unknown or duplicate key, a wrong kind of value or an unparsable scalar
// is a Problem carrying its line and key path, and decoding goes on so
// that every problem is reported at once. (yaml's own KnownFields stops
// short of key paths and of our scalar types.)
type decoder struct {
	file   string
	lookup func(string) (string, bool)
	probs  []Problem
	lines  map[string]pos // key path -> position of its key, for later checks
	// budget bounds how many nodes decoding may visit, so that nested
	// aliases (a "billion laughs" document) cannot expand without end.
	budget int
}

type pos struct{ line, col int }

// maxNodes is the decoding budget: far above any real config.
const maxNodes = 100_000

// nodeUnmarshaler is implemented by types that read a whole node (for
// example a class policy, which is a scalar action or a list of stages).
type nodeUnmarshaler interface {
	unmarshalNode(d *decoder, n *yaml.Node, path string)
}

// scalarUnmarshaler is implemented by types parsed from one scalar after
// ${VAR} expansion (durations, times, CIDRs, actions).
type scalarUnmarshaler interface {
	unmarshalScalar(s string) error
}

func (d *decoder) problem(at pos, path, format string, args ...any) {
	d.probs = append(d.probs, Problem{File: d.file, Line: at.line, col: at.col, Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (d *decoder) problemAt(n *yaml.Node, path, format string, args ...any) {
	d.problem(pos{n.Line, n.Column}, path, format, args...)
}

// posOf returns the position of the key at path, or of its nearest
// ancestor.
func (d *decoder) posOf(path string) pos {
	for path != "" {
		if p, ok := d.lines[path]; ok {
			return p
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return pos{}
}

// spend takes one node from the budget and reports whether decoding may
// go on; the first overrun is a problem.
func (d *decoder) spend(n *yaml.Node, path string) bool {
	d.budget--
	if d.budget == -1 {
		d.problemAt(n, path, "the document expands to more than %d values (nested aliases?); write it out plainly", maxNodes)
	}
	return d.budget >= 0
}

var kindNames = map[yaml.Kind]string{
	yaml.DocumentNode: "a document", yaml.SequenceNode: "a list", yaml.MappingNode: "a mapping",
	yaml.ScalarNode: "a single value", yaml.AliasNode: "an alias",
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// scalar returns the expanded text of a scalar node, or false after
// recording a problem.
func (d *decoder) scalar(n *yaml.Node, path, want string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		d.problemAt(n, path, "want %s, got %s", want, kindNames[n.Kind])
		return "", false
	}
	if n.Tag == "!!null" {
		return "", true
	}
	s, err := expandEnv(n.Value, d.lookup)
	if err != nil {
		d.problemAt(n, path, "%v", err)
		return "", false
	}
	return s, true
}

func (d *decoder) decode(n *yaml.Node, path string, v reflect.Value) {
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if !d.spend(n, path) {
		return
	}
	if v.CanAddr() {
		switch u := v.Addr().Interface().(type) {
		case nodeUnmarshaler:
			u.unmarshalNode(d, n, path)
			return
		case scalarUnmarshaler:
			s, ok := d.scalar(n, path, "a single value")
			if !ok {
				return
			}
			if err := u.unmarshalScalar(s); err != nil {
				d.problemAt(n, path, "%v", err)
			}
			return
		}
	}
	switch v.Kind() {
	case reflect.Pointer:
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			return
		}
		// Set the pointer only when its value decoded cleanly, so a bad
		// value reads as absent to the checks that follow.
		nv := reflect.New(v.Type().Elem())
		before := len(d.probs)
		d.decode(n, path, nv.Elem())
		if len(d.probs) == before {
			v.Set(nv)
		}
	case reflect.Struct:
		d.decodeStruct(n, path, v)
	case reflect.Slice:
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			return
		}
		if n.Kind != yaml.SequenceNode {
			d.problemAt(n, path, "want a list, got %s", kindNames[n.Kind])
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			d.lines[p] = pos{item.Line, item.Column}
			d.decode(item, p, s.Index(i))
		}
		v.Set(s)
	case reflect.Map:
		d.decodeMap(n, path, v)
	case reflect.Interface:
		val, ok := d.anyValue(n, path)
		if ok && val != nil {
			v.Set(reflect.ValueOf(val))
		}
	case reflect.String:
		if s, ok := d.scalar(n, path, "a string"); ok {
			v.SetString(s)
		}
	case reflect.Bool:
		s, ok := d.scalar(n, path, "true or false")
		if !ok {
			return
		}
		switch s {
		case "true":
			v.SetBool(true)
		case "false":
			v.SetBool(false)
		default:
			d.problemAt(n, path, "want true or false, got %q", s)
		}
	case reflect.Int:
		s, ok := d.scalar(n, path, "a whole number")
		if !ok {
			return
		}
		i, err := strconv.Atoi(s)
		if err != nil {
			d.problemAt(n, path, "want a whole number, got %q", s)
			return
		}
		v.SetInt(int64(i))
	default:
		panic("policy: no decoder for " + v.Type().String())
	}
}

func (d *decoder) decodeStruct(n *yaml.Node, path string, v reflect.Value) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.problemAt(n, path, "want a mapping of keys, got %s", kindNames[n.Kind])
		return
	}
	t := v.Type()
	fields := make(map[string]int, t.NumField())
	names := make([]string, 0, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		fields[name] = i
		names = append(names, name)
	}
	seen := make(map[string]bool, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		key := k.Value
		p := join(path, key)
		if k.Kind != yaml.ScalarNode {
			d.problemAt(k, path, "keys must be plain words")
			continue
		}
		if key == "<<" {
			d.problemAt(k, path, "merge keys (<<) are not supported; write the keys out")
			continue
		}
		idx, ok := fields[key]
		if !ok {
			d.problemAt(k, p, "unknown key%s; valid keys here: %s", suggest(key, names), strings.Join(names, ", "))
			continue
		}
		if seen[key] {
			d.problemAt(k, p, "duplicate key; keep one")
			continue
		}
		seen[key] = true
		d.lines[p] = pos{k.Line, k.Column}
		d.decode(val, p, v.Field(idx))
	}
}

func (d *decoder) decodeMap(n *yaml.Node, path string, v reflect.Value) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.problemAt(n, path, "want a mapping, got %s", kindNames[n.Kind])
		return
	}
	m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		p := join(path, k.Value)
		if k.Kind != yaml.ScalarNode {
			d.problemAt(k, path, "keys must be plain words")
			continue
		}
		kv := reflect.ValueOf(k.Value).Convert(v.Type().Key())
		if m.MapIndex(kv).IsValid() {
			d.problemAt(k, p, "duplicate key; keep one")
			continue
		}
		d.lines[p] = pos{k.Line, k.Column}
		ev := reflect.New(v.Type().Elem()).Elem()
		d.decode(val, p, ev)
		m.SetMapIndex(kv, ev)
	}
	v.Set(m)
}

// anyValue converts a free-form node (mint claims) to plain Go values,
// expanding ${VAR} in strings and keeping YAML's scalar types.
func (d *decoder) anyValue(n *yaml.Node, path string) (any, bool) {
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if !d.spend(n, path) {
		return nil, false
	}
	switch n.Kind {
	case yaml.ScalarNode:
		s, ok := d.scalar(n, path, "a value")
		if !ok {
			return nil, false
		}
		switch n.Tag {
		case "!!null":
			return nil, true
		case "!!bool":
			return s == "true", true
		case "!!int":
			if i, err := strconv.ParseInt(s, 0, 64); err == nil {
				return i, true
			}
		case "!!float":
			if f, err := strconv.ParseFloat(s, 64); err == nil {
				return f, true
			}
		}
		return s, true
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		for i, c := range n.Content {
			v, ok := d.anyValue(c, fmt.Sprintf("%s[%d]", path, i))
			if !ok {
				return nil, false
			}
			out = append(out, v)
		}
		return out, true
	case yaml.MappingNode:
		out := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			v, ok := d.anyValue(n.Content[i+1], join(path, n.Content[i].Value))
			if !ok {
				return nil, false
			}
			out[n.Content[i].Value] = v
		}
		return out, true
	}
	d.problemAt(n, path, "unsupported value")
	return nil, false
}

// suggest returns ` (did you mean "x"?)` for the closest valid key within
// two edits, or "".
func suggest(key string, names []string) string {
	best, bestD := "", 3
	sorted := append([]string(nil), names...)
	sort.Strings(sorted)
	for _, n := range sorted {
		if dist := editDistance(key, n); dist < bestD {
			best, bestD = n, dist
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// expandEnv replaces ${VAR} and ${VAR:-default} in s. An unset ${VAR}
// without a default is an error: secrets are never silently empty. $${
// writes a literal ${.
func expandEnv(s string, lookup func(string) (string, bool)) (string, error) {
	if !strings.Contains(s, "${") {
		return s, nil
	}
	var b strings.Builder
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			b.WriteString(s)
			return b.String(), nil
		}
		if i > 0 && s[i-1] == '$' {
			b.WriteString(s[:i-1])
			b.WriteString("${")
			s = s[i+2:]
			continue
		}
		b.WriteString(s[:i])
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			return "", fmt.Errorf("unterminated ${ in %q", s[i:])
		}
		expr := s[i+2 : i+end]
		s = s[i+end+1:]
		name, def, hasDef := strings.Cut(expr, ":-")
		if !validEnvName(name) {
			return "", fmt.Errorf("${%s}: %q is not a variable name", expr, name)
		}
		val, ok := lookup(name)
		switch {
		case ok && (val != "" || !hasDef):
			b.WriteString(val)
		case hasDef:
			b.WriteString(def)
		default:
			return "", fmt.Errorf("environment variable %s is not set; set it, or write ${%s:-default}", name, name)
		}
	}
}

func validEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		if !(c == '_' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || i > 0 && '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

func reflectValueOf(p any) reflect.Value { return reflect.ValueOf(p).Elem() }
