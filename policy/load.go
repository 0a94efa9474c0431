package policy

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"authgate/rewrite"
)

// Defaults for keys the operator did not write.
const (
	DefaultListen          = ":8080"
	DefaultAdminListen     = "127.0.0.1:9091"
	DefaultHealthPath      = "/healthz"
	DefaultShutdownTimeout = 25 * time.Second
	DefaultDialTimeout     = 5 * time.Second
	// DefaultUpgradeTimeout and DefaultResponseTimeout are long enough
	// for a backend waking from a cold start: Render spins a free service
	// down after 15 idle minutes, and the next request waits 30-90 s
	// while it boots (Cloudflare in front gives up at 100 s).
	DefaultUpgradeTimeout  = 90 * time.Second
	DefaultResponseTimeout = 90 * time.Second
	// DefaultWriteTimeout bounds each write of a relayed WebSocket to a
	// peer that stopped reading.
	DefaultWriteTimeout = 10 * time.Second
	// DefaultStopTimeout is same-service mode's wait from SIGTERM to
	// SIGKILL for the child: with DefaultShutdownTimeout it fits the 30 s
	// Render gives a service between SIGTERM and SIGKILL.
	DefaultStopTimeout   = 10 * time.Second
	DefaultLeeway        = 30 * time.Second
	DefaultMintTTL       = 5 * time.Minute
	DefaultMintIssuer    = "authgate"
	DefaultAudience      = "authenticated"
	DefaultRatePerMinute = 30
	DefaultRateBurst     = 10
	// DefaultHeartbeat is log.heartbeat when not written (issue 21).
	DefaultHeartbeat = 5 * time.Minute
	// DefaultMaxLinesPerMinute is log.max_lines_per_minute when not
	// written: half of the 6,000 lines a minute Render keeps per
	// instance, leaving room for the backend's own lines in same-service
	// mode.
	DefaultMaxLinesPerMinute = 3000
	maxMintTTL               = 24 * time.Hour
)

// DefaultAlgorithms is verify.algorithms when not written.
var DefaultAlgorithms = []string{"HS256", "ES256", "RS256"}

// DefaultSources is a route's token.from when not written; a route with
// websocket: false gets DefaultHTTPSources.
var (
	DefaultSources     = []string{"query:token", "header:authorization", "protocol"}
	DefaultHTTPSources = []string{"query:token", "header:authorization"}
)

var knownAlgorithms = []string{"HS256", "HS384", "HS512", "ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA"}

var routeName = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

// Options adjust Load. The zero value reads the file system and the
// process environment.
type Options struct {
	// LookupEnv resolves ${VAR}; nil means os.LookupEnv.
	LookupEnv func(string) (string, bool)
	// ReadFile reads the config and key files; nil means os.ReadFile.
	ReadFile func(string) ([]byte, error)
}

// Load reads, expands, decodes, validates and compiles the config at path.
// Every problem is returned at once as an *Error.
func Load(path string, opt Options) (*Snapshot, error) {
	read := opt.ReadFile
	if read == nil {
		read = os.ReadFile
	}
	data, err := read(path)
	if err != nil {
		msg := fmt.Sprintf("cannot read config: %v", unwrapPathError(err))
		// The hash of the failure, so a reloader reports it once.
		return nil, &Error{Problems: []Problem{{File: path, Msg: msg}}, Hash: sha256.Sum256([]byte(msg))}
	}
	return Parse(path, data, opt)
}

func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// Parse is Load for bytes already read; name is used in messages and to
// resolve relative key file paths.
func Parse(name string, data []byte, opt Options) (*Snapshot, error) {
	if opt.LookupEnv == nil {
		opt.LookupEnv = os.LookupEnv
	}
	if opt.ReadFile == nil {
		opt.ReadFile = os.ReadFile
	}
	d := &decoder{file: name, lookup: opt.LookupEnv, lines: map[string]pos{}, budget: maxNodes}
	hash := sha256.Sum256(data)
	var root yaml.Node
	err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&root)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, &Error{Problems: []Problem{syntaxProblem(name, data, err)}, Hash: hash}
	}
	if len(root.Content) == 0 {
		return nil, &Error{Problems: []Problem{{File: name, Msg: "config is empty; see config.yaml in the repository for a commented example"}}, Hash: hash}
	}
	var fc fileConfig
	d.decode(root.Content[0], "", reflectValueOf(&fc))
	c := &compiler{decoder: d, opt: opt, dir: filepath.Dir(name)}
	s := c.compile(&fc)
	hash = contentHash(data, c.files)
	s.File = name
	s.Hash = hash
	for _, f := range c.files {
		s.Files = append(s.Files, f.path)
	}
	if len(d.probs) > 0 {
		sortProblems(d.probs)
		return nil, &Error{Problems: d.probs, Hash: hash, Files: s.Files}
	}
	sortProblems(c.warnings)
	s.Warnings = c.warnings
	s.describe = c.describe(s, &fc)
	return s, nil
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func syntaxProblem(name string, data []byte, err error) Problem {
	msg := err.Error()
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		// yaml's parser errors name the line where the enclosing block
		// starts, not the bad line (a mis-indented key on line 4 reads as
		// "line 1"). The shortest prefix of whole lines that no longer
		// parses ends at the bad line.
		if bad := firstBadLine(data); bad > line {
			line = bad
		}
		return Problem{File: name, Line: line, Msg: "yaml syntax: " + m[2]}
	}
	return Problem{File: name, Msg: "yaml syntax: " + strings.TrimPrefix(msg, "yaml: ")}
}

// firstBadLine returns the smallest n such that the first n lines of data
// do not parse as YAML, or 0. It bisects: a prefix that fails stays
// failing as lines are added, in practice, for the errors this serves.
func firstBadLine(data []byte) int {
	ends := []int{}
	for i, b := range data {
		if b == '\n' {
			ends = append(ends, i+1)
		}
	}
	if len(data) > 0 && data[len(data)-1] != '\n' {
		ends = append(ends, len(data))
	}
	fails := func(n int) bool {
		var node yaml.Node
		err := yaml.Unmarshal(data[:ends[n-1]], &node)
		return err != nil
	}
	lo, hi := 1, len(ends)
	if hi == 0 || !fails(hi) {
		return 0
	}
	for lo < hi {
		mid := (lo + hi) / 2
		if fails(mid) {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}

type compiler struct {
	*decoder
	opt      Options
	dir      string
	warnings []Problem
	files    []namedFile // the files the config names, as read
}

type namedFile struct {
	path string
	data []byte
	err  error
}

// contentHash is the SHA-256 of the config's bytes and of every file it
// names (path, then content or read error), so a reload sees a rotated
// key file as a change even when config.yaml is untouched.
func contentHash(data []byte, files []namedFile) [sha256.Size]byte {
	if len(files) == 0 {
		return sha256.Sum256(data)
	}
	h := sha256.New()
	h.Write(data)
	for _, f := range files {
		fmt.Fprintf(h, "\x00%s\x00%d\x00", f.path, len(f.data))
		h.Write(f.data)
		if f.err != nil {
			fmt.Fprintf(h, "\x00%v", unwrapPathError(f.err))
		}
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}

// errf records a semantic problem at path, unless path or a key above it
// already has one: an unset ${VAR} should not also read as "required",
// nor a list where a mapping belongs as a list of missing keys.
func (c *compiler) errf(path, format string, args ...any) {
	if c.hasProblemAbove(path) {
		return
	}
	c.problem(c.posOf(path), path, format, args...)
}

func (c *compiler) warnf(path, format string, args ...any) {
	p := c.posOf(path)
	c.warnings = append(c.warnings, Problem{File: c.file, Line: p.line, col: p.col, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// hasProblemAbove reports a problem at path or at one of its ancestors.
func (c *compiler) hasProblemAbove(path string) bool {
	for _, p := range c.probs {
		if p.Path != "" && (p.Path == path || strings.HasPrefix(path, p.Path+".") || strings.HasPrefix(path, p.Path+"[")) {
			return true
		}
	}
	return false
}

func strOr(p *string, def string) string {
	if p == nil {
		return def
	}
	return *p
}

func durOr(p *Duration, def time.Duration) time.Duration {
	if p == nil {
		return def
	}
	return time.Duration(*p)
}

func (c *compiler) compile(fc *fileConfig) *Snapshot {
	s := &Snapshot{
		Listen:          strOr(fc.Listen, DefaultListen),
		AdminListen:     strOr(fc.AdminListen, DefaultAdminListen),
		HealthPath:      strOr(fc.HealthPath, DefaultHealthPath),
		ShutdownTimeout: durOr(fc.ShutdownTimeout, DefaultShutdownTimeout),
		Unmatched:       ActionPass,
	}
	c.checkAddr("listen", s.Listen)
	if s.AdminListen != "" {
		c.checkAddr("admin_listen", s.AdminListen)
	}
	if !strings.HasPrefix(s.HealthPath, "/") || strings.ContainsAny(s.HealthPath, "?# ") {
		c.errf("health_path", "must be a path starting with /, like /healthz")
	}
	if s.ShutdownTimeout <= 0 {
		c.errf("shutdown_timeout", "must be positive, like 25s")
	}
	for _, p := range fc.TrustedProxies {
		if p.set != "" {
			s.TrustedProxies = append(s.TrustedProxies, namedSets[p.set]...)
			s.TrustedNames = append(s.TrustedNames, p.set)
		} else {
			s.TrustedProxies = append(s.TrustedProxies, p.cidr)
			s.TrustedNames = append(s.TrustedNames, p.cidr.String())
		}
	}
	s.Upstream = c.upstream(&fc.Upstream)
	s.Verifier, s.JWKSURL = c.verify(&fc.Verify)
	s.Minter = c.mint(fc.Mint)
	s.Log = c.log(&fc.Log)
	if fc.Unmatched != nil {
		s.Unmatched = Action(*fc.Unmatched)
	}
	s.RateLimit = RateLimit{PerMinute: DefaultRatePerMinute, Burst: DefaultRateBurst}
	if fc.RateLimit.PerMinute != nil {
		s.RateLimit.PerMinute = *fc.RateLimit.PerMinute
	}
	if fc.RateLimit.Burst != nil {
		s.RateLimit.Burst = *fc.RateLimit.Burst
	}
	if s.RateLimit.PerMinute < 0 {
		c.errf("rate_limit.per_minute", "must be 0 (off) or more")
	}
	if s.RateLimit.PerMinute > 0 && s.RateLimit.Burst < 1 {
		c.errf("rate_limit.burst", "must be at least 1 when per_minute is set")
	}
	names := map[string]string{}
	for i := range fc.Routes {
		path := fmt.Sprintf("routes[%d]", i)
		rt := c.route(path, i, &fc.Routes[i], s)
		if rt == nil {
			continue
		}
		if prev, dup := names[rt.Name]; dup {
			c.errf(path+".name", "%q is already the name of %s; route names must be unique", rt.Name, prev)
		}
		names[rt.Name] = path
		s.Routes = append(s.Routes, rt)
	}
	if len(fc.Routes) == 0 {
		c.warnf("routes", "no routes: every request is proxied unchecked (unmatched: %s)", s.Unmatched)
	}
	if s.RateLimit.PerMinute > 0 && len(s.TrustedProxies) == 0 {
		c.warnf("trusted_proxies", "empty while rate_limit is on: behind a proxy (Render, a load balancer) every client shares the proxy's address, one client_ip and one rate-limit bucket; on Render write [private, cloudflare]")
	}
	return s
}

func (c *compiler) checkAddr(path, addr string) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		c.errf(path, "bad listen address %q; write host:port or :port, like :8080", addr)
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		c.errf(path, "bad port %q in %q", port, addr)
	}
}

func (c *compiler) upstream(u *upstreamConfig) Upstream {
	up := Upstream{
		HostHeader:      strOr(u.HostHeader, HostUpstream),
		DialTimeout:     durOr(u.DialTimeout, DefaultDialTimeout),
		UpgradeTimeout:  durOr(u.UpgradeTimeout, DefaultUpgradeTimeout),
		ResponseTimeout: durOr(u.ResponseTimeout, DefaultResponseTimeout),
		WriteTimeout:    durOr(u.WriteTimeout, DefaultWriteTimeout),
		StopTimeout:     durOr(u.StopTimeout, DefaultStopTimeout),
	}
	if u.URL == "" {
		c.errf("upstream.url", "required: the backend's base URL, like https://api.example.com or ${UPSTREAM_URL}")
	} else if pu, err := url.Parse(u.URL); err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
		c.errf("upstream.url", "bad URL %q; want http(s)://host[:port]", u.URL)
	} else if pu.RawQuery != "" || pu.Fragment != "" || pu.User != nil {
		c.errf("upstream.url", "URL %q must not carry a query, fragment or credentials", u.URL)
	} else {
		up.URL = pu
	}

	switch h := up.HostHeader; h {
	case HostUpstream, HostClient:
	default:
		if h == "" || strings.ContainsAny(h, "/ \t?#@") {
			c.errf("upstream.host_header", "want upstream, client or a host name, got %q", h)
		}
	}
	for _, t := range []struct {
		key     string
		d       time.Duration
		example string
	}{
		{"dial_timeout", up.DialTimeout, "5s"},
		{"upgrade_timeout", up.UpgradeTimeout, "90s (a cold start can take that long)"},
		{"response_timeout", up.ResponseTimeout, "90s (a cold start can take that long)"},
		{"write_timeout", up.WriteTimeout, "10s"},
		{"stop_timeout", up.StopTimeout, "10s"},
	} {
		if t.d <= 0 {
			c.errf("upstream."+t.key, "must be positive, like %s", t.example)
		}
	}
	if u.CAFile != "" {
		up.CAFile = u.CAFile
		if !filepath.IsAbs(up.CAFile) {
			up.CAFile = filepath.Join(c.dir, up.CAFile)
		}
		up.RootCAs = c.caPool(up.CAFile)
		if up.URL != nil && up.URL.Scheme != "https" {
			c.warnf("upstream.ca_file", "set, but upstream.url is %s: the CA is used only for https upstreams", up.URL.Scheme)
		}
	}
	return up
}

// caPool reads the PEM bundle at path and returns the system roots plus
// its certificates (SPEC: system roots plus upstream.ca_file).
func (c *compiler) caPool(path string) *x509.CertPool {
	data, err := c.readFile(path)
	if err != nil {
		c.errf("upstream.ca_file", "cannot read %s: %v", path, unwrapPathError(err))
		return nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	n := 0
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			c.errf("upstream.ca_file", "%s: certificate %d: %v", path, n+1, err)
			return nil
		}
		pool.AddCert(cert)
		n++
	}
	if n == 0 {
		c.errf("upstream.ca_file", "%s holds no PEM certificate (want -----BEGIN CERTIFICATE----- blocks)", path)
		return nil
	}
	return pool
}

// readFile reads a file the config names and records it, so that its
// content is part of the snapshot's hash and the file is watched.
func (c *compiler) readFile(path string) ([]byte, error) {
	data, err := c.opt.ReadFile(path)
	c.files = append(c.files, namedFile{path: path, data: data, err: err})
	return data, err
}

func (c *compiler) verify(v *verifyConfig) (*rewrite.Verifier, string) {
	cfg := rewrite.VerifyConfig{
		HS256Secret: []byte(v.HS256Secret),
		Issuer:      v.Issuer,
		Audience:    v.Audience,
		Leeway:      durOr(v.Leeway, DefaultLeeway),
		Algorithms:  v.Algorithms,
	}
	if cfg.Algorithms == nil {
		cfg.Algorithms = DefaultAlgorithms
	}
	if len(cfg.Algorithms) == 0 {
		c.errf("verify.algorithms", "empty; list the allowed algorithms, like [HS256, ES256, RS256]")
	}
	for i, a := range cfg.Algorithms {
		p := fmt.Sprintf("verify.algorithms[%d]", i)
		switch {
		case strings.EqualFold(a, "none"):
			c.errf(p, "\"none\" is never allowed: it accepts unsigned tokens")
		case !slices.Contains(knownAlgorithms, a):
			c.errf(p, "unknown algorithm %q; want one of %s", a, strings.Join(knownAlgorithms, ", "))
		}
	}
	if v.JWKSURL != "" {
		pu, err := url.Parse(v.JWKSURL)
		switch {
		case err != nil || pu.Host == "" || (pu.Scheme != "https" && pu.Scheme != "http"):
			c.errf("verify.jwks_url", "bad URL %q; want https://<ref>.supabase.co/auth/v1/.well-known/jwks.json", v.JWKSURL)
		case pu.Scheme == "http" && !isLoopbackHost(pu.Hostname()):
			c.errf("verify.jwks_url", "keys must come over https, not %q", v.JWKSURL)
		}
		cfg.HasJWKS = true
	}
	if cfg.Leeway < 0 || cfg.Leeway > 5*time.Minute {
		c.errf("verify.leeway", "must be between 0s and 5m")
	}
	hasHS, hasAsym := false, false
	for _, a := range cfg.Algorithms {
		if strings.HasPrefix(a, "HS") {
			hasHS = true
		} else {
			hasAsym = true
		}
	}
	switch {
	case len(cfg.HS256Secret) == 0 && v.JWKSURL == "":
		c.warnf("verify", "JWTs cannot be verified because no key is configured (hs256_secret or jwks_url): they are classified by structure and expiry only, logged verified=false")
	case hasHS && len(cfg.HS256Secret) == 0:
		c.warnf("verify.algorithms", "HS algorithms are allowed but verify.hs256_secret is not set: HS tokens will be jwt_invalid")
	case hasAsym && v.JWKSURL == "" && v.Algorithms != nil:
		c.warnf("verify.algorithms", "asymmetric algorithms are allowed but verify.jwks_url is not set: such tokens will be jwt_invalid")
	}
	if len(cfg.HS256Secret) > 0 && len(cfg.HS256Secret) < 32 {
		c.warnf("verify.hs256_secret", "shorter than 32 bytes; Supabase secrets are longer, check the value")
	}
	return rewrite.NewVerifier(cfg), v.JWKSURL
}

func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(h)
	return err == nil && a.IsLoopback()
}

func (c *compiler) mint(m *mintConfig) *rewrite.Minter {
	if m == nil {
		return nil
	}
	cfg := rewrite.MintConfig{
		HS256Secret: []byte(m.HS256Secret),
		KID:         m.KID,
		TTL:         durOr(m.TTL, DefaultMintTTL),
		Issuer:      strOr(m.Issuer, DefaultMintIssuer),
		Audience:    strOr(m.Audience, DefaultAudience),
		Claims:      m.Claims,
	}
	if cfg.Claims == nil {
		cfg.Claims = map[string]any{"role": "authenticated"}
	}
	for _, k := range slices.Sorted(maps.Keys(m.Claims)) {
		if slices.Contains(rewrite.ReservedClaims, k) {
			c.errf("mint.claims."+k, "%q is set by authgate; remove it (reserved: %s)", k, strings.Join(rewrite.ReservedClaims, ", "))
		}
	}
	if cfg.TTL <= 0 || cfg.TTL > maxMintTTL {
		c.errf("mint.ttl", "must be between 1s and 24h; minted tokens should be short-lived, like 5m")
	}
	switch {
	case m.HS256Secret != "" && m.PrivateKeyFile != "":
		c.errf("mint.private_key_file", "set either hs256_secret or private_key_file, not both")
		return nil
	case m.HS256Secret == "" && m.PrivateKeyFile == "":
		if c.hasProblemAt("mint") {
			return nil // e.g. an unset ${VAR} in hs256_secret, already reported
		}
		c.errf("mint", "no key: set hs256_secret (the secret the backend verifies with) or private_key_file")
		return nil
	case m.PrivateKeyFile != "":
		if m.KID == "" {
			c.errf("mint.kid", "required with private_key_file: backends that verify via JWKS pick the key by kid")
		}
		p := m.PrivateKeyFile
		if !filepath.IsAbs(p) {
			p = filepath.Join(c.dir, p)
		}
		data, err := c.readFile(p)
		if err != nil {
			c.errf("mint.private_key_file", "cannot read %s: %v", p, unwrapPathError(err))
			return nil
		}
		key, err := rewrite.ParsePrivateKeyPEM(data)
		if err != nil {
			c.errf("mint.private_key_file", "%s: %v", p, err)
			return nil
		}
		cfg.PrivateKey = key
	case m.KID != "":
		cfg.KID = m.KID
	}
	if len(cfg.HS256Secret) > 0 && len(cfg.HS256Secret) < 32 {
		c.warnf("mint.hs256_secret", "shorter than 32 bytes; Supabase secrets are longer, check the value")
	}
	mi, err := rewrite.NewMinter(cfg)
	if err != nil {
		path := "mint"
		if m.PrivateKeyFile != "" {
			path = "mint.private_key_file"
		}
		c.errf(path, "%v", err)
		return nil
	}
	return mi
}

func (c *compiler) log(l *logConfig) Log {
	out := Log{Level: strOr(l.Level, "info"), Format: strOr(l.Format, "json"), UserIDs: strOr(l.UserIDs, UserIDsPlain), HashKey: []byte(l.HashKey)}
	switch out.Level {
	case "trace", "debug", "info", "warn", "error":
	default:
		c.errf("log.level", "want trace, debug, info, warn or error, got %q", out.Level)
	}
	switch out.Format {
	case "json", "console":
	default:
		c.errf("log.format", "want json or console, got %q", out.Format)
	}
	switch out.UserIDs {
	case UserIDsPlain, UserIDsOmit:
	case UserIDsHash:
		if len(out.HashKey) < 16 {
			c.errf("log.hash_key", "user_ids: hash needs a hash_key of at least 16 characters, like ${AUTHGATE_LOG_HASH_KEY}")
		}
	default:
		c.errf("log.user_ids", "want plain, hash or omit, got %q", out.UserIDs)
	}
	out.Heartbeat = durOr(l.Heartbeat, DefaultHeartbeat)
	if out.Heartbeat != 0 && out.Heartbeat < time.Second {
		c.errf("log.heartbeat", "must be at least 1s (or 0s for no heartbeats), like 5m; got %s", FormatDuration(out.Heartbeat))
	}
	out.MaxLinesPerMinute = DefaultMaxLinesPerMinute
	if l.MaxLinesPerMinute != nil {
		out.MaxLinesPerMinute = *l.MaxLinesPerMinute
	}
	if out.MaxLinesPerMinute < 0 {
		c.errf("log.max_lines_per_minute", "must be 0 (no budget) or more, like 3000 (Render keeps 6,000 lines a minute); got %d", out.MaxLinesPerMinute)
	}
	return out
}

var defaultRules = [rewrite.NumClasses]Action{
	rewrite.ClassMissing:    ActionReject,
	rewrite.ClassMalformed:  ActionReject,
	rewrite.ClassUUID:       ActionReject,
	rewrite.ClassJWT:        ActionPass,
	rewrite.ClassJWTExpired: ActionReject,
	rewrite.ClassJWTInvalid: ActionReject,
}

// DefaultRejections is the SPEC's table of close codes and statuses.
var DefaultRejections = [rewrite.NumClasses]Rejection{
	rewrite.ClassMissing:    {4001, http.StatusUnauthorized, "authentication required"},
	rewrite.ClassMalformed:  {4001, http.StatusUnauthorized, "invalid token"},
	rewrite.ClassJWTInvalid: {4001, http.StatusUnauthorized, "invalid token"},
	rewrite.ClassJWTExpired: {4002, http.StatusUnauthorized, "token expired (refresh and reconnect)"},
	rewrite.ClassUUID:       {4003, http.StatusForbidden, "legacy authentication no longer accepted"},
	rewrite.ClassJWT:        {4001, http.StatusUnauthorized, "token not accepted"},
}

func (c *compiler) route(path string, idx int, rc *routeConfig, s *Snapshot) *Route {
	rt := &Route{Name: rc.Name, Index: idx, WebSocket: rc.Match.WebSocket, RevokeOpen: true}
	if !routeName.MatchString(rc.Name) {
		if rc.Name == "" {
			c.errf(path+".name", "required: a short name for logs and metrics, like pam-ws")
		} else {
			c.errf(path+".name", "%q: use lower-case letters, digits, - _ . (at most 63)", rc.Name)
		}
	}
	rt.hash = newFNV(rc.Name)
	switch {
	case rc.Match.Path != "" && rc.Match.Prefix != "":
		c.errf(path+".match", "set path (exact) or prefix, not both")
	case rc.Match.Path != "":
		rt.Path = rc.Match.Path
	case rc.Match.Prefix != "":
		rt.Path, rt.Prefix = rc.Match.Prefix, true
	default:
		c.errf(path+".match", "needs path (exact) or prefix, like {path: /api/v1/pam/ws, websocket: true}")
	}
	if rt.Path != "" && (!strings.HasPrefix(rt.Path, "/") || strings.ContainsAny(rt.Path, "?#")) {
		c.errf(path+".match", "%q must start with / and hold no query or fragment", rt.Path)
	}
	from := rc.Token.From
	if from == nil {
		from = DefaultSources
		if rc.Match.WebSocket != nil && !*rc.Match.WebSocket {
			from = DefaultHTTPSources
		}
	}
	if len(from) == 0 {
		c.errf(path+".token.from", "empty; list where the token may be, like [query:token, header:authorization]")
	}
	for i, f := range from {
		src, err := rewrite.ParseSource(f)
		if err != nil {
			c.errf(fmt.Sprintf("%s.token.from[%d]", path, i), "%v", err)
			continue
		}
		if slices.Contains(rt.Sources, src) {
			c.errf(fmt.Sprintf("%s.token.from[%d]", path, i), "%s is listed twice", f)
		}
		if src.Kind == rewrite.SourceProtocol && rc.Match.WebSocket != nil && !*rc.Match.WebSocket {
			c.errf(fmt.Sprintf("%s.token.from[%d]", path, i), "protocol tokens exist only on WebSocket upgrades, and this route matches websocket: false")
		}
		rt.Sources = append(rt.Sources, src)
	}
	fwd, err := rewrite.ParseForward(rc.Token.Forward)
	if err != nil {
		c.errf(path+".token.forward", "%v", err)
	}
	rt.Forward = fwd
	switch strOr(rc.RejectWith, "close") {
	case "close":
	case "http":
		rt.RejectHTTP = true
	default:
		c.errf(path+".reject_with", "want close or http, got %q", *rc.RejectWith)
	}
	for i, o := range rc.Legacy.Origins {
		norm, err := normalizeOrigin(o)
		if err != nil {
			c.errf(fmt.Sprintf("%s.legacy.origins[%d]", path, i), "%v", err)
			continue
		}
		if rt.Origins == nil {
			rt.Origins = map[string]bool{}
		}
		rt.Origins[norm] = true
	}
	rt.Codes = DefaultRejections
	for _, k := range slices.Sorted(maps.Keys(rc.CloseCodes)) {
		code := rc.CloseCodes[k]
		p := path + ".close_codes." + k
		cls, ok := rewrite.ParseClass(k)
		if !ok {
			c.errf(p, "unknown class %q; want missing, malformed, uuid, jwt, jwt_expired or jwt_invalid", k)
			continue
		}
		if !validCloseCode(code) {
			c.errf(p, "close code %d cannot be sent; use 4000-4999 (application) or a defined 1000-1014 code other than 1004-1006", code)
			continue
		}
		rt.Codes[cls].CloseCode = code
	}
	rt.CloseOnExpiry = rc.CloseOnExpiry != nil && *rc.CloseOnExpiry
	if rc.RevokeOpen != nil {
		rt.RevokeOpen = *rc.RevokeOpen
	}
	rules := [rewrite.NumClasses]*classRule{
		rewrite.ClassJWT:        rc.Policy.JWT,
		rewrite.ClassJWTExpired: rc.Policy.JWTExpired,
		rewrite.ClassJWTInvalid: rc.Policy.JWTInvalid,
		rewrite.ClassMalformed:  rc.Policy.Malformed,
		rewrite.ClassMissing:    rc.Policy.Missing,
		rewrite.ClassUUID:       rc.Policy.UUID,
	}
	for cls, r := range rules {
		rt.Rules[cls] = c.rule(path+".policy."+rewrite.Class(cls).String(), rewrite.Class(cls), r, s)
	}
	if rt.Origins != nil && rc.Policy.UUID == nil {
		c.warnf(path+".legacy.origins", "set, but policy.uuid is not: UUIDs are rejected anyway (the default)")
	}
	return rt
}

func validCloseCode(code int) bool {
	switch {
	case code >= 4000 && code <= 4999, code >= 3000 && code <= 3999:
		return true
	case code >= 1000 && code <= 1014:
		return code != 1004 && code != 1005 && code != 1006
	}
	return false
}

func normalizeOrigin(o string) (string, error) {
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return "", fmt.Errorf("bad origin %q; write scheme://host[:port], like https://app.example.com", o)
	}
	return strings.ToLower(u.Scheme + "://" + u.Host), nil
}

func (c *compiler) rule(path string, cls rewrite.Class, r *classRule, s *Snapshot) Rule {
	if r == nil {
		return Rule{Single: true, Stages: []Stage{{Action: defaultRules[cls]}}}
	}
	c.checkAction(path, cls, r.Action, s)
	if r.Single {
		return Rule{Single: true, Stages: []Stage{{Action: r.Action}}}
	}
	out := Rule{}
	var prev time.Time
	for i, sc := range r.Stages {
		p := fmt.Sprintf("%s[%d]", path, i)
		st := Stage{DryRun: sc.DryRun}
		last := i == len(r.Stages)-1
		switch {
		case sc.Until != nil && last:
			c.errf(p+".until", "the last stage must have no until: it applies from the stage before it onwards")
		case sc.Until == nil && !last:
			c.errf(p, "only the last stage may omit until; give this one an end date")
		case sc.Until != nil:
			st.Until = time.Time(*sc.Until)
			if !prev.IsZero() && !st.Until.After(prev) {
				c.errf(p+".until", "must be later than the stage before it (%s)", prev.Format(time.RFC3339))
			}
			prev = st.Until
		}
		if sc.Action == nil {
			c.errf(p, "needs an action: pass, rewrite or reject")
		} else {
			st.Action = *sc.Action
			c.checkAction(p+".action", cls, st.Action, s)
		}
		if sc.Otherwise != nil {
			st.Otherwise = *sc.Otherwise
			c.checkAction(p+".otherwise", cls, st.Otherwise, s)
		}
		if sc.Percent != nil {
			st.Percent = *sc.Percent
			if st.Percent < 1 || st.Percent > 100 {
				c.errf(p+".percent", "must be between 1 and 100")
			}
		}
		if (sc.Percent != nil || sc.DryRun) && sc.Otherwise == nil {
			c.errf(p, "percent and dry_run need otherwise: the action for everyone else")
		}
		if sc.Otherwise != nil && sc.Percent == nil && !sc.DryRun {
			c.errf(p+".otherwise", "applies only with percent or dry_run; remove it or add one of them")
		}
		out.Stages = append(out.Stages, st)
	}
	return out
}

func (c *compiler) checkAction(path string, cls rewrite.Class, a Action, s *Snapshot) {
	if a != ActionRewrite {
		return
	}
	if cls != rewrite.ClassUUID {
		c.errf(path, "rewrite applies only to uuid; use pass or reject for %s", cls)
		return
	}
	if s.Minter == nil && !c.hasProblemAt("mint") {
		c.errf(path, "rewrite needs a mint key; add mint.hs256_secret (the secret the backend verifies with) or mint.private_key_file")
	}
}

func (c *compiler) hasProblemAt(prefix string) bool {
	for _, p := range c.probs {
		if p.Path == prefix || strings.HasPrefix(p.Path, prefix+".") {
			return true
		}
	}
	return false
}

func (c *compiler) describe(s *Snapshot, fc *fileConfig) Description {
	d := Description{
		File: s.File, Listen: s.Listen, AdminListen: s.AdminListen, HealthPath: s.HealthPath,
		ShutdownTimeout: FormatDuration(s.ShutdownTimeout), Unmatched: s.Unmatched.String(), RateLimit: s.RateLimit,
		TrustedProxies: []string{},
		Upstream: UpstreamDesc{URL: s.Upstream.URL.String(), HostHeader: s.Upstream.HostHeader, DialTimeout: FormatDuration(s.Upstream.DialTimeout),
			UpgradeTimeout: FormatDuration(s.Upstream.UpgradeTimeout), ResponseTimeout: FormatDuration(s.Upstream.ResponseTimeout),
			StopTimeout:  FormatDuration(s.Upstream.StopTimeout),
			WriteTimeout: FormatDuration(s.Upstream.WriteTimeout), CAFile: s.Upstream.CAFile},
		Log: LogDesc{Level: s.Log.Level, Format: s.Log.Format, UserIDs: s.Log.UserIDs, HashKeySet: len(s.Log.HashKey) > 0,
			Heartbeat: FormatDuration(s.Log.Heartbeat), MaxLinesPerMinute: s.Log.MaxLinesPerMinute},
	}
	d.TrustedProxies = append(d.TrustedProxies, s.TrustedNames...)
	vc := s.Verifier.Config()
	d.Verify = VerifyDesc{HS256Secret: len(vc.HS256Secret) > 0, JWKSURL: s.JWKSURL, Algorithms: vc.Algorithms, Issuer: vc.Issuer, Audience: vc.Audience, Leeway: FormatDuration(vc.Leeway)}
	if s.Minter != nil {
		d.Mint = &MintDesc{Algorithm: s.Minter.Algorithm(), KID: fc.Mint.KID, TTL: FormatDuration(s.Minter.TTL()), Issuer: strOr(fc.Mint.Issuer, DefaultMintIssuer), Audience: strOr(fc.Mint.Audience, DefaultAudience), Claims: s.Minter.Claims()}
	}
	for _, w := range s.Warnings {
		d.Warnings = append(d.Warnings, w.String())
	}
	for _, rt := range s.Routes {
		rd := RouteDescription{Name: rt.Name, Forward: rt.Forward.String(), RejectWith: "close", CloseOnExpiry: rt.CloseOnExpiry, RevokeOpen: rt.RevokeOpen,
			Policy: map[string][]StageDesc{}, CloseCodes: map[string]int{}}
		if rt.RejectHTTP {
			rd.RejectWith = "http"
		}
		rd.Match = "path " + rt.Path
		if rt.Prefix {
			rd.Match = "prefix " + rt.Path
		}
		if rt.WebSocket != nil {
			rd.Match += fmt.Sprintf(", websocket %t", *rt.WebSocket)
		}
		for _, src := range rt.Sources {
			rd.TokenFrom = append(rd.TokenFrom, src.String())
		}
		for o := range rt.Origins {
			rd.Origins = append(rd.Origins, o)
		}
		slices.Sort(rd.Origins)
		for cls := range rewrite.NumClasses {
			name := rewrite.Class(cls).String()
			for _, st := range rt.Rules[cls].Stages {
				rd.Policy[name] = append(rd.Policy[name], st.desc())
			}
			rd.CloseCodes[name] = rt.Codes[cls].CloseCode
		}
		d.Routes = append(d.Routes, rd)
	}
	return d
}
