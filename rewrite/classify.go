package rewrite

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Class is what a token is. The zero value is ClassMissing.
type Class uint8

// Token classes (see SPEC "Classes").
const (
	ClassMissing    Class = iota // no source held a token
	ClassMalformed               // neither a UUID nor a JWT, or over MaxTokenLen
	ClassUUID                    // canonical 8-4-4-4-12 hex, normalised to lower case
	ClassJWT                     // verified, or structurally valid and unexpired with no key
	ClassJWTExpired              // past exp (plus leeway), otherwise valid
	ClassJWTInvalid              // bad signature, unknown kid, disallowed alg, wrong aud/iss, nbf, no exp
	numClasses
)

// NumClasses is the number of classes, for tables indexed by Class.
const NumClasses = int(numClasses)

var classNames = [...]string{"missing", "malformed", "uuid", "jwt", "jwt_expired", "jwt_invalid"}

// String returns the class as logged and configured.
func (c Class) String() string {
	if int(c) < len(classNames) {
		return classNames[c]
	}
	return "unknown"
}

// ParseClass is the inverse of Class.String.
func ParseClass(s string) (Class, bool) {
	for i, n := range classNames {
		if n == s {
			return Class(i), true
		}
	}
	return 0, false
}

// MaxTokenLen is the longest token authgate classifies; longer ones are
// malformed without being parsed.
const MaxTokenLen = 8 << 10

// Result is a classified token.
type Result struct {
	Class Class
	// Verified is true when a JWT's signature was checked with a
	// configured key; false for unverified structural classification.
	Verified bool
	// Subject is the lower-case UUID, or a JWT's sub claim (which may be
	// empty). It is an identifier, not a secret.
	Subject string
	// Expiry is a JWT's exp (zero for other classes).
	Expiry time.Time
	// Reason is a short, fixed text saying why (for example "signature
	// invalid"); it never contains token material.
	Reason string
}

// IsUUID reports whether s is a canonical 8-4-4-4-12 hex UUID in any case.
func IsUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < 36; i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !isHex(c) {
				return false
			}
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// base64URL marks the base64url alphabet (RFC 4648 §5).
var base64URL = func() (t [256]bool) {
	for _, c := range "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_" {
		t[c] = true
	}
	return t
}()

// looksLikeJWT reports whether s is three base64url segments, the first two non-empty
// (JWS compact serialisation, RFC 7515 §7.1). It spares the parser the
// obvious garbage and keeps "malformed" distinct from "jwt_invalid".
func looksLikeJWT(s string) bool {
	dots := 0
	seg := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if base64URL[c] {
			seg++
			continue
		}
		if c != '.' || seg == 0 || dots == 2 {
			return false
		}
		dots++
		seg = 0
	}
	// An empty signature is kept (alg "none" tokens look like that) so
	// it is refused as jwt_invalid "algorithm not allowed".
	return dots == 2
}

// KeySet resolves JWKS keys (keyfunc.Keyfunc satisfies it). The context
// bounds how long an unknown kid may wait on a refetch.
type KeySet interface {
	KeyfuncCtx(ctx context.Context) jwt.Keyfunc
}

// VerifyConfig is how client JWTs are checked. The zero value verifies
// nothing: JWTs are classified structurally and logged verified=false.
type VerifyConfig struct {
	// HS256Secret verifies HS256/384/512 tokens. Empty: HS tokens are
	// jwt_invalid whenever any key is configured.
	HS256Secret []byte
	// JWKS verifies ES/RS/PS/EdDSA tokens by kid. Nil: such tokens are
	// jwt_invalid whenever any key is configured.
	JWKS KeySet
	// HasJWKS says a jwks_url is configured even if JWKS is not yet set
	// (check and explain run without network).
	HasJWKS bool
	// Algorithms is the allow-list; never contains "none".
	Algorithms []string
	Issuer     string // empty: not checked
	Audience   string // empty: not checked
	Leeway     time.Duration
	// KeyTimeout bounds a JWKS lookup for an unknown kid (default 500ms).
	KeyTimeout time.Duration
	// CacheSize bounds the cache of verified tokens (default 10,000;
	// negative turns it off). A client sends the same JWT on every
	// request and reconnect for up to an hour; a hit skips parsing and
	// the signature check, and re-checks only the time claims.
	CacheSize int
}

// Verifier classifies tokens. It is immutable and safe for concurrent use.
type Verifier struct {
	cfg    VerifyConfig
	noKeys bool
	parser *jwt.Parser // signature and structure; claims are checked by checkClaims
	cache  *verifiedCache
	macs   map[*jwt.SigningMethodHMAC]*macPool // the HS fast path's MAC states, by method
}

// NewVerifier compiles cfg.
func NewVerifier(cfg VerifyConfig) *Verifier {
	if cfg.KeyTimeout <= 0 {
		cfg.KeyTimeout = 500 * time.Millisecond
	}
	if cfg.CacheSize == 0 {
		cfg.CacheSize = 10_000
	}
	v := &Verifier{cfg: cfg, cache: newVerifiedCache(cfg.CacheSize)}
	v.parser = jwt.NewParser(jwt.WithValidMethods(cfg.Algorithms), jwt.WithoutClaimsValidation())
	v.noKeys = len(cfg.HS256Secret) == 0 && cfg.JWKS == nil && !cfg.HasJWKS
	if len(cfg.HS256Secret) > 0 {
		v.macs = make(map[*jwt.SigningMethodHMAC]*macPool, 3)
		for _, m := range []*jwt.SigningMethodHMAC{jwt.SigningMethodHS256, jwt.SigningMethodHS384, jwt.SigningMethodHS512} {
			if m.Hash.Available() { // as golang-jwt requires; otherwise its path reports it
				v.macs[m] = newMACPool(m.Hash.New, cfg.HS256Secret)
			}
		}
	}
	return v
}

// CanVerify reports whether any key is configured.
func (v *Verifier) CanVerify() bool { return !v.noKeys }

// WithKeySet returns a copy of v that resolves asymmetric keys with ks.
func (v *Verifier) WithKeySet(ks KeySet) *Verifier {
	cfg := v.cfg
	cfg.JWKS = ks
	cfg.HasJWKS = ks != nil || cfg.HasJWKS
	return NewVerifier(cfg)
}

// Config returns the configuration v was built from.
func (v *Verifier) Config() VerifyConfig { return v.cfg }

var (
	errNoHSKey   = errors.New("no HS256 secret configured")
	errNoJWKS    = errors.New("no JWKS available")
	errAlgHeader = errors.New("alg header missing")
	errCrit      = errors.New("unsupported crit header")
)

// Classify returns the class of token as of now. ctx bounds key lookups.
func (v *Verifier) Classify(ctx context.Context, token string, now time.Time) Result {
	switch {
	case token == "":
		return Result{Class: ClassMissing, Reason: "no token"}
	case len(token) > MaxTokenLen:
		return Result{Class: ClassMalformed, Reason: "token over 8 KiB"}
	case IsUUID(token):
		return Result{Class: ClassUUID, Subject: strings.ToLower(token), Reason: "legacy uuid"}
	case !looksLikeJWT(token):
		return Result{Class: ClassMalformed, Reason: "neither a uuid nor a jwt"}
	}
	if v.noKeys {
		return v.classifyUnverified(token, now)
	}
	return v.classifyVerified(ctx, token, now)
}

func (v *Verifier) classifyVerified(ctx context.Context, token string, now time.Time) Result {
	if c, ok := v.cache.get(token); ok {
		return v.timeResult(c, now)
	}
	var claims jwt.RegisteredClaims
	if !v.hsFast(token, &claims) {
		claims = jwt.RegisteredClaims{}
		if r, ok := v.parse(ctx, token, &claims); !ok {
			return r
		}
	}
	// The signature holds: what is left depends on the claims only, and
	// can be cached; the time claims are checked on every use.
	c := cachedClaims{subject: claims.Subject}
	if reason := v.staticClaims(&claims); reason != "" {
		return Result{Class: ClassJWTInvalid, Reason: reason}
	}
	if claims.ExpiresAt != nil {
		c.exp = claims.ExpiresAt.Time
	}
	if claims.NotBefore != nil {
		c.nbf = claims.NotBefore.Time
	}
	if c.exp.IsZero() {
		return Result{Class: ClassJWTInvalid, Reason: "exp claim missing"}
	}
	v.cache.put(token, c)
	return v.timeResult(c, now)
}

// parse verifies token with golang-jwt's parser and decodes its claims;
// ok is false with the token's class when it fails.
func (v *Verifier) parse(ctx context.Context, token string, claims *jwt.RegisteredClaims) (r Result, ok bool) {
	_, err := v.parser.ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		alg, _ := t.Header["alg"].(string)
		switch {
		case t.Header["crit"] != nil:
			// RFC 7515 §4.1.11: a JWS whose crit lists extensions the
			// recipient does not understand is invalid; authgate
			// understands none (golang-jwt does not check crit).
			return nil, errCrit
		case alg == "":
			return nil, errAlgHeader
		case strings.HasPrefix(alg, "HS"):
			// HS tokens meet only the shared secret, never a JWKS public
			// key: the classic RS256->HS256 confusion (CVE-2015-9235).
			if len(v.cfg.HS256Secret) == 0 {
				return nil, errNoHSKey
			}
			return v.cfg.HS256Secret, nil
		default:
			if v.cfg.JWKS == nil {
				return nil, errNoJWKS
			}
			kctx, cancel := context.WithTimeout(ctx, v.cfg.KeyTimeout)
			defer cancel()
			return v.cfg.JWKS.KeyfuncCtx(kctx)(t)
		}
	})
	if err != nil {
		return resultFromError(err, claims), false
	}
	return Result{}, true
}

// staticClaims checks the claims that do not depend on time: issuer and
// audience (RFC 7519 §4.1.1, §4.1.3). It returns a reason, or "".
func (v *Verifier) staticClaims(claims *jwt.RegisteredClaims) string {
	if v.cfg.Issuer != "" && claims.Issuer != v.cfg.Issuer {
		return "wrong issuer"
	}
	if v.cfg.Audience != "" && !slices.Contains(claims.Audience, v.cfg.Audience) {
		return "wrong audience"
	}
	return ""
}

// timeResult classifies verified claims as of now: not yet valid
// (nbf - leeway), expired (exp + leeway), or valid (RFC 7519 §4.1.4-5).
func (v *Verifier) timeResult(c cachedClaims, now time.Time) Result {
	r := Result{Subject: c.subject, Expiry: c.exp, Verified: true}
	switch {
	case !c.nbf.IsZero() && now.Add(v.cfg.Leeway).Before(c.nbf):
		return Result{Class: ClassJWTInvalid, Reason: "not yet valid"}
	case !now.Add(-v.cfg.Leeway).Before(c.exp):
		r.Class, r.Verified, r.Reason = ClassJWTExpired, false, "token expired"
	default:
		r.Class, r.Reason = ClassJWT, "valid jwt"
	}
	return r
}

// classifyUnverified is used when no key is configured at all: the token
// is parsed and its time, issuer and audience claims checked, but nothing
// proves who signed it.
func (v *Verifier) classifyUnverified(token string, now time.Time) Result {
	var claims jwt.RegisteredClaims
	t, _, err := jwt.NewParser().ParseUnverified(token, &claims)
	if err != nil {
		return Result{Class: ClassMalformed, Reason: "undecodable jwt"}
	}
	alg, _ := t.Header["alg"].(string)
	if !slices.Contains(v.cfg.Algorithms, alg) {
		return Result{Class: ClassJWTInvalid, Reason: "algorithm not allowed"}
	}
	if t.Header["crit"] != nil {
		return Result{Class: ClassJWTInvalid, Reason: errCrit.Error()}
	}
	if reason := v.staticClaims(&claims); reason != "" {
		return Result{Class: ClassJWTInvalid, Reason: reason}
	}
	c := cachedClaims{subject: claims.Subject}
	if claims.ExpiresAt == nil {
		return Result{Class: ClassJWTInvalid, Reason: "exp claim missing"}
	}
	c.exp = claims.ExpiresAt.Time
	if claims.NotBefore != nil {
		c.nbf = claims.NotBefore.Time
	}
	r := v.timeResult(c, now)
	r.Verified = false
	return r
}

// resultFromError maps golang-jwt's error tree to a class and a reason.
// Signature and key errors come first: an expired token with a bad
// signature is invalid, not expired.
func resultFromError(err error, claims *jwt.RegisteredClaims) Result {
	r := Result{Subject: claims.Subject}
	if claims.ExpiresAt != nil {
		r.Expiry = claims.ExpiresAt.Time
	}
	if err == nil {
		r.Class, r.Verified, r.Reason = ClassJWT, true, "valid jwt"
		return r
	}
	r.Class = ClassJWTInvalid
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return Result{Class: ClassMalformed, Reason: "undecodable jwt"}
	case errors.Is(err, jwt.ErrTokenUnverifiable), errors.Is(err, jwt.ErrTokenSignatureInvalid):
		// golang-jwt reports a disallowed or unknown alg as "signing
		// method X is invalid|unavailable" under these two sentinels.
		switch {
		case errors.Is(err, errCrit):
			r.Reason = errCrit.Error()
		case strings.Contains(err.Error(), "signing method"):
			r.Reason = "algorithm not allowed"
		case errors.Is(err, jwt.ErrTokenSignatureInvalid):
			r.Reason = "signature invalid"
		default:
			r.Reason = "no key for this algorithm or kid"
		}
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		r.Reason = "exp claim missing"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		r.Reason = "wrong audience"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		r.Reason = "wrong issuer"
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		r.Reason = "not yet valid"
	case errors.Is(err, jwt.ErrTokenExpired):
		r.Class, r.Reason = ClassJWTExpired, "token expired"
	default:
		r.Reason = "invalid jwt"
	}
	if r.Class == ClassJWTInvalid {
		// An unproven sub names nobody; do not attribute the request.
		r.Subject = ""
	}
	return r
}
