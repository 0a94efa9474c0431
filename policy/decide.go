package policy

import (
	"context"
	"net/http"
	"strings"
	"time"

	"authgate/rewrite"
)

// Decision is what authgate does with one request, and why. It is a plain
// value: the proxy acts on it and logs it, tests assert on it.
type Decision struct {
	// Route is nil when no route matched; Action is then Snapshot.Unmatched.
	Route *Route
	// Source is where the token was found (Kind SourceNone if missing).
	Source   rewrite.Source
	Class    rewrite.Class
	Verified bool
	// User is the lower-case UUID or the JWT's sub ("" when unknown).
	User string
	// Expiry is the client JWT's exp, for close_on_expiry.
	Expiry time.Time
	// Action is what happens: pass, rewrite or reject.
	Action Action
	// Would is the action a dry-run stage logged but did not take.
	Would Action
	// Stage is the index of the stage in force (0 for a single action).
	Stage int
	// Rejection holds the close code, HTTP status and message when
	// Action is ActionReject.
	Rejection Rejection
	// Reason is a short fixed text: why the token is of its class, or why
	// the route refused it ("origin not allowed").
	Reason string

	token rewrite.Token
}

// Token returns the credential the decision was made on. It is a secret:
// never log it.
func (d *Decision) Token() rewrite.Token { return d.token }

// Facts returns the classification the decision was made on, so that an
// open connection can be decided again later (revocation) without the
// request.
func (d *Decision) Facts() rewrite.Result {
	return rewrite.Result{Class: d.Class, Verified: d.Verified, Subject: d.User, Expiry: d.Expiry, Reason: d.classReason()}
}

func (d *Decision) classReason() string {
	if d.Reason == reasonOrigin {
		return "legacy uuid"
	}
	return d.Reason
}

const (
	reasonOrigin    = "origin not allowed"
	reasonAmbiguous = "conflicting token values"
	reasonNoRoute   = "no route"
)

// WithKeySet returns a copy of s whose verifier resolves asymmetric keys
// with ks (the JWKS client the proxy runs).
func (s *Snapshot) WithKeySet(ks rewrite.KeySet) *Snapshot {
	return s.WithVerifier(s.Verifier.WithKeySet(ks))
}

// WithVerifier returns a copy of s that classifies tokens with v.
func (s *Snapshot) WithVerifier(v *rewrite.Verifier) *Snapshot {
	c := *s
	c.Verifier = v
	return &c
}

// Decide matches r to a route, extracts and classifies its token, and
// applies the route's policy as of now. ctx bounds JWKS lookups.
func (s *Snapshot) Decide(ctx context.Context, r *http.Request, websocket bool, now time.Time) Decision {
	rt := s.Match(r.URL.Path, websocket)
	if rt == nil {
		d := Decision{Action: s.Unmatched, Reason: reasonNoRoute}
		if s.Unmatched == ActionReject {
			d.Rejection = Rejection{CloseCode: 4004, Status: http.StatusNotFound, Message: "not found"}
		}
		return d
	}
	tok := rewrite.Extract(r, rt.Sources)
	var res rewrite.Result
	if tok.Ambiguous {
		res = rewrite.Result{Class: rewrite.ClassMalformed, Reason: reasonAmbiguous}
	} else {
		res = s.Verifier.Classify(ctx, tok.Value, now)
	}
	var origin string
	if vals := r.Header["Origin"]; len(vals) > 0 {
		origin = vals[0]
	}
	d := rt.Evaluate(res, origin, now)
	d.token = tok
	d.Source = tok.Source
	return d
}

// Evaluate applies the route's policy to a classified token as of now.
// origin is the request's Origin header ("" if none).
func (rt *Route) Evaluate(res rewrite.Result, origin string, now time.Time) Decision {
	d := Decision{
		Route: rt, Class: res.Class, Verified: res.Verified, User: res.Subject,
		Expiry: res.Expiry, Reason: res.Reason,
	}
	idx, st := rt.Rules[res.Class].At(now)
	d.Stage = idx // the stage in force, also when the origin rule overrides it
	if res.Class == rewrite.ClassUUID && rt.Origins != nil && !rt.originAllowed(origin) {
		d.Action, d.Reason = ActionReject, reasonOrigin
		d.Rejection = rt.Codes[rewrite.ClassUUID]
		return d
	}
	act := st.Action
	if st.Percent > 0 && rt.hash.bucket(res.Subject) >= st.Percent {
		act = st.Otherwise
	} else if st.DryRun {
		d.Would, act = act, st.Otherwise
	}
	d.Action = act
	if act == ActionReject {
		d.Rejection = rt.Codes[res.Class]
	}
	return d
}

// InRollout reports whether user falls inside a percent share on this
// route: bucket(user) < percent.
func (rt *Route) InRollout(user string, percent int) bool {
	return rt.hash.bucket(user) < percent
}

func (rt *Route) originAllowed(origin string) bool {
	if origin == "" {
		return false
	}
	if rt.Origins[origin] {
		return true
	}
	return rt.Origins[strings.ToLower(strings.TrimSuffix(origin, "/"))]
}
