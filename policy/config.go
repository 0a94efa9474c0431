package policy

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// The types below mirror config.yaml key for key; SPEC "Configuration"
// documents every key. A pointer field is nil when its key is absent, so
// that defaults apply only to what the operator did not write.

type fileConfig struct {
	Listen          *string          `yaml:"listen"`
	AdminListen     *string          `yaml:"admin_listen"`
	HealthPath      *string          `yaml:"health_path"`
	ShutdownTimeout *Duration        `yaml:"shutdown_timeout"`
	TrustedProxies  []trustedEntry   `yaml:"trusted_proxies"`
	Upstream        upstreamConfig   `yaml:"upstream"`
	Verify          verifyConfig     `yaml:"verify"`
	Mint            *mintConfig      `yaml:"mint"`
	Log             logConfig        `yaml:"log"`
	Routes          []routeConfig    `yaml:"routes"`
	Unmatched       *unmatchedAction `yaml:"unmatched"`
	RateLimit       rateLimitConfig  `yaml:"rate_limit"`
}

type upstreamConfig struct {
	URL             string    `yaml:"url"`
	HostHeader      *string   `yaml:"host_header"`
	DialTimeout     *Duration `yaml:"dial_timeout"`
	UpgradeTimeout  *Duration `yaml:"upgrade_timeout"`
	ResponseTimeout *Duration `yaml:"response_timeout"`
	WriteTimeout    *Duration `yaml:"write_timeout"`
	CAFile          string    `yaml:"ca_file"`
	StopTimeout     *Duration `yaml:"stop_timeout"`
}

type verifyConfig struct {
	HS256Secret string    `yaml:"hs256_secret"`
	JWKSURL     string    `yaml:"jwks_url"`
	Algorithms  []string  `yaml:"algorithms"`
	Issuer      string    `yaml:"issuer"`
	Audience    string    `yaml:"audience"`
	Leeway      *Duration `yaml:"leeway"`
}

type mintConfig struct {
	HS256Secret    string         `yaml:"hs256_secret"`
	PrivateKeyFile string         `yaml:"private_key_file"`
	KID            string         `yaml:"kid"`
	TTL            *Duration      `yaml:"ttl"`
	Issuer         *string        `yaml:"issuer"`
	Audience       *string        `yaml:"audience"`
	Claims         map[string]any `yaml:"claims"`
}

type logConfig struct {
	Level   *string `yaml:"level"`
	Format  *string `yaml:"format"`
	UserIDs *string `yaml:"user_ids"`
	HashKey string  `yaml:"hash_key"`
	// Heartbeat and MaxLinesPerMinute: issue 21 (SPEC "Logs").
	Heartbeat         *Duration `yaml:"heartbeat"`
	MaxLinesPerMinute *int      `yaml:"max_lines_per_minute"`
}

type routeConfig struct {
	Name          string         `yaml:"name"`
	Match         matchConfig    `yaml:"match"`
	Token         tokenConfig    `yaml:"token"`
	RejectWith    *string        `yaml:"reject_with"`
	Legacy        legacyConfig   `yaml:"legacy"`
	Policy        policyConfig   `yaml:"policy"`
	CloseCodes    map[string]int `yaml:"close_codes"`
	CloseOnExpiry *bool          `yaml:"close_on_expiry"`
	RevokeOpen    *bool          `yaml:"revoke_open"`
}

type matchConfig struct {
	Path      string `yaml:"path"`
	Prefix    string `yaml:"prefix"`
	WebSocket *bool  `yaml:"websocket"`
}

type tokenConfig struct {
	From    []string `yaml:"from"`
	Forward string   `yaml:"forward"`
}

type legacyConfig struct {
	Origins []string `yaml:"origins"`
}

type policyConfig struct {
	JWT        *classRule `yaml:"jwt"`
	JWTExpired *classRule `yaml:"jwt_expired"`
	JWTInvalid *classRule `yaml:"jwt_invalid"`
	Malformed  *classRule `yaml:"malformed"`
	Missing    *classRule `yaml:"missing"`
	UUID       *classRule `yaml:"uuid"`
}

type rateLimitConfig struct {
	PerMinute *int `yaml:"per_minute"`
	Burst     *int `yaml:"burst"`
}

// classRule is one action (`uuid: rewrite`) or a list of stages.
type classRule struct {
	Line   int
	Single bool
	Action Action
	Stages []stageConfig
}

type stageConfig struct {
	Until     *Time   `yaml:"until"`
	Action    *Action `yaml:"action"`
	Percent   *int    `yaml:"percent"`
	Otherwise *Action `yaml:"otherwise"`
	DryRun    bool    `yaml:"dry_run"`
}

func (r *classRule) unmarshalNode(d *decoder, n *yaml.Node, path string) {
	r.Line = n.Line
	if n.Kind == yaml.ScalarNode {
		s, ok := d.scalar(n, path, "an action")
		if !ok {
			return
		}
		r.Single = true
		if err := r.Action.unmarshalScalar(s); err != nil {
			d.problemAt(n, path, "%v", err)
		}
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.problemAt(n, path, "want an action (pass, rewrite, reject) or a list of stages, got %s", kindNames[n.Kind])
		return
	}
	if len(n.Content) == 0 {
		d.problemAt(n, path, "empty stage list; give an action or at least one stage")
		return
	}
	d.decode(n, path, reflectValueOf(&r.Stages))
}

// Action is what authgate does with a request of some class.
type Action uint8

// Actions. ActionNone is the zero value: "not set".
const (
	ActionNone Action = iota
	ActionPass
	ActionRewrite
	ActionReject
)

var actionNames = [...]string{"", "pass", "rewrite", "reject"}

func (a Action) String() string { return actionNames[a] }

// MarshalText makes actions read as words in JSON (/policy, explain).
func (a Action) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

func (a *Action) unmarshalScalar(s string) error {
	for i, n := range actionNames[1:] {
		if s == n {
			*a = Action(i + 1)
			return nil
		}
	}
	return fmt.Errorf("unknown action %q; want pass, rewrite or reject", s)
}

// unmatchedAction is `unmatched`: pass or reject (a request on no route
// has no token to rewrite).
type unmatchedAction Action

func (a *unmatchedAction) unmarshalScalar(s string) error {
	switch s {
	case "pass":
		*a = unmatchedAction(ActionPass)
	case "reject":
		*a = unmatchedAction(ActionReject)
	case "rewrite":
		return fmt.Errorf("rewrite needs a route's token; want pass or reject")
	default:
		return fmt.Errorf("unknown action %q; want pass or reject", s)
	}
	return nil
}

// Duration is a time.Duration written in Go syntax or with a `d` (days)
// suffix, as in `7d` or `1d12h`.
type Duration time.Duration

func (d *Duration) unmarshalScalar(s string) error {
	v, err := ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// ParseDuration accepts Go durations plus whole days: `7d`, `1d12h`, `90m`.
func ParseDuration(s string) (time.Duration, error) {
	orig := s
	var days time.Duration
	if i := strings.IndexByte(s, 'd'); i >= 0 {
		n, err := strconv.ParseUint(s[:i], 10, 16)
		if err != nil {
			return 0, fmt.Errorf("bad duration %q; write it like 30s, 5m, 12h or 7d", orig)
		}
		days = time.Duration(n) * 24 * time.Hour
		s = s[i+1:]
		if s == "" {
			return days, nil
		}
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("bad duration %q; write it like 30s, 5m, 12h or 7d", orig)
	}
	if days > 0 && (v < 0 || v > math.MaxInt64-days) {
		return 0, fmt.Errorf("bad duration %q; write it like 30s, 5m, 12h or 7d", orig)
	}
	return days + v, nil
}

// FormatDuration writes d the way ParseDuration reads it, using days when
// d is a whole number of them.
func FormatDuration(d time.Duration) string {
	if d > 0 && d%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	}
	return d.String()
}

// Time is an instant written as RFC 3339 or YYYY-MM-DD (midnight UTC).
type Time time.Time

func (t *Time) unmarshalScalar(s string) error {
	v, err := ParseTime(s)
	if err != nil {
		return err
	}
	*t = Time(v)
	return nil
}

// ParseTime accepts RFC 3339 or YYYY-MM-DD (midnight UTC).
func ParseTime(s string) (time.Time, error) {
	if v, err := time.Parse(time.RFC3339, s); err == nil {
		return v.UTC(), nil
	}
	if v, err := time.Parse(time.DateOnly, s); err == nil {
		return v, nil
	}
	return time.Time{}, fmt.Errorf("bad time %q; write 2025-08-16 (midnight UTC) or 2025-08-16T09:00:00Z", s)
}

// trustedEntry is one entry of trusted_proxies: a CIDR, a single address
// (meaning just that address), or the name of a compiled-in set.
type trustedEntry struct {
	set  string // a key of namedSets, or ""
	cidr netip.Prefix
}

func (p *trustedEntry) unmarshalScalar(s string) error {
	if _, ok := namedSets[s]; ok {
		p.set = s
		return nil
	}
	if v, err := netip.ParsePrefix(s); err == nil {
		if v != v.Masked() {
			return fmt.Errorf("CIDR %q has host bits set; did you mean %s?", s, v.Masked())
		}
		p.cidr = v
		return nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		p.cidr = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		return nil
	}
	return errors.New("bad entry " + strconv.Quote(s) + "; write a CIDR (10.0.0.0/8, 2001:db8::/32), a single address, or a named set: " + setNames())
}
