package proxy

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"authgate/event"
	"authgate/policy"
	"authgate/rewrite"
)

var zerologOnce sync.Once

// NewLogger returns the zerolog logger for the given format ("json" or
// "console") and level, writing UTC RFC 3339 times as the log contract
// (README "Log schema") requires.
func NewLogger(w io.Writer, format, level string) zerolog.Logger {
	// zerolog keeps these in package variables; set them once, before any
	// logger of ours writes.
	zerologOnce.Do(func() {
		zerolog.TimeFieldFormat = time.RFC3339Nano
		zerolog.TimestampFunc = func() time.Time { return time.Now().UTC() }
	})
	if format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339, NoColor: true}
	}
	lvl, err := zerolog.ParseLevel(level)
	if err != nil {
		lvl = zerolog.InfoLevel
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Str(event.FieldInstance, Instance()).Logger()
}

// Instance names this process in its log lines, so the merged logs of
// several instances stay apart (Render's log view merges them):
// RENDER_INSTANCE_ID when set, else the host name.
func Instance() string {
	if id := os.Getenv("RENDER_INSTANCE_ID"); id != "" {
		return id
	}
	h, _ := os.Hostname()
	return h
}

// userField renders a user id per log.user_ids: plain, an HMAC-SHA256
// prefix (stable, so the report still counts distinct users), or nothing.
func userField(cfg policy.Log, user string) (string, bool) {
	if user == "" {
		return "", false
	}
	switch cfg.UserIDs {
	case policy.UserIDsOmit:
		return "", false
	case policy.UserIDsHash:
		m := hmac.New(sha256.New, cfg.HashKey)
		m.Write([]byte(user))
		var sum [sha256.Size]byte
		return hex.EncodeToString(m.Sum(sum[:0])[:8]), true
	}
	return user, true
}

// authEvent is everything one `auth` log line says. No field may hold a
// token: tokens live only in policy.Decision, which is not logged whole.
type authEvent struct {
	d         *policy.Decision
	transport string
	// closeFrame: a rejection is answered with a close frame (a valid
	// WebSocket handshake on a reject_with: close route), not a status.
	closeFrame bool
	clientIP   string
	origin     string
	userAgent  string
	path       string // without query string
	requestID  string
}

// authLine is an auth line's fields, flat: what the log budget keeps of a
// held line (no token, no Decision) and what writeAuth writes.
type authLine struct {
	level                                    zerolog.Level
	route, transport, class, action, would   string
	reason, user, source                     string
	clientIP, origin, userAgent, path, reqID string
	message                                  string
	stage, closeCode, status                 int
	hasUser, verified                        bool
}

func newAuthLine(cfg policy.Log, e *authEvent) authLine {
	d := e.d
	l := authLine{
		level: zerolog.InfoLevel, route: d.Route.Name, transport: e.transport,
		class: d.Class.String(), action: d.Action.String(), stage: d.Stage, reason: d.Reason,
		verified: d.Verified, clientIP: e.clientIP, origin: e.origin, userAgent: e.userAgent,
		path: e.path, reqID: e.requestID, message: authMessage(d),
	}
	if d.Class == rewrite.ClassUUID || d.Action == policy.ActionReject {
		l.level = zerolog.WarnLevel
	}
	if d.Would != policy.ActionNone {
		l.would = d.Would.String()
	}
	l.user, l.hasUser = userField(cfg, d.User)
	if d.Source.Kind != rewrite.SourceNone {
		l.source = d.Source.String()
	}
	if d.Action == policy.ActionReject {
		if e.closeFrame && d.Rejection.CloseCode != 0 {
			l.closeCode = d.Rejection.CloseCode
		} else {
			l.status = d.Rejection.Status
		}
	}
	return l
}

// clone copies the strings that may alias a request (kept past it).
func (l authLine) clone() authLine {
	for _, p := range []*string{&l.reason, &l.user, &l.clientIP, &l.origin, &l.userAgent, &l.path, &l.reqID, &l.route} {
		*p = strings.Clone(*p)
	}
	return l
}

// writeAuth writes an auth line; repeat > 0 makes it the log budget's
// summary of that many held lines.
func writeAuth(l *zerolog.Logger, a *authLine, repeat int64) {
	ev := l.WithLevel(a.level)
	if ev == nil {
		return
	}
	ev.Str(event.FieldEvent, event.Auth).
		Str(event.FieldRoute, a.route).
		Str(event.FieldTransport, a.transport).
		Str(event.FieldClass, a.class).
		Str(event.FieldAction, a.action)
	if a.would != "" {
		ev.Str(event.FieldWould, a.would)
	}
	ev.Int(event.FieldStage, a.stage).Str(event.FieldReason, a.reason)
	if a.hasUser {
		ev.Str(event.FieldUser, a.user)
	}
	if a.source != "" {
		ev.Str(event.FieldSource, a.source)
	}
	ev.Bool(event.FieldVerified, a.verified).
		Str(event.FieldClientIP, a.clientIP)
	if a.origin != "" {
		ev.Str(event.FieldOrigin, a.origin)
	}
	if a.userAgent != "" {
		ev.Str(event.FieldUserAgent, a.userAgent)
	}
	ev.Str(event.FieldPath, a.path).Str(event.FieldRequestID, a.reqID)
	switch {
	case a.closeCode != 0:
		ev.Int(event.FieldCloseCode, a.closeCode)
	case a.status != 0:
		ev.Int(event.FieldStatus, a.status)
	}
	if repeat > 0 {
		ev.Int64(event.FieldRepeat, repeat)
	}
	ev.Msg(a.message)
}

func authMessage(d *policy.Decision) string {
	switch {
	case d.Action == policy.ActionReject:
		return "rejected"
	case d.Action == policy.ActionRewrite:
		return "legacy token rewritten"
	case d.Would != policy.ActionNone:
		return "dry run"
	}
	return "passed"
}
