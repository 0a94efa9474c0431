package report

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"authgate/event"
)

// TestZerologRoundTrip writes auth events the way the proxy does — zerolog
// with the field names of package event — and reads them back.
func TestZerologRoundTrip(t *testing.T) {
	saved := zerolog.TimeFieldFormat
	zerolog.TimeFieldFormat = time.RFC3339Nano
	t.Cleanup(func() { zerolog.TimeFieldFormat = saved })

	type req struct {
		at                             time.Time
		class, action, would, user, ua string
		origin, route, reason          string
		closeCode                      int
	}
	day := time.Date(2025, 8, 10, 0, 0, 0, 0, time.UTC)
	// zerolog escapes control characters as \u00XX and replaces invalid
	// UTF-8 with U+FFFD; quotes and backslashes are backslash-escaped.
	nastyUA := "app/1.0 \"quoted\" back\\slash tab\t nl\n ctl\x01 é 😀 bad\xff"
	reqs := []req{
		{at: day.Add(1 * time.Hour), class: event.ClassUUID, action: event.ActionRewrite, user: "u1", ua: nastyUA,
			origin: "https://app.example.com", route: "pam-ws", reason: "legacy uuid rewritten"},
		{at: day.Add(2*time.Hour + 123456789), class: event.ClassUUID, action: event.ActionRewrite, would: event.ActionReject,
			user: "u1", ua: nastyUA, route: "pam-ws", reason: "dry run"},
		{at: day.Add(3 * time.Hour), class: event.ClassUUID, action: event.ActionReject, user: "u2", ua: "curl/8.5.0",
			route: "api", reason: "legacy authentication no longer accepted", closeCode: 4003},
		{at: day.Add(4 * time.Hour), class: event.ClassJWT, action: event.ActionPass, user: "u3", ua: "Mozilla/5.0",
			route: "pam-ws", reason: "verified"},
		{at: day.Add(5 * time.Hour), class: event.ClassMissing, action: event.ActionReject, route: "pam-ws",
			reason: "authentication required", closeCode: 4001},
	}
	var buf bytes.Buffer
	logger := zerolog.New(&buf)
	for _, r := range reqs {
		e := logger.Warn()
		if r.class == event.ClassJWT {
			e = logger.Info()
		}
		e = e.Str(event.FieldEvent, event.Auth).
			Str(event.FieldRoute, r.route).
			Str(event.FieldTransport, event.TransportWebSocket).
			Str(event.FieldClass, r.class).
			Str(event.FieldAction, r.action).
			Int(event.FieldStage, 0).
			Str(event.FieldReason, r.reason).
			Bool(event.FieldVerified, false).
			Str(event.FieldUserAgent, r.ua).
			Str(event.FieldPath, "/api/v1/pam/ws")
		if r.would != "" {
			e = e.Str(event.FieldWould, r.would)
		}
		if r.user != "" {
			e = e.Str(event.FieldUser, r.user)
		}
		if r.origin != "" {
			e = e.Str(event.FieldOrigin, r.origin)
		}
		if r.closeCode != 0 {
			e = e.Int(event.FieldCloseCode, r.closeCode)
		}
		e.Time(zerolog.TimestampFieldName, r.at).Msg("auth decision")
	}
	logger.Info().Str(event.FieldEvent, event.WSClose).Str(event.FieldUser, "u3").Int(event.FieldCloseCode, 1000).
		Time(zerolog.TimestampFieldName, day.Add(6*time.Hour)).Msg("websocket closed")

	a := NewAggregator(Query{To: day.Add(24 * time.Hour), QuietFor: 24 * time.Hour})
	if err := a.ReadFrom("zerolog", &buf); err != nil {
		t.Fatal(err)
	}
	r := a.Report()

	if r.Lines.Read != 6 || r.Lines.Events != 5 || r.Lines.SkippedBy.OtherEvent != 1 {
		t.Errorf("lines: got %+v, want 6 read, 5 events, 1 other event", r.Lines)
	}
	if r.Legacy.Requests != 3 || r.Legacy.Users != 2 || r.Legacy.Rejected != 1 {
		t.Errorf("legacy: got %d requests, %d users, %d rejected; want 3, 2, 1", r.Legacy.Requests, r.Legacy.Users, r.Legacy.Rejected)
	}
	if r.Would.Requests != 1 || r.Would.ByAction[event.ActionReject] != 1 || r.Would.LegacyUsers != 1 {
		t.Errorf("would: got %+v, want 1 request, reject 1, 1 legacy user", r.Would)
	}
	if r.Rejections.ByReason["legacy authentication no longer accepted"] != 1 || r.Rejections.ByClass[event.ClassMissing] != 1 {
		t.Errorf("rejections: got %+v", r.Rejections)
	}
	if r.Verdict.Status != StatusNotSafe {
		t.Errorf("verdict: got %q, want %q", r.Verdict.Status, StatusNotSafe)
	}
	var u1 *User
	for i := range r.Users {
		if r.Users[i].User == "u1" {
			u1 = &r.Users[i]
		}
	}
	if u1 == nil {
		t.Fatalf("users: got %+v, want u1 among them", r.Users)
	}
	// What zerolog wrote, decoded by encoding/json, is the reference.
	wantUA := func() string {
		var line bytes.Buffer
		l := zerolog.New(&line)
		l.Log().Str(event.FieldUserAgent, nastyUA).Send()
		var m map[string]string
		if err := json.Unmarshal(line.Bytes(), &m); err != nil {
			t.Fatal(err)
		}
		return m[event.FieldUserAgent]
	}()
	if len(u1.UserAgents) != 1 || u1.UserAgents[0] != wantUA {
		t.Errorf("u1 user agents: got %q, want [%q]", u1.UserAgents, wantUA)
	}
	if got, want := u1.LastSeen, day.Add(2*time.Hour+123456789); !got.Equal(want) {
		t.Errorf("u1 last seen: got %v, want %v (nanoseconds kept)", got, want)
	}
	if len(u1.Origins) != 2 || u1.Origins[0] != "" || u1.Origins[1] != "https://app.example.com" {
		t.Errorf("u1 origins: got %q, want [\"\" \"https://app.example.com\"]", u1.Origins)
	}
}
