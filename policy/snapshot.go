package policy

import (
	"crypto/sha256"
	"crypto/x509"
	"hash/fnv"
	"net/netip"
	"net/url"
	"time"

	"authgate/rewrite"
)

// Snapshot is a loaded, validated and compiled configuration. It is
// immutable: readers share it freely, and a reload builds a new one.
type Snapshot struct {
	File string
	// Hash is the SHA-256 of the file's bytes and of the files it names
	// (Files); a file-watch reload with the same hash is skipped.
	Hash [sha256.Size]byte
	// Files are the files the config names (the mint key, the upstream
	// CA), resolved against the config's directory. A reloader watches
	// them as it watches the config.
	Files []string
	// Warnings are problems that do not make the config invalid.
	Warnings []Problem

	Listen          string
	AdminListen     string // "" means no admin listener
	HealthPath      string
	ShutdownTimeout time.Duration
	// TrustedProxies are the CIDRs of trusted_proxies, named sets
	// expanded; TrustedNames the entries as written (sets by name).
	TrustedProxies []netip.Prefix
	TrustedNames   []string

	Upstream Upstream
	Verifier *rewrite.Verifier
	JWKSURL  string          // "" when not configured
	Minter   *rewrite.Minter // nil when no mint key is configured
	Log      Log
	Routes   []*Route
	// Unmatched is ActionPass or ActionReject (404) for requests no route
	// matches.
	Unmatched Action
	RateLimit RateLimit

	describe Description // the /policy view, secrets redacted
}

// Upstream is where requests go.
type Upstream struct {
	URL *url.URL
	// HostHeader is HostUpstream, HostClient, or a literal host.
	HostHeader  string
	DialTimeout time.Duration
	// UpgradeTimeout bounds the wait for the upstream's answer to a
	// WebSocket upgrade, ResponseTimeout the wait for an HTTP response
	// head (not the body: streams may run long). WriteTimeout bounds each
	// write of a relayed WebSocket to either peer.
	UpgradeTimeout  time.Duration
	ResponseTimeout time.Duration
	WriteTimeout    time.Duration
	// StopTimeout is same-service mode's wait between SIGTERM and SIGKILL
	// to the child's process group (unused otherwise).
	StopTimeout time.Duration
	// CAFile is upstream.ca_file ("" when not set); RootCAs the system
	// roots plus its certificates, or nil for the system roots alone.
	CAFile  string
	RootCAs *x509.CertPool
}

// Host header modes.
const (
	HostUpstream = "upstream"
	HostClient   = "client"
)

// Log is how decisions are logged.
type Log struct {
	Level   string // zerolog level name
	Format  string // json | console
	UserIDs string // plain | hash | omit
	HashKey []byte
	// Heartbeat is log.heartbeat: how often a heartbeat event is written;
	// 0 writes none. At least a second when set.
	Heartbeat time.Duration
	// MaxLinesPerMinute is log.max_lines_per_minute, the log budget: past
	// it repeats of one decision in the minute are held back and written
	// once as a summary (repeat: N). 0 means no budget.
	MaxLinesPerMinute int
}

// User ID modes.
const (
	UserIDsPlain = "plain"
	UserIDsHash  = "hash"
	UserIDsOmit  = "omit"
)

// RateLimit bounds rejected authentications per client IP. PerMinute 0
// turns it off.
type RateLimit struct {
	PerMinute int
	Burst     int
}

// Route is one compiled entry of routes:.
type Route struct {
	Name  string
	Index int
	// Path is matched exactly, or as a prefix when Prefix is set.
	Path   string
	Prefix bool
	// WebSocket: nil matches both, else only upgrades (true) or only
	// plain requests (false).
	WebSocket *bool

	Sources    []rewrite.Source
	Forward    rewrite.Forward
	RejectHTTP bool // reject_with: http (WebSocket routes answer with a status)

	// Origins, when non-empty, is the only set of Origin values a legacy
	// UUID is accepted from.
	Origins map[string]bool

	Rules [rewrite.NumClasses]Rule
	// Codes are the close code and HTTP status per class when rejected.
	Codes [rewrite.NumClasses]Rejection

	CloseOnExpiry bool
	RevokeOpen    bool

	hash fnvState // route name, pre-hashed for percent buckets
}

// Rule is the compiled policy of one class: one or more stages, the last
// one open-ended.
type Rule struct {
	Single bool // written as a single action, not a stage list
	Stages []Stage
}

// Stage applies until Until (exclusive); the last stage has a zero Until.
type Stage struct {
	Until     time.Time
	Action    Action
	Percent   int // 1..100; 0 means all users (no split)
	Otherwise Action
	DryRun    bool
}

// Rejection is how a rejected class is answered.
type Rejection struct {
	CloseCode int
	Status    int
	Message   string
}

type fnvState uint64

func newFNV(name string) fnvState {
	h := fnv.New64a()
	h.Write([]byte(name))
	h.Write([]byte{0})
	return fnvState(h.Sum64())
}

// bucket returns a stable 0..99 for user on this route: the same user
// always lands in the same bucket, across reconnects and restarts.
func (s fnvState) bucket(user string) int {
	const prime = 1099511628211
	h := uint64(s)
	for i := 0; i < len(user); i++ {
		h ^= uint64(user[i])
		h *= prime
	}
	// fnv's low bits mix poorly for short inputs; fold the high bits in.
	h ^= h >> 29
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 32
	return int(h % 100)
}

// Match returns the first route that matches path and transport, or nil.
func (s *Snapshot) Match(path string, websocket bool) *Route {
	for _, rt := range s.Routes {
		if rt.WebSocket != nil && *rt.WebSocket != websocket {
			continue
		}
		if rt.Prefix {
			if len(path) >= len(rt.Path) && path[:len(rt.Path)] == rt.Path {
				return rt
			}
		} else if path == rt.Path {
			return rt
		}
	}
	return nil
}

// Description returns the effective policy with secrets redacted, as
// served on /policy and printed by check.
func (s *Snapshot) Description(now time.Time) Description {
	d := s.describe
	d.Now = now.UTC()
	d.Routes = make([]RouteDescription, len(s.describe.Routes))
	copy(d.Routes, s.describe.Routes)
	for i := range d.Routes {
		rt := s.Routes[i]
		d.Routes[i].Current = map[string]string{}
		for c := range rewrite.NumClasses {
			idx, st := rt.Rules[c].At(now)
			d.Routes[i].Current[rewrite.Class(c).String()] = st.describe(idx, rt.Rules[c].Single)
		}
	}
	return d
}

// At returns the stage in force at now and its index.
func (r Rule) At(now time.Time) (int, Stage) {
	for i, st := range r.Stages {
		if st.Until.IsZero() || now.Before(st.Until) {
			return i, st
		}
	}
	// Unreachable for a validated rule: the last stage is open-ended.
	return len(r.Stages) - 1, r.Stages[len(r.Stages)-1]
}

// NextBoundary returns the earliest stage end after now on any route, or
// the zero time when no stage ends in the future. The proxy re-decides
// open WebSockets then.
func (s *Snapshot) NextBoundary(now time.Time) time.Time {
	var next time.Time
	for _, rt := range s.Routes {
		for _, r := range rt.Rules {
			for _, st := range r.Stages {
				if !st.Until.IsZero() && st.Until.After(now) && (next.IsZero() || st.Until.Before(next)) {
					next = st.Until
				}
			}
		}
	}
	return next
}

// RouteByName returns the route called name, or nil.
func (s *Snapshot) RouteByName(name string) *Route {
	for _, rt := range s.Routes {
		if rt.Name == name {
			return rt
		}
	}
	return nil
}
