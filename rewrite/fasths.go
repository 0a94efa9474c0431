package rewrite

import (
	"crypto/hmac"
	"encoding/base64"
	"hash"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/golang-jwt/jwt/v5"
	"github.com/tidwall/gjson"
)

// The HS fast path: a token signed with the shared secret, the case of
// every Supabase client, is verified and its registered claims decoded
// without encoding/json, which is about half of golang-jwt's cost for a
// token not seen before (its header map and the reflection over
// RegisteredClaims). The MAC is checked with crypto/hmac, keyed states
// reused from a pool, and compared in constant time; gjson reads the JSON.
//
// It only takes tokens it can read exactly as golang-jwt would: valid JSON
// objects, a header of plain strings only with an HS alg that is allowed
// and no crit, and registered claims of the plain types (strings without
// escapes, numbers, aud as a string or an array of strings). Anything else, including every failure,
// returns false and goes through golang-jwt's parser, the reference:
// FuzzFastHS checks that both give the same claims whenever this one
// answers.

// maxFastSegment bounds the decoded header and claims the fast path reads
// from its pooled buffers; longer ones take golang-jwt's path.
const maxFastSegment = 2048

type fastBuf struct {
	header, claims [maxFastSegment]byte
	sig            [64]byte // HS512's 64 bytes at most
}

var fastBufs = sync.Pool{New: func() any { return new(fastBuf) }}

// hsFast verifies token with the HS secret and fills claims; false means
// "not handled here", not "invalid", and claims may then hold part of the
// token's claims: the caller starts golang-jwt's path from zero claims.
func (v *Verifier) hsFast(token string, claims *jwt.RegisteredClaims) bool {
	if len(v.cfg.HS256Secret) == 0 {
		return false
	}
	i := strings.IndexByte(token, '.')
	if i < 0 {
		return false
	}
	j := strings.IndexByte(token[i+1:], '.')
	if j < 0 {
		return false
	}
	j += i + 1
	// The decoded segments live in a pooled buffer: gjson's results alias
	// them, which escape analysis cannot see through, so stack arrays
	// would be moved to the heap on every call.
	fb := fastBufs.Get().(*fastBuf)
	defer fastBufs.Put(fb)
	header, ok := decodeSegment(fb.header[:], token[:i])
	if !ok {
		return false
	}
	method := v.fastMethod(header)
	if method == nil {
		return false
	}
	body, ok := decodeSegment(fb.claims[:], token[i+1:j])
	if !ok || !readClaims(body, claims) {
		return false
	}
	sig, ok := decodeSegment(fb.sig[:], token[j+1:])
	if !ok {
		return false
	}
	return v.macs[method].verify(token[:j], sig)
}

// macPool keeps keyed HMAC states for one hash: hmac.New costs more than
// the MAC of a short token, and a state is reset, not rebuilt, per token.
type macPool struct{ p sync.Pool }

// macState is a keyed HMAC with room for its sum.
type macState struct {
	h   hash.Hash
	sum [64]byte
}

func newMACPool(h func() hash.Hash, key []byte) *macPool {
	return &macPool{p: sync.Pool{New: func() any { return &macState{h: hmac.New(h, key)} }}}
}

// verify reports whether sig is the MAC of signed, compared in constant
// time as jwt.SigningMethodHMAC.Verify does.
func (mp *macPool) verify(signed, sig string) bool {
	m := mp.p.Get().(*macState)
	defer mp.p.Put(m)
	m.h.Reset()
	m.h.Write(unsafe.Slice(unsafe.StringData(signed), len(signed)))
	return hmac.Equal(unsafe.Slice(unsafe.StringData(sig), len(sig)), m.h.Sum(m.sum[:0]))
}

// decodeSegment decodes base64url without padding (golang-jwt's default
// DecodeSegment) into buf and returns the JSON as a string aliasing buf.
func decodeSegment(buf []byte, seg string) (string, bool) {
	if base64.RawURLEncoding.DecodedLen(len(seg)) > len(buf) {
		return "", false
	}
	n, err := base64.RawURLEncoding.Decode(buf, unsafe.Slice(unsafe.StringData(seg), len(seg)))
	if err != nil {
		return "", false
	}
	return unsafe.String(unsafe.SliceData(buf), n), true
}

// fastMethod returns the HMAC method of a header golang-jwt would accept
// for the shared secret, or nil.
func (v *Verifier) fastMethod(header string) *jwt.SigningMethodHMAC {
	if !isObject(header) {
		return nil
	}
	alg, ok := "", true
	gjson.Parse(header).ForEach(func(key, val gjson.Result) bool {
		// The header is decoded into a map: names match exactly, and
		// the last of duplicate names wins.
		// Every value must be a plain string: json.Unmarshal into the
		// header map converts numbers to float64 and fails on one out of
		// range ({"x":1e999}), which makes the token malformed, and no
		// Supabase header holds anything but strings (alg, kid, typ).
		var s string
		s, ok = plainString(val)
		switch {
		case strings.IndexByte(key.Raw, '\\') >= 0, key.Str == "crit":
			ok = false
		case key.Str == "alg":
			alg = s
		}
		return ok
	})
	if !ok {
		return nil
	}
	m, _ := jwt.GetSigningMethod(alg).(*jwt.SigningMethodHMAC)
	if m == nil || v.macs[m] == nil {
		return nil
	}
	for _, a := range v.cfg.Algorithms {
		if a == alg {
			return m
		}
	}
	return nil
}

// readClaims fills claims from a JSON object as encoding/json would decode
// it into jwt.RegisteredClaims (names matched case-insensitively, the last
// duplicate winning), copying the strings it keeps out of body.
func readClaims(body string, claims *jwt.RegisteredClaims) bool {
	if !isObject(body) {
		return false
	}
	ok := true
	gjson.Parse(body).ForEach(func(key, val gjson.Result) bool {
		if strings.IndexByte(key.Raw, '\\') >= 0 {
			ok = false
			return false
		}
		var s string
		switch k := key.Str; {
		case strings.EqualFold(k, "sub"):
			s, ok = plainString(val)
			claims.Subject = strings.Clone(s)
		case strings.EqualFold(k, "iss"):
			s, ok = plainString(val)
			claims.Issuer = strings.Clone(s)
		case strings.EqualFold(k, "jti"):
			s, ok = plainString(val)
			claims.ID = strings.Clone(s)
		case strings.EqualFold(k, "aud"):
			claims.Audience, ok = readAudience(val)
		case strings.EqualFold(k, "exp"):
			claims.ExpiresAt, ok = numericDate(val)
		case strings.EqualFold(k, "nbf"):
			claims.NotBefore, ok = numericDate(val)
		case strings.EqualFold(k, "iat"):
			claims.IssuedAt, ok = numericDate(val)
		}
		return ok
	})
	return ok
}

// isObject reports whether s is one valid JSON object, surrounding white
// space allowed (what json.Unmarshal into a map or struct accepts without
// a type error, null aside).
func isObject(s string) bool {
	if !gjson.Valid(s) {
		return false
	}
	s = strings.TrimLeft(s, " \t\r\n")
	return s != "" && s[0] == '{'
}

// plainString returns a JSON string without escapes that is valid UTF-8,
// which encoding/json would decode to the same bytes.
func plainString(val gjson.Result) (string, bool) {
	if val.Type != gjson.String || strings.IndexByte(val.Raw, '\\') >= 0 || !utf8.ValidString(val.Str) {
		return "", false
	}
	return val.Str, true
}

// readAudience decodes aud like jwt.ClaimStrings: one string, or an array
// of strings (an empty array leaves it nil).
func readAudience(val gjson.Result) (jwt.ClaimStrings, bool) {
	if val.Type == gjson.String {
		s, ok := plainString(val)
		return jwt.ClaimStrings{strings.Clone(s)}, ok
	}
	if !val.IsArray() {
		return nil, false
	}
	var aud jwt.ClaimStrings
	ok := true
	val.ForEach(func(_, e gjson.Result) bool {
		var s string
		s, ok = plainString(e)
		aud = append(aud, strings.Clone(s))
		return ok
	})
	return aud, ok
}

// numericDate decodes a JSON number like jwt.NumericDate.UnmarshalJSON.
func numericDate(val gjson.Result) (*jwt.NumericDate, bool) {
	if val.Type != gjson.Number {
		return nil, false
	}
	f, err := strconv.ParseFloat(val.Raw, 64)
	if err != nil {
		return nil, false
	}
	round, frac := math.Modf(f)
	return jwt.NewNumericDate(time.Unix(int64(round), int64(frac*1e9))), true
}
