package policy_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"authgate/policy"
	"authgate/rewrite"
)

// fuzzOptions never touch the process environment or the file system: a
// .pem path reads a fixed EC key, anything else does not exist.
func fuzzOptions(tb testing.TB) policy.Options {
	pemKey, err := os.ReadFile("testdata/bad/ec256.pem")
	if err != nil {
		tb.Fatal(err)
	}
	return policy.Options{
		LookupEnv: env(map[string]string{"UPSTREAM_URL": testUpstream, "SUPABASE_JWT_SECRET": testSecret, "EMPTY": ""}),
		ReadFile: func(name string) ([]byte, error) {
			if strings.HasSuffix(name, ".pem") {
				return pemKey, nil
			}
			return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
		},
	}
}

// FuzzParse feeds arbitrary bytes to the config loader: it must never
// panic, must fail only with a *policy.Error whose every problem names the
// file and says something, and what it accepts must be usable.
func FuzzParse(f *testing.F) {
	// The example config, whole.
	if data, err := os.ReadFile(exampleFile); err == nil {
		f.Add(data)
	}
	// Every invalid config of TestLoadBadConfigs.
	bad, _ := filepath.Glob("testdata/bad/*.yaml")
	for _, file := range bad {
		if data, err := os.ReadFile(file); err == nil {
			f.Add(data)
		}
	}
	// Empty and near-empty documents.
	f.Add([]byte(""))
	f.Add([]byte("---\n"))
	f.Add([]byte("~"))
	f.Add([]byte("[]"))
	// The smallest valid config, and one with every stage feature.
	f.Add([]byte("upstream: {url: http://x}\n"))
	f.Add([]byte("upstream: {url: \"${UPSTREAM_URL}\"}\nmint: {hs256_secret: \"${SUPABASE_JWT_SECRET}\"}\nroutes:\n  - name: r\n    match: {prefix: /}\n    policy:\n      uuid:\n        - {until: 2025-01-01, action: rewrite}\n        - {until: \"2026-01-01T00:00:00Z\", action: reject, percent: 50, otherwise: rewrite}\n        - {action: reject, dry_run: true, otherwise: pass}\n"))
	// Environment expansion corner cases.
	f.Add([]byte("upstream: {url: \"${UPSTREAM_URL\"}\nlisten: \":${PORT:-${X}}\"\nhealth_path: \"/$${a}${EMPTY:-b}${}\"\n"))
	// Anchors, aliases and merge keys.
	f.Add([]byte("upstream: &u {url: http://x}\nroutes:\n  - &r {name: a, match: {path: /a}}\n  - *r\nmint: {hs256_secret: x, claims: {a: &c [1, 2], b: *c, <<: *u}}\n"))
	// A private key file and its kid.
	f.Add([]byte("upstream: {url: http://x}\nmint: {private_key_file: k.pem, kid: k1}\n"))
	// Wrong kinds everywhere.
	f.Add([]byte("upstream: [x]\nroutes: {a: b}\nverify: 3\nlog: [1]\nrate_limit: {burst: [1]}\n"))
	// Non-scalar keys and odd tags.
	f.Add([]byte("? [a]\n: b\nupstream: !!binary aGVsbG8=\n"))

	opt := fuzzOptions(f)
	now := date("2026-06-01T00:00:00Z")
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 64<<10 {
			return // config files are small; keep the fuzzer fast
		}
		s, err := policy.Parse("fuzz.yaml", data, opt)
		if err != nil {
			if s != nil {
				t.Errorf("got a snapshot and an error")
			}
			var perr *policy.Error
			if !errors.As(err, &perr) {
				t.Fatalf("got %T %v, want *policy.Error", err, err)
			}
			if len(perr.Problems) == 0 {
				t.Fatalf("got an Error with no problems")
			}
			for i, p := range perr.Problems {
				if p.File != "fuzz.yaml" {
					t.Errorf("problem %d %q: File %q, want fuzz.yaml", i, p, p.File)
				}
				if p.Msg == "" {
					t.Errorf("problem %d %q: empty Msg", i, p)
				}
				if p.Line < 0 {
					t.Errorf("problem %d %q: negative line", i, p)
				}
				if i > 0 && p.Line < perr.Problems[i-1].Line {
					t.Errorf("problem %d at line %d after line %d: want line order", i, p.Line, perr.Problems[i-1].Line)
				}
			}
			return
		}
		if s == nil {
			t.Fatal("got neither a snapshot nor an error")
		}
		// What loads must be usable: described, and decided on.
		if _, err := json.Marshal(s.Description(now)); err != nil {
			t.Errorf("Description: %v", err)
		}
		s.NextBoundary(now)
		for _, rt := range s.Routes {
			if rt.Path == "" || !strings.HasPrefix(rt.Path, "/") {
				t.Errorf("route %q loaded with path %q", rt.Name, rt.Path)
				continue
			}
			for _, tok := range []string{"", legacyUser, "garbage"} {
				target := rt.Path
				if tok != "" {
					target += "?token=" + tok
				}
				r, err := http.NewRequest(http.MethodGet, "http://h"+target, nil)
				if err != nil {
					continue // a path that is no valid request URI
				}
				r.Header.Set("Authorization", "Bearer "+tok)
				ws := rt.WebSocket == nil || *rt.WebSocket
				d := s.Decide(bg, r, ws, now)
				checkDecision(t, s, d)
			}
		}
	})
}

// checkDecision holds for every decision of a loaded config.
func checkDecision(t *testing.T, s *policy.Snapshot, d policy.Decision) {
	t.Helper()
	switch d.Action {
	case policy.ActionPass:
	case policy.ActionRewrite:
		if d.Class != rewrite.ClassUUID || s.Minter == nil {
			t.Errorf("rewrite of class %v with minter %v: want only uuid, only with a mint key", d.Class, s.Minter != nil)
		}
	case policy.ActionReject:
		if d.Rejection.Status == 0 || d.Rejection.CloseCode == 0 || d.Rejection.Message == "" {
			t.Errorf("reject without a rejection: %+v", d.Rejection)
		}
	default:
		t.Errorf("got action %v, want pass, rewrite or reject", d.Action)
	}
}

// stageActions are the words FuzzStages picks from; the last two are not
// actions.
var stageActions = []string{"pass", "rewrite", "reject", "allow", ""}

// FuzzStages builds a three-stage uuid schedule from fuzzed dates,
// percent, actions and flags, checks that it loads exactly when the rules
// of SPEC "Actions and stages" say it should, and that Evaluate at a
// fuzzed instant applies the right stage and one of its actions.
func FuzzStages(f *testing.F) {
	const day = int64(24 * time.Hour)
	// Arguments: until0, until1 (ns after 1900-01-01, folded into 200
	// years), dateOnly, percent, the three actions and otherwise (indexes
	// into stageActions), flags (bit 0 percent on stage 1, bit 1 otherwise
	// on stage 1, bit 2 dry_run on stage 1, bit 3 dry_run on stage 2,
	// bit 4 otherwise on stage 2), now (ns after 1900), user.
	//
	// The example's schedule: rewrite, reject 25% otherwise rewrite, dry
	// run of reject otherwise rewrite; now inside stage 1.
	f.Add(int64(46000*day), int64(46031*day), true, 25, uint8(1), uint8(2), uint8(2), uint8(1), uint8(0b11011), int64(46010*day), legacyUser)
	// now exactly at the first until: stage 1 applies.
	f.Add(int64(46000*day), int64(46031*day), true, 50, uint8(1), uint8(2), uint8(2), uint8(1), uint8(0b11011), int64(46000*day), legacyUser)
	// Untils equal after date-only truncation: invalid.
	f.Add(int64(46000*day+3600e9), int64(46000*day+7200e9), true, 50, uint8(0), uint8(2), uint8(2), uint8(0), uint8(0b00011), int64(0), "u")
	// Untils in the wrong order: invalid.
	f.Add(int64(46031*day), int64(46000*day), false, 10, uint8(0), uint8(2), uint8(2), uint8(0), uint8(0), int64(0), "u")
	// percent out of range, otherwise without percent, dry_run without
	// otherwise: invalid.
	f.Add(int64(1*day), int64(2*day), false, 0, uint8(0), uint8(2), uint8(2), uint8(0), uint8(0b00011), int64(0), "u")
	f.Add(int64(1*day), int64(2*day), false, 101, uint8(0), uint8(2), uint8(2), uint8(0), uint8(0b00011), int64(0), "u")
	f.Add(int64(1*day), int64(2*day), false, 50, uint8(0), uint8(2), uint8(2), uint8(0), uint8(0b00010), int64(0), "u")
	f.Add(int64(1*day), int64(2*day), false, 50, uint8(0), uint8(2), uint8(2), uint8(0), uint8(0b01000), int64(0), "u")
	// An unknown action and a missing one.
	f.Add(int64(1*day), int64(2*day), false, 50, uint8(3), uint8(4), uint8(2), uint8(0), uint8(0), int64(0), "u")
	// Sub-second untils and now 1ns before the second one.
	f.Add(int64(1*day+1), int64(1*day+2), false, 100, uint8(0), uint8(2), uint8(1), uint8(2), uint8(0b10111), int64(1*day+1), "")

	const span = int64(200 * 365 * 24 * time.Hour)
	epoch := time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ns int64) time.Time {
		ns %= span
		if ns < 0 {
			ns += span
		}
		return epoch.Add(time.Duration(ns))
	}
	opt := fuzzOptions(f)
	f.Fuzz(func(t *testing.T, u0, u1 int64, dateOnly bool, percent int, a0, a1, a2, other, flags uint8, nowNs int64, user string) {
		act := func(i uint8) string { return stageActions[int(i)%len(stageActions)] }
		t0, t1, now := at(u0), at(u1), at(nowNs)
		format := func(tm time.Time) string {
			if dateOnly {
				return tm.Format(time.DateOnly)
			}
			return tm.Format(time.RFC3339Nano)
		}
		var st1, st2 []string
		st1 = append(st1, "until: "+format(t1), "action: "+act(a1))
		if flags&1 != 0 {
			st1 = append(st1, fmt.Sprintf("percent: %d", percent))
		}
		if flags&2 != 0 {
			st1 = append(st1, "otherwise: "+act(other))
		}
		if flags&4 != 0 {
			st1 = append(st1, "dry_run: true")
		}
		st2 = append(st2, "action: "+act(a2))
		if flags&8 != 0 {
			st2 = append(st2, "dry_run: true")
		}
		if flags&16 != 0 {
			st2 = append(st2, "otherwise: "+act(other))
		}
		text := fmt.Sprintf(`upstream: {url: http://x}
mint: {hs256_secret: %s}
routes:
  - name: r
    match: {path: /r}
    policy:
      uuid:
        - {until: %s, action: %s}
        - {%s}
        - {%s}
`, testSecret, format(t0), act(a0), strings.Join(st1, ", "), strings.Join(st2, ", "))

		// The rules, independently of the loader.
		parsed := func(tm time.Time) time.Time {
			if dateOnly {
				return time.Date(tm.Year(), tm.Month(), tm.Day(), 0, 0, 0, 0, time.UTC)
			}
			return tm
		}
		p0, p1 := parsed(t0), parsed(t1)
		okAction := func(i uint8) bool { return int(i)%len(stageActions) < 3 }
		valid := okAction(a0) && okAction(a1) && okAction(a2) && p1.After(p0)
		// "otherwise:" with no value is YAML null: the key is as good as
		// absent. "action:" with no value is a stage without an action.
		written := act(other) != ""
		hasPct, hasOther1, dry1 := flags&1 != 0, flags&2 != 0 && written, flags&4 != 0
		dry2, hasOther2 := flags&8 != 0, flags&16 != 0 && written
		if hasPct && (percent < 1 || percent > 100) {
			valid = false
		}
		if (hasPct || dry1) != hasOther1 || dry2 != hasOther2 {
			valid = false
		}
		if (hasOther1 || hasOther2) && !okAction(other) {
			valid = false
		}

		s, err := policy.Parse("stages.yaml", []byte(text), opt)
		if err != nil {
			var perr *policy.Error
			if !errors.As(err, &perr) {
				t.Fatalf("got %T, want *policy.Error", err)
			}
			if valid {
				t.Fatalf("a valid schedule was refused:\n%s\n%v", text, err)
			}
			return
		}
		if !valid {
			t.Fatalf("an invalid schedule loaded:\n%s", text)
		}
		rt := s.Routes[0]
		rule := rt.Rules[rewrite.ClassUUID]
		wantIdx := 2
		switch {
		case now.Before(p0):
			wantIdx = 0
		case now.Before(p1):
			wantIdx = 1
		}
		idx, st := rule.At(now)
		if idx != wantIdx {
			t.Fatalf("At(%v): got stage %d, want %d (untils %v, %v)", now, idx, wantIdx, p0, p1)
		}
		d := rt.Evaluate(rewrite.Result{Class: rewrite.ClassUUID, Subject: user, Reason: "legacy uuid"}, "", now)
		if d.Stage != idx {
			t.Errorf("Evaluate: got stage %d, want %d", d.Stage, idx)
		}
		if d.Action != st.Action && d.Action != st.Otherwise || d.Action == policy.ActionNone {
			t.Errorf("Evaluate: got action %v, want %v or %v", d.Action, st.Action, st.Otherwise)
		}
		switch {
		case st.Percent > 0 && !rt.InRollout(user, st.Percent):
			if d.Action != st.Otherwise || d.Would != policy.ActionNone {
				t.Errorf("out of the share: got %v would %v, want %v", d.Action, d.Would, st.Otherwise)
			}
		case st.DryRun:
			if d.Action != st.Otherwise || d.Would != st.Action {
				t.Errorf("dry run: got %v would %v, want %v would %v", d.Action, d.Would, st.Otherwise, st.Action)
			}
		default:
			if d.Action != st.Action || d.Would != policy.ActionNone {
				t.Errorf("got %v would %v, want %v", d.Action, d.Would, st.Action)
			}
		}
		if (d.Action == policy.ActionReject) != (d.Rejection != policy.Rejection{}) {
			t.Errorf("action %v with rejection %+v", d.Action, d.Rejection)
		}
		if rewrite.IsUUID(user) {
			r := httptest.NewRequest(http.MethodGet, "/r?token="+user, nil)
			if got := s.Decide(bg, r, false, now); got.Action != d.Action && strings.ToLower(user) == user {
				t.Errorf("Decide: got %v, want %v as Evaluate", got.Action, d.Action)
			}
		}
		if next := s.NextBoundary(now); !next.IsZero() && !next.After(now) {
			t.Errorf("NextBoundary(%v) = %v, want after now or zero", now, next)
		}
	})
}
