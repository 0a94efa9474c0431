package report

import (
	"bytes"
	"unicode/utf16"
	"unicode/utf8"

	"authgate/event"
)

// The fields the report reads from a line; every other key is skipped
// without being decoded.
const (
	fTime = iota
	fEvent
	fRoute
	fClass
	fAction
	fWould
	fReason
	fUser
	fOrigin
	fUserAgent
	fInstance
	fRepeat // a number: a log budget summary stands for that many lines
	numFields
)

// fieldNames maps the indexes above to the log contract's keys; the fuzz
// test compares against encoding/json by these names.
var fieldNames = [numFields]string{
	fTime:      event.FieldTime,
	fEvent:     event.FieldEvent,
	fRoute:     event.FieldRoute,
	fClass:     event.FieldClass,
	fAction:    event.FieldAction,
	fWould:     event.FieldWould,
	fReason:    event.FieldReason,
	fUser:      event.FieldUser,
	fOrigin:    event.FieldOrigin,
	fUserAgent: event.FieldUserAgent,
	fInstance:  event.FieldInstance,
	fRepeat:    event.FieldRepeat,
}

// fieldIndex returns the index of a wanted key, or -1. A switch on
// string(key) compiles to comparisons without converting key.
func fieldIndex(key []byte) int {
	switch string(key) {
	case event.FieldTime:
		return fTime
	case event.FieldEvent:
		return fEvent
	case event.FieldRoute:
		return fRoute
	case event.FieldClass:
		return fClass
	case event.FieldAction:
		return fAction
	case event.FieldWould:
		return fWould
	case event.FieldReason:
		return fReason
	case event.FieldUser:
		return fUser
	case event.FieldOrigin:
		return fOrigin
	case event.FieldUserAgent:
		return fUserAgent
	case event.FieldInstance:
		return fInstance
	case event.FieldRepeat:
		return fRepeat
	}
	return -1
}

// record is what the scanner extracts from one line. Values alias either
// the line or the parser's scratch buffer and are valid until the next
// parse.
type record struct {
	val     [numFields][]byte
	present uint16 // bit f: field f held a JSON string (decoded into val[f])
	bad     uint16 // bit f: field f held a number, bool, object or array
	known   uint8  // 1+k when the instance field was parser.known[k]; 0 otherwise
}

func (r *record) has(f int) bool   { return r.present&(1<<f) != 0 }
func (r *record) isBad(f int) bool { return r.bad&(1<<f) != 0 }

// str returns field f's value, or nil when it is absent or null (val may
// still hold an earlier duplicate key's value then).
func (r *record) str(f int) []byte {
	if !r.has(f) {
		return nil
	}
	return r.val[f]
}

// maxObjectAttempts bounds how many '{' of one line are tried as the start
// of the object: a collector's prefix rarely holds a brace, and a garbage
// line full of braces must not cost more than a few passes.
const maxObjectAttempts = 3

// parser is a single-pass scanner over one top-level JSON object that
// extracts only the fields the report needs. It keys fields by exact name,
// independent of order; with duplicate keys the last one wins (as
// encoding/json does). Strings are unescaped exactly like encoding/json
// (\uXXXX, surrogate pairs, invalid UTF-8 and lone surrogates become
// U+FFFD). Nested values are skipped without recursion, so depth cannot
// exhaust the stack. It allocates only when its buffers grow.
type parser struct {
	rec     record
	scratch []byte // unescaped values
	keyBuf  []byte // unescaped keys
	stack   []byte // closing brackets of the nested value being skipped

	// known are the instance names of recent lines, kept by the
	// Aggregator in step with its own table (coverStat.recent); a name
	// is usable when it holds no backslash. An instance value whose bytes
	// equal a usable name is that name: a JSON string without a backslash
	// decodes to its own bytes, and these bytes are valid UTF-8 as every
	// decoded name is. So the common case costs one comparison instead of
	// an escape scan and a UTF-8 check, and rec.known saves the
	// Aggregator its lookup.
	known       [recentInstances]string
	knownUsable [recentInstances]bool

	// instance, when not nil, is the instance of a line that has no
	// instance field: a Render record's instance label (formats.go).
	instance []byte
	start    int // where the object begins in the line last parsed
}

// recentInstances is how many instance names the parser and the
// Aggregator remember: a file holds runs of one instance, a merged log
// interleaves a few.
const recentInstances = 4

// matchKnown returns the instance value starting at b[i] == '"' when it is
// one of the known names, the index after its closing quote, and 1+k.
func (p *parser) matchKnown(b []byte, i int) ([]byte, int, uint8) {
	s := b[i+1:]
	q := bytes.IndexByte(s, '"')
	if q < 0 {
		return nil, 0, 0
	}
	v := s[:q]
	for k := range p.known {
		// Names of one service share a prefix: their last byte tells
		// most apart before the full comparison.
		if kn := p.known[k]; p.knownUsable[k] && len(kn) == q && (q == 0 || kn[q-1] == v[q-1]) && kn == string(v) {
			return v, i + 1 + q + 1, uint8(k + 1)
		}
	}
	return nil, 0, 0
}

// parse finds the JSON object in line, after an optional prefix such as a
// collector's timestamp, and extracts the wanted fields. It reports false
// when no well-formed object is found. Bytes after the object's closing
// brace are ignored.
func (p *parser) parse(line []byte) bool {
	off := 0
	for attempt := 0; attempt < maxObjectAttempts; attempt++ {
		i := bytes.IndexByte(line[off:], '{')
		if i < 0 {
			return false
		}
		if p.parseObject(line[off+i:]) {
			if p.instance != nil && (p.rec.present|p.rec.bad)&(1<<fInstance) == 0 {
				p.rec.val[fInstance] = p.instance
				p.rec.present |= 1 << fInstance
			}
			p.start = off + i
			return true
		}
		off += i + 1
	}
	return false
}

func (p *parser) parseObject(b []byte) bool {
	p.rec = record{} // an absent field must not show the previous line's value
	p.scratch = p.scratch[:0]
	i := skipWS(b, 1)
	if i < len(b) && b[i] == '}' {
		return true
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return false
		}
		key, n, ok := p.readKey(b, i)
		if !ok {
			return false
		}
		i = skipWS(b, n)
		if i >= len(b) || b[i] != ':' {
			return false
		}
		i = skipWS(b, i+1)
		if i >= len(b) {
			return false
		}
		f := fieldIndex(key)
		switch {
		case f < 0:
			n, ok = p.skipValue(b, i)
		case f == fInstance && b[i] == '"':
			var v []byte
			if v, n, p.rec.known = p.matchKnown(b, i); p.rec.known == 0 {
				v, n, ok = p.readString(b, i)
			}
			p.rec.val[f] = v
			p.rec.present |= 1 << f
			p.rec.bad &^= 1 << f
		case f == fRepeat && (b[i] == '-' || ('0' <= b[i] && b[i] <= '9')):
			// The one numeric field: its literal, checked by the reader.
			n, ok = p.skipValue(b, i)
			p.rec.val[f] = b[i:n]
			p.rec.present |= 1 << f
			p.rec.bad &^= 1 << f
		case f == fRepeat && b[i] == '"':
			n, ok = skipString(b, i)
			p.rec.present &^= 1 << f
			p.rec.bad |= 1 << f
		case b[i] == '"':
			var v []byte
			v, n, ok = p.readString(b, i)
			p.rec.val[f] = v
			p.rec.present |= 1 << f
			p.rec.bad &^= 1 << f
		case b[i] == 'n':
			n, ok = skipLiteral(b, i, "null")
			p.rec.present &^= 1 << f
			p.rec.bad &^= 1 << f
			p.rec.known = 0 // rare: cheaper than testing for fInstance on every key
		default:
			n, ok = p.skipValue(b, i)
			p.rec.present &^= 1 << f
			p.rec.bad |= 1 << f
			p.rec.known = 0
		}
		if !ok {
			return false
		}
		i = skipWS(b, n)
		if i >= len(b) {
			return false
		}
		switch b[i] {
		case ',':
			i = skipWS(b, i+1)
		case '}':
			return true
		default:
			return false
		}
	}
}

func skipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\r', '\n':
			i++
		default:
			return i
		}
	}
	return i
}

// readKey returns the unescaped key starting at b[i] == '"' and the index
// after its closing quote.
func (p *parser) readKey(b []byte, i int) ([]byte, int, bool) {
	s := b[i+1:]
	q := bytes.IndexByte(s, '"')
	if q < 0 {
		return nil, 0, false
	}
	if bytes.IndexByte(s[:q], '\\') < 0 {
		return s[:q], i + 1 + q + 1, true
	}
	var n int
	var ok bool
	p.keyBuf, n, ok = unescape(p.keyBuf[:0], s)
	return p.keyBuf, i + 1 + n, ok
}

// readString returns the decoded string starting at b[i] == '"' and the
// index after its closing quote. The common case (no escapes, valid UTF-8)
// returns a subslice of b without copying.
func (p *parser) readString(b []byte, i int) ([]byte, int, bool) {
	s := b[i+1:]
	q := bytes.IndexByte(s, '"')
	if q < 0 {
		return nil, 0, false
	}
	v := s[:q]
	if bytes.IndexByte(v, '\\') < 0 && utf8.Valid(v) {
		return v, i + 1 + q + 1, true
	}
	start := len(p.scratch)
	var n int
	var ok bool
	p.scratch, n, ok = unescape(p.scratch, s)
	// The full slice expression keeps a later append from writing past
	// this value into the next one.
	return p.scratch[start:len(p.scratch):len(p.scratch)], i + 1 + n, ok
}

// unescape appends the decoded JSON string body s (after the opening
// quote) to dst and returns the number of bytes consumed including the
// closing quote. It mirrors encoding/json's unquote: invalid UTF-8 bytes
// and unpaired surrogates become U+FFFD.
func unescape(dst, s []byte) ([]byte, int, bool) {
	r := 0
	for r < len(s) {
		c := s[r]
		switch {
		case c == '"':
			return dst, r + 1, true
		case c == '\\':
			if r+1 >= len(s) {
				return dst, 0, false
			}
			switch s[r+1] {
			case '"', '\\', '/':
				dst = append(dst, s[r+1])
				r += 2
			case 'b':
				dst = append(dst, '\b')
				r += 2
			case 'f':
				dst = append(dst, '\f')
				r += 2
			case 'n':
				dst = append(dst, '\n')
				r += 2
			case 'r':
				dst = append(dst, '\r')
				r += 2
			case 't':
				dst = append(dst, '\t')
				r += 2
			case 'u':
				rr := getu4(s[r:])
				if rr < 0 {
					return dst, 0, false
				}
				r += 6
				if utf16.IsSurrogate(rr) {
					rr1 := getu4(s[r:])
					if dec := utf16.DecodeRune(rr, rr1); dec != utf8.RuneError {
						r += 6
						dst = utf8.AppendRune(dst, dec)
						break
					}
					rr = utf8.RuneError
				}
				dst = utf8.AppendRune(dst, rr)
			default:
				return dst, 0, false
			}
		case c < utf8.RuneSelf:
			dst = append(dst, c)
			r++
		default:
			rr, size := utf8.DecodeRune(s[r:])
			r += size
			dst = utf8.AppendRune(dst, rr)
		}
	}
	return dst, 0, false
}

// getu4 decodes \uXXXX at the start of s, or returns -1.
func getu4(s []byte) rune {
	if len(s) < 6 || s[0] != '\\' || s[1] != 'u' {
		return -1
	}
	var r rune
	for _, c := range s[2:6] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return -1
		}
		r = r*16 + rune(c)
	}
	return r
}

// skipString returns the index after the string starting at b[i] == '"'.
func skipString(b []byte, i int) (int, bool) {
	j := i + 1
	for {
		q := bytes.IndexByte(b[j:], '"')
		if q < 0 {
			return 0, false
		}
		end := j + q
		// The quote is escaped when an odd number of backslashes precede it.
		k := end - 1
		for k >= j && b[k] == '\\' {
			k--
		}
		if (end-1-k)%2 == 0 {
			return end + 1, true
		}
		j = end + 1
	}
}

func skipLiteral(b []byte, i int, lit string) (int, bool) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return 0, false
	}
	return i + len(lit), true
}

// skipValue returns the index after the JSON value starting at b[i].
// Nested objects and arrays are skipped with an explicit stack; inside
// them only brackets and strings are tracked.
func (p *parser) skipValue(b []byte, i int) (int, bool) {
	switch c := b[i]; {
	case c == '"':
		return skipString(b, i)
	case c == '{' || c == '[':
		return p.skipNested(b, i)
	case c == 't':
		return skipLiteral(b, i, "true")
	case c == 'f':
		return skipLiteral(b, i, "false")
	case c == 'n':
		return skipLiteral(b, i, "null")
	case c == '-' || ('0' <= c && c <= '9'):
		j := i + 1
		for j < len(b) && isNumberByte(b[j]) {
			j++
		}
		return j, true
	}
	return 0, false
}

func isNumberByte(c byte) bool {
	return ('0' <= c && c <= '9') || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-'
}

func (p *parser) skipNested(b []byte, i int) (int, bool) {
	stack := p.stack[:0]
	defer func() { p.stack = stack[:0] }()
	for i < len(b) {
		switch c := b[i]; c {
		case '{':
			stack = append(stack, '}')
			i++
		case '[':
			stack = append(stack, ']')
			i++
		case '}', ']':
			if len(stack) == 0 || stack[len(stack)-1] != c {
				return 0, false
			}
			stack = stack[:len(stack)-1]
			i++
			if len(stack) == 0 {
				return i, true
			}
		case '"':
			n, ok := skipString(b, i)
			if !ok {
				return 0, false
			}
			i = n
		default:
			i++
		}
	}
	return 0, false
}
