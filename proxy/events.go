package proxy

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
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

func logAuth(l *zerolog.Logger, cfg policy.Log, e *authEvent) {
	d := e.d
	lvl := zerolog.InfoLevel
	if d.Class == rewrite.ClassUUID || d.Action == policy.ActionReject {
		lvl = zerolog.WarnLevel
	}
	ev := l.WithLevel(lvl)
	if ev == nil {
		return
	}
	ev.Str(event.FieldEvent, event.Auth).
		Str(event.FieldRoute, d.Route.Name).
		Str(event.FieldTransport, e.transport).
		Str(event.FieldClass, d.Class.String()).
		Str(event.FieldAction, d.Action.String())
	if d.Would != policy.ActionNone {
		ev.Str(event.FieldWould, d.Would.String())
	}
	ev.Int(event.FieldStage, d.Stage).Str(event.FieldReason, d.Reason)
	if u, ok := userField(cfg, d.User); ok {
		ev.Str(event.FieldUser, u)
	}
	if d.Source.Kind != rewrite.SourceNone {
		ev.Str(event.FieldSource, d.Source.String())
	}
	ev.Bool(event.FieldVerified, d.Verified).
		Str(event.FieldClientIP, e.clientIP)
	if e.origin != "" {
		ev.Str(event.FieldOrigin, e.origin)
	}
	if e.userAgent != "" {
		ev.Str(event.FieldUserAgent, e.userAgent)
	}
	ev.Str(event.FieldPath, e.path).Str(event.FieldRequestID, e.requestID)
	if d.Action == policy.ActionReject {
		if e.closeFrame && d.Rejection.CloseCode != 0 {
			ev.Int(event.FieldCloseCode, d.Rejection.CloseCode)
		} else {
			ev.Int(event.FieldStatus, d.Rejection.Status)
		}
	}
	ev.Msg(authMessage(d))
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
