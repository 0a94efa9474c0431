package rewrite

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

// ReservedClaims are set by Mint and may not be configured in
// MintConfig.Claims.
var ReservedClaims = []string{"sub", "iat", "exp", "nbf", "jti", "iss", "aud", "amr"}

// MintConfig is how replacement JWTs for legacy UUIDs are made.
type MintConfig struct {
	// HS256Secret signs with HS256 (the Supabase project's JWT secret,
	// which the backend already verifies with). Exclusive with PrivateKey.
	HS256Secret []byte
	// PrivateKey signs with ES256 (P-256) or RS256; KID names it in the
	// token header and in PublicJWKS.
	PrivateKey crypto.Signer
	KID        string
	TTL        time.Duration
	Issuer     string
	Audience   string
	// Claims are added to every minted token (for example role).
	Claims map[string]any
}

// Minter mints short-lived JWTs. It is immutable and safe for concurrent
// use.
type Minter struct {
	cfg    MintConfig
	method jwt.SigningMethod
	key    any
	jwks   []byte
	jwk    []byte // the public key as one JWK (asymmetric keys only)
}

// NewMinter checks cfg and prepares the signing key.
func NewMinter(cfg MintConfig) (*Minter, error) {
	m := &Minter{cfg: cfg}
	switch k := cfg.PrivateKey.(type) {
	case nil:
		if len(cfg.HS256Secret) == 0 {
			return nil, errors.New("no mint key: set hs256_secret or private_key_file")
		}
		m.method, m.key = jwt.SigningMethodHS256, cfg.HS256Secret
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() {
			return nil, errors.New("ecdsa mint key must use curve P-256 (ES256)")
		}
		m.method, m.key = jwt.SigningMethodES256, k
	case *rsa.PrivateKey:
		if k.N.BitLen() < 2048 {
			return nil, errors.New("rsa mint key must have at least 2048 bits")
		}
		m.method, m.key = jwt.SigningMethodRS256, k
	default:
		return nil, fmt.Errorf("mint key type %T: want an ES256 (P-256) or RS256 private key", k)
	}
	if cfg.PrivateKey != nil {
		jwk, err := jwkset.NewJWKFromKey(cfg.PrivateKey.Public(), jwkset.JWKOptions{
			Metadata: jwkset.JWKMetadataOptions{ALG: jwkset.ALG(m.method.Alg()), KID: cfg.KID, USE: jwkset.UseSig},
		})
		if err != nil {
			return nil, fmt.Errorf("building public jwk: %w", err)
		}
		b, err := json.Marshal(jwkset.JWKSMarshal{Keys: []jwkset.JWKMarshal{jwk.Marshal()}})
		if err != nil {
			return nil, fmt.Errorf("encoding public jwks: %w", err)
		}
		m.jwks = b
		if m.jwk, err = json.Marshal(jwk.Marshal()); err != nil {
			return nil, fmt.Errorf("encoding public jwk: %w", err)
		}
	}
	return m, nil
}

// Algorithm returns the signing algorithm (HS256, ES256 or RS256).
func (m *Minter) Algorithm() string { return m.method.Alg() }

// PublicJWKS returns the JWK Set of the public mint key, or nil when the
// key is symmetric.
func (m *Minter) PublicJWKS() []byte { return m.jwks }

// PublicJWK returns the public mint key as one JWK (JSON), or nil when
// the key is symmetric. Two minters with the same key and kid return the
// same bytes.
func (m *Minter) PublicJWK() []byte { return m.jwk }

// KID returns the key id minted tokens carry ("" for none).
func (m *Minter) KID() string { return m.cfg.KID }

// TTL returns the lifetime of minted tokens.
func (m *Minter) TTL() time.Duration { return m.cfg.TTL }

// Mint returns a JWT for sub valid from now for the configured TTL, and
// its expiry. The token says how it was made: amr [{method: legacy_uuid}].
func (m *Minter) Mint(sub string, now time.Time) (string, time.Time, error) {
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", time.Time{}, fmt.Errorf("jti: %w", err)
	}
	now = now.Truncate(time.Second)
	exp := now.Add(m.cfg.TTL)
	claims := make(jwt.MapClaims, len(m.cfg.Claims)+8)
	for k, v := range m.cfg.Claims {
		claims[k] = v
	}
	claims["sub"] = sub
	claims["iat"] = now.Unix()
	claims["exp"] = exp.Unix()
	claims["jti"] = hex.EncodeToString(jti[:])
	claims["amr"] = []map[string]any{{"method": "legacy_uuid", "timestamp": now.Unix()}}
	if m.cfg.Issuer != "" {
		claims["iss"] = m.cfg.Issuer
	}
	if m.cfg.Audience != "" {
		claims["aud"] = m.cfg.Audience
	}
	t := jwt.NewWithClaims(m.method, claims)
	if m.cfg.KID != "" {
		t.Header["kid"] = m.cfg.KID
	}
	s, err := t.SignedString(m.key)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("signing: %w", err)
	}
	return s, exp, nil
}

// ParsePrivateKeyPEM reads a PKCS#8, SEC 1 (EC) or PKCS#1 (RSA) private
// key.
func ParsePrivateKeyPEM(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	var (
		key any
		err error
	)
	switch block.Type {
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q: want a private key", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", block.Type, err)
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("key type %T cannot sign", key)
	}
	return s, nil
}

// Claims returns the extra claims added to every minted token.
func (m *Minter) Claims() map[string]any { return m.cfg.Claims }
