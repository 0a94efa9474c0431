package policy

import (
	"fmt"
	"strings"
	"time"
)

// Description is the effective configuration as served on the admin
// /policy endpoint: every default filled in, secrets replaced by whether
// they are set, and the stage in force per route and class.
type Description struct {
	File            string             `json:"file"`
	Now             time.Time          `json:"now"`
	Listen          string             `json:"listen"`
	AdminListen     string             `json:"admin_listen"`
	HealthPath      string             `json:"health_path"`
	ShutdownTimeout string             `json:"shutdown_timeout"`
	TrustedProxies  []string           `json:"trusted_proxies"`
	Upstream        UpstreamDesc       `json:"upstream"`
	Verify          VerifyDesc         `json:"verify"`
	Mint            *MintDesc          `json:"mint,omitempty"`
	Log             LogDesc            `json:"log"`
	Routes          []RouteDescription `json:"routes"`
	Unmatched       string             `json:"unmatched"`
	RateLimit       RateLimit          `json:"rate_limit"`
	Warnings        []string           `json:"warnings,omitempty"`
}

// UpstreamDesc describes the upstream.
type UpstreamDesc struct {
	URL             string `json:"url"`
	HostHeader      string `json:"host_header"`
	DialTimeout     string `json:"dial_timeout"`
	UpgradeTimeout  string `json:"upgrade_timeout"`
	ResponseTimeout string `json:"response_timeout"`
	WriteTimeout    string `json:"write_timeout"`
	StopTimeout     string `json:"stop_timeout"`
	CAFile          string `json:"ca_file,omitempty"`
}

// VerifyDesc describes JWT verification; the secret is shown as set or not.
type VerifyDesc struct {
	HS256Secret bool     `json:"hs256_secret_set"`
	JWKSURL     string   `json:"jwks_url,omitempty"`
	Algorithms  []string `json:"algorithms"`
	Issuer      string   `json:"issuer,omitempty"`
	Audience    string   `json:"audience,omitempty"`
	Leeway      string   `json:"leeway"`
}

// MintDesc describes minting; no key material.
type MintDesc struct {
	Algorithm string         `json:"algorithm"`
	KID       string         `json:"kid,omitempty"`
	TTL       string         `json:"ttl"`
	Issuer    string         `json:"issuer,omitempty"`
	Audience  string         `json:"audience,omitempty"`
	Claims    map[string]any `json:"claims,omitempty"`
}

// LogDesc describes logging; the hash key is shown as set or not.
type LogDesc struct {
	Level      string `json:"level"`
	Format     string `json:"format"`
	UserIDs    string `json:"user_ids"`
	HashKeySet bool   `json:"hash_key_set"`
	// Heartbeat is log.heartbeat ("0s" when off); MaxLinesPerMinute
	// log.max_lines_per_minute (0: no budget).
	Heartbeat         string `json:"heartbeat"`
	MaxLinesPerMinute int    `json:"max_lines_per_minute"`
}

// RouteDescription describes one route and the stage in force now.
type RouteDescription struct {
	Name          string                 `json:"name"`
	Match         string                 `json:"match"`
	TokenFrom     []string               `json:"token_from"`
	Forward       string                 `json:"forward"`
	RejectWith    string                 `json:"reject_with"`
	Origins       []string               `json:"legacy_origins,omitempty"`
	Policy        map[string][]StageDesc `json:"policy"`
	CloseCodes    map[string]int         `json:"close_codes"`
	CloseOnExpiry bool                   `json:"close_on_expiry"`
	RevokeOpen    bool                   `json:"revoke_open"`
	// Current is the rule in force now per class, in words.
	Current map[string]string `json:"current"`
}

// StageDesc is one stage as configured.
type StageDesc struct {
	Until     string `json:"until,omitempty"`
	Action    string `json:"action"`
	Percent   int    `json:"percent,omitempty"`
	Otherwise string `json:"otherwise,omitempty"`
	DryRun    bool   `json:"dry_run,omitempty"`
}

func (st Stage) desc() StageDesc {
	d := StageDesc{Action: st.Action.String(), Percent: st.Percent, DryRun: st.DryRun}
	if !st.Until.IsZero() {
		d.Until = st.Until.Format(time.RFC3339)
	}
	if st.Otherwise != ActionNone {
		d.Otherwise = st.Otherwise.String()
	}
	return d
}

// describe says a stage in words: "stage 1 (until 2025-08-23T00:00:00Z):
// reject 25%, otherwise rewrite".
func (st Stage) describe(idx int, single bool) string {
	var b strings.Builder
	if !single {
		fmt.Fprintf(&b, "stage %d", idx)
		if !st.Until.IsZero() {
			fmt.Fprintf(&b, " (until %s)", st.Until.Format(time.RFC3339))
		} else {
			b.WriteString(" (open-ended)")
		}
		b.WriteString(": ")
	}
	if st.DryRun {
		b.WriteString("dry run of ")
	}
	b.WriteString(st.Action.String())
	if st.Percent > 0 {
		fmt.Fprintf(&b, " %d%%", st.Percent)
	}
	if st.Otherwise != ActionNone {
		fmt.Fprintf(&b, ", otherwise %s", st.Otherwise)
	}
	return b.String()
}
