package renderapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestRateLimitWait(t *testing.T) {
	now := time.Date(2026, 10, 8, 5, 0, 0, 0, time.UTC)
	c := &Client{Now: func() time.Time { return now }, MaxWait: time.Minute}
	for _, tt := range []struct {
		header map[string]string
		want   time.Duration
	}{
		{map[string]string{"Ratelimit-Reset": "45"}, 45 * time.Second},                      // seconds, as the docs' example
		{map[string]string{"Ratelimit-Reset": "1"}, time.Second},                            // seconds
		{map[string]string{"Ratelimit-Reset": "0.2"}, time.Second},                          // at least 1s
		{map[string]string{"Ratelimit-Reset": "1791435617"}, 17 * time.Second},              // epoch seconds, as the docs' table says
		{map[string]string{"Ratelimit-Reset": "1791435500"}, time.Second},                   // an epoch already past
		{map[string]string{"Ratelimit-Reset": "3600"}, time.Minute},                         // capped at MaxWait
		{map[string]string{"Retry-After": "7"}, 7 * time.Second},                            // without Ratelimit-Reset
		{map[string]string{"Ratelimit-Reset": "soon", "Retry-After": "3"}, 3 * time.Second}, // unreadable: Retry-After
		{map[string]string{}, time.Second},                                                  // neither
	} {
		h := http.Header{}
		for k, v := range tt.header {
			h.Set(k, v)
		}
		if got := c.rateLimitWait(h); got != tt.want {
			t.Errorf("%v: wait %s, want %s", tt.header, got, tt.want)
		}
	}
	if now.Add(17*time.Second).Unix() != 1791435617 {
		t.Fatal("the epoch case's fixed clock is wrong")
	}
}

// A request that times out is tried again; a 4xx is not.
func TestRetries(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch calls.Add(1) {
		case 1:
			time.Sleep(300 * time.Millisecond) // past the client's timeout
		case 2:
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		if r.Header.Get("Authorization") != "Bearer k" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Write([]byte(`{"id":"srv-1","ownerId":"tea-1"}`))
	}))
	defer srv.Close()
	var waits []string
	c := &Client{BaseURL: srv.URL, Key: "k", Timeout: 100 * time.Millisecond, Backoff: time.Millisecond,
		OnWait: func(d time.Duration, why string) { waits = append(waits, why) }}
	owner, err := c.Owner(context.Background(), "srv-1")
	if err != nil || owner != "tea-1" || calls.Load() != 3 {
		t.Fatalf("owner %q, err %v after %d calls", owner, err, calls.Load())
	}
	if len(waits) != 2 || !strings.Contains(waits[0], "timed out") || !strings.Contains(waits[1], "500") {
		t.Errorf("waits %q", waits)
	}
	calls.Store(10)
	c.Key = "wrong"
	_, err = c.Owner(context.Background(), "srv-1")
	if !errors.Is(err, ErrKey) || calls.Load() != 11 || strings.Contains(err.Error(), "wrong") {
		t.Errorf("a 401: %v after %d calls", err, calls.Load()-10)
	}
}

func TestDecodePage(t *testing.T) {
	for _, tt := range []struct{ body, field string }{
		{`[]`, "(the page)"},
		{`{"hasMore": false}`, "logs"},
		{`{"logs": [], "hasMore": "no"}`, "hasMore"},
		{`{"logs": [{"id": "1", "message": 5, "timestamp": "2026-10-08T05:00:00Z"}], "hasMore": false}`, "logs.message"},
		{`{"logs": [{"id": "1", "message": "m"}], "hasMore": false}`, "logs[0].timestamp"},
		{`{"logs": [], "hasMore": true, "nextEndTime": "2026-10-08T05:00:00Z"}`, "nextStartTime"},
		{`{"logs": [], "hasMore": true, "nextStartTime": "2026-10-08T05:00:00Z"}`, "nextEndTime"},
	} {
		_, err := decodePage("https://api.example/v1/logs", []byte(tt.body))
		var se *ShapeError
		if !errors.As(err, &se) || se.Field != tt.field || !strings.Contains(err.Error(), "https://api.example/v1/logs") {
			t.Errorf("%s: %v, want a shape error on field %s", tt.body, err, tt.field)
		}
	}
	p, err := decodePage("u", []byte(`{"hasMore":false,"logs":[{"id":"a","labels":[{"name":"instance","value":"i"}],"message":"m","timestamp":"2026-10-08T05:00:00.5Z"}],"nextEndTime":"2026-10-08T06:00:00Z","nextStartTime":"2026-10-08T06:00:00Z"}`))
	if err != nil || len(p.Logs) != 1 || p.Logs[0].Labels[0].Value != "i" {
		t.Errorf("a page of the documented shape: %+v, %v", p, err)
	}
}

// FuzzDecodePage: any answer either is refused with a shape error naming
// the URL, or decodes to a page whose logs all have a time and that
// survives being written (as --save does) and read again.
func FuzzDecodePage(f *testing.F) {
	f.Add([]byte(`{"hasMore":false,"logs":[{"id":"a","labels":[{"name":"instance","value":"i"}],"message":"m","timestamp":"2026-10-08T05:00:00.5Z"}],"nextEndTime":"2026-10-08T06:00:00Z","nextStartTime":"2026-10-08T06:00:00Z"}`)) // the documented shape
	f.Add([]byte(`{"logs":[],"hasMore":true,"nextStartTime":"2026-10-08T05:00:00Z","nextEndTime":"2026-10-08T06:00:00Z"}`))                                                                                                          // an empty page with more
	f.Add([]byte(`{"logs":null,"hasMore":false}`))                                                                                                                                                                                   // null logs
	f.Add([]byte(`{"logs":[{"timestamp":"x"}],"hasMore":false}`))                                                                                                                                                                    // a bad time
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := decodePage("https://api.example/v1/logs", body)
		if err != nil {
			var se *ShapeError
			if !errors.As(err, &se) || !strings.Contains(err.Error(), "https://api.example/v1/logs") {
				t.Fatalf("not a shape error naming the URL: %v", err)
			}
			return
		}
		for i, l := range p.Logs {
			if l.Timestamp.IsZero() {
				t.Fatalf("log %d without a time", i)
			}
		}
		out, err := json.Marshal(p)
		if err != nil {
			return // a time json cannot write (year > 9999): not saved
		}
		if _, err := decodePage("u", out); err != nil {
			t.Fatalf("a page written as --save writes it does not read back: %v\n%s", err, out)
		}
	})
}
