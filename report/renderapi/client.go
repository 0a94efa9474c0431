// Package renderapi fetches a service's logs from Render's REST API: the
// service's owner, then GET /logs page after page, with Render's rate
// limits and retries. It knows nothing of authgate's lines or reports.
//
// The shapes follow Render's published client (render-oss/cli,
// pkg/client/types_gen.go and pkg/client/logs/logs_gen.go): a Service has
// "ownerId"; ListLogsParams are ownerId, resource, type, direction,
// startTime and endTime (RFC 3339), limit; a page (Logs200Response) is
// {"hasMore", "logs": [{"id", "labels": [{"name", "value"}], "message",
// "timestamp"}], "nextEndTime", "nextStartTime"}. Rate limits are
// api-docs.render.com/reference/rate-limiting: a 429, with Ratelimit-Reset
// saying when the window resets.
package renderapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// DefaultBaseURL is Render's API (RENDER_API_URL overrides it).
const DefaultBaseURL = "https://api.render.com/v1"

// Log is one log record.
type Log struct {
	ID        string    `json:"id"`
	Labels    []Label   `json:"labels"`
	Message   string    `json:"message"`
	Timestamp time.Time `json:"timestamp"`
}

// Label is a log's label: instance, level, type, resource, ...
type Label struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Page is one answer of GET /logs.
type Page struct {
	HasMore       bool      `json:"hasMore"`
	Logs          []Log     `json:"logs"`
	NextEndTime   time.Time `json:"nextEndTime"`
	NextStartTime time.Time `json:"nextStartTime"`
}

// Client calls Render's API. Zero fields take the defaults noted.
type Client struct {
	BaseURL string // default DefaultBaseURL
	Key     string // the API key, sent as a bearer token and never shown
	HTTP    *http.Client
	// Limit is the logs per page: default 1000, the CLI's
	// PaginationLogLimit (pkg/logs/constants.go).
	Limit int
	// Retries is how many times a 5xx answer or a failed or timed-out
	// request is tried again, with Backoff doubling between tries
	// (default 5 and 1s: 31s in all).
	Retries int
	Backoff time.Duration
	// RateLimitWaits is how many 429s in a row are waited out (default
	// 20), each wait at most MaxWait (default 2m).
	RateLimitWaits int
	MaxWait        time.Duration
	// Timeout bounds one request (default 60s).
	Timeout time.Duration
	// Now is the clock Ratelimit-Reset is read against; nil is time.Now.
	Now func() time.Time
	// OnWait, when set, is told of every wait and why.
	OnWait func(d time.Duration, why string)
}

// StatusError is an answer with an unexpected HTTP status.
type StatusError struct {
	URL     string // without the query
	Status  int
	Message string // the API's message, if any
}

func (e *StatusError) Error() string {
	s := fmt.Sprintf("%s: %d %s", e.URL, e.Status, http.StatusText(e.Status))
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// ErrNotFound is a 404: no such service, or not for this key.
var ErrNotFound = errors.New("not found")

// ErrKey is a 401 or 403: the key is wrong, expired, or may not read it.
var ErrKey = errors.New("refused the API key")

func (e *StatusError) Unwrap() error {
	switch e.Status {
	case http.StatusNotFound:
		return ErrNotFound
	case http.StatusUnauthorized, http.StatusForbidden:
		return ErrKey
	}
	return nil
}

// ShapeError is an answer that is not the documented shape.
type ShapeError struct {
	URL   string
	Field string
	Err   error
}

func (e *ShapeError) Error() string {
	return fmt.Sprintf("%s: unexpected answer: field %s: %v", e.URL, e.Field, e.Err)
}

// GaveUpError is a request that failed every retry.
type GaveUpError struct {
	URL      string
	Attempts int
	Last     error
}

func (e *GaveUpError) Error() string {
	return fmt.Sprintf("%s: gave up after %d attempts: %v", e.URL, e.Attempts, e.Last)
}

func (e *GaveUpError) Unwrap() error { return e.Last }

func (c *Client) base() string {
	b := c.BaseURL
	if b == "" {
		b = DefaultBaseURL
	}
	return strings.TrimSuffix(b, "/")
}

func orDefault[T comparable](v, d T) T {
	var zero T
	if v == zero {
		return d
	}
	return v
}

// Owner returns the owner (workspace) id of a service.
func (c *Client) Owner(ctx context.Context, serviceID string) (string, error) {
	u := c.base() + "/services/" + url.PathEscape(serviceID)
	body, err := c.get(ctx, u)
	if err != nil {
		return "", err
	}
	var svc struct {
		ID      *string `json:"id"`
		OwnerID *string `json:"ownerId"`
	}
	if err := json.Unmarshal(body, &svc); err != nil {
		return "", &ShapeError{u, "(the service object)", err}
	}
	if svc.OwnerID == nil || *svc.OwnerID == "" {
		return "", &ShapeError{u, "ownerId", errors.New("missing or empty")}
	}
	return *svc.OwnerID, nil
}

// Query selects the logs to fetch.
type Query struct {
	OwnerID, Resource string
	Start, End        time.Time
}

// maxPages bounds one fetch: at the default limit, a billion logs.
const maxPages = 1 << 20

// Logs fetches the app logs of q oldest first (direction=forward),
// following hasMore with nextStartTime and nextEndTime, and hands each
// page to fn, without the logs a previous page already gave (pages that
// meet inside one timestamp repeat them). An error from fn stops it.
func (c *Client) Logs(ctx context.Context, q Query, fn func(*Page) error) error {
	start, end := q.Start, q.End
	// The ids of the last page's logs at its latest timestamp: the next
	// page, starting at that time, may give them again.
	var edge time.Time
	seen := map[string]bool{}
	for range maxPages {
		v := url.Values{}
		v.Set("ownerId", q.OwnerID)
		v.Set("resource", q.Resource)
		v.Set("type", "app")
		v.Set("direction", "forward")
		v.Set("startTime", start.UTC().Format(time.RFC3339Nano))
		v.Set("endTime", end.UTC().Format(time.RFC3339Nano))
		v.Set("limit", strconv.Itoa(orDefault(c.Limit, 1000)))
		u := c.base() + "/logs"
		body, err := c.get(ctx, u+"?"+v.Encode())
		if err != nil {
			return err
		}
		p, err := decodePage(u, body)
		if err != nil {
			return err
		}
		kept := p.Logs[:0]
		for _, l := range p.Logs {
			if l.ID != "" && seen[l.ID] && l.Timestamp.Equal(edge) {
				continue
			}
			kept = append(kept, l)
		}
		p.Logs = kept
		for _, l := range p.Logs {
			switch {
			case l.Timestamp.After(edge):
				edge = l.Timestamp
				clear(seen)
				fallthrough
			case l.Timestamp.Equal(edge):
				if l.ID != "" {
					seen[l.ID] = true
				}
			}
		}
		if err := fn(p); err != nil {
			return err
		}
		if !p.HasMore {
			return nil
		}
		if p.NextStartTime.Before(start) || (p.NextStartTime.Equal(start) && p.NextEndTime.Equal(end) && len(p.Logs) == 0) {
			return &ShapeError{u, "nextStartTime", fmt.Errorf("%s does not advance from %s: the pagination would not end",
				p.NextStartTime.Format(time.RFC3339Nano), start.Format(time.RFC3339Nano))}
		}
		start, end = p.NextStartTime, p.NextEndTime
	}
	return fmt.Errorf("%s/logs: more than %d pages", c.base(), maxPages)
}

// decodePage checks a page's shape: every documented field present and of
// its type.
func decodePage(u string, body []byte) (*Page, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, &ShapeError{u, "(the page)", err}
	}
	p := &Page{}
	for _, f := range []struct {
		name     string
		dst      any
		required bool
	}{
		{"logs", &p.Logs, true},
		{"hasMore", &p.HasMore, true},
		{"nextStartTime", &p.NextStartTime, false},
		{"nextEndTime", &p.NextEndTime, false},
	} {
		v, ok := raw[f.name]
		if !ok || string(v) == "null" {
			if f.required {
				return nil, &ShapeError{u, f.name, errors.New("missing")}
			}
			continue
		}
		if err := json.Unmarshal(v, f.dst); err != nil {
			var te *json.UnmarshalTypeError
			if errors.As(err, &te) && te.Field != "" {
				return nil, &ShapeError{u, f.name + "." + te.Field, err}
			}
			return nil, &ShapeError{u, f.name, err}
		}
	}
	if p.HasMore {
		if _, ok := raw["nextStartTime"]; !ok || p.NextStartTime.IsZero() {
			return nil, &ShapeError{u, "nextStartTime", errors.New("missing while hasMore is true")}
		}
		if _, ok := raw["nextEndTime"]; !ok || p.NextEndTime.IsZero() {
			return nil, &ShapeError{u, "nextEndTime", errors.New("missing while hasMore is true")}
		}
	}
	for i, l := range p.Logs {
		if l.Timestamp.IsZero() {
			return nil, &ShapeError{u, fmt.Sprintf("logs[%d].timestamp", i), errors.New("missing")}
		}
	}
	return p, nil
}

// maxBody bounds one answer: a page of 1,000 logs of the longest lines.
const maxBody = 64 << 20

// get fetches u, waiting out 429s and retrying 5xx answers and failed
// requests, and returns the body of a 200.
func (c *Client) get(ctx context.Context, u string) ([]byte, error) {
	short := u
	if i := strings.IndexByte(short, '?'); i >= 0 {
		short = short[:i]
	}
	retries, backoff := orDefault(c.Retries, 5), orDefault(c.Backoff, time.Second)
	waits := orDefault(c.RateLimitWaits, 20)
	var last error
	attempt, failures := 0, 0
	for limited := 0; ; {
		attempt++
		body, status, hdr, err := c.do(ctx, u)
		switch {
		case err == nil && status == http.StatusOK:
			return body, nil
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case err == nil && status == http.StatusTooManyRequests:
			limited++
			if limited > waits {
				return nil, &GaveUpError{short, attempt, &StatusError{short, status, apiMessage(body)}}
			}
			if err := c.sleep(ctx, c.rateLimitWait(hdr), "rate limited (429)"); err != nil {
				return nil, err
			}
			continue
		case err == nil && status < 500:
			return nil, &StatusError{short, status, apiMessage(body)}
		case err == nil:
			last = &StatusError{short, status, apiMessage(body)}
		default:
			last = err
		}
		failures++
		if failures > retries {
			return nil, &GaveUpError{short, attempt, last}
		}
		d := backoff << (failures - 1)
		d += rand.N(d/4 + 1) // jitter, as Render's rate-limit page recommends
		if err := c.sleep(ctx, d, last.Error()); err != nil {
			return nil, err
		}
	}
}

func (c *Client) do(ctx context.Context, u string) ([]byte, int, http.Header, error) {
	ctx, cancel := context.WithTimeout(ctx, orDefault(c.Timeout, 60*time.Second))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.Key)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "authgate-report")
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, 0, nil, cleanErr(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return nil, 0, nil, cleanErr(err)
	}
	if len(body) > maxBody {
		return nil, 0, nil, fmt.Errorf("answer longer than %d MiB", maxBody>>20)
	}
	return body, resp.StatusCode, resp.Header, nil
}

// cleanErr keeps what a request error says without the URL's query.
func cleanErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("timed out: %w", err)
	}
	return err
}

// rateLimitWait is how long a 429 asks to wait. Ratelimit-Reset is "the
// time at which the current rate limit window resets in UTC epoch
// seconds" by Render's docs, whose example shows seconds to wait (45):
// both are read, a value before 2001 being seconds. Retry-After is read
// when it is absent. The wait is at least 1s and at most MaxWait.
func (c *Client) rateLimitWait(h http.Header) time.Duration {
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	d := time.Second
	if v, err := strconv.ParseFloat(strings.TrimSpace(h.Get("Ratelimit-Reset")), 64); err == nil && v > 0 {
		if v > 1e9 {
			d = time.Unix(int64(v), 0).Sub(now())
		} else {
			d = time.Duration(v * float64(time.Second))
		}
	} else if v, err := strconv.Atoi(strings.TrimSpace(h.Get("Retry-After"))); err == nil {
		d = time.Duration(v) * time.Second
	}
	return min(max(d, time.Second), orDefault(c.MaxWait, 2*time.Minute))
}

func (c *Client) sleep(ctx context.Context, d time.Duration, why string) error {
	if c.OnWait != nil {
		c.OnWait(d, why)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// apiMessage is the "message" of Render's error object, else the start
// of the body, on one line.
func apiMessage(body []byte) string {
	var e struct {
		Message string `json:"message"`
	}
	s := string(bytes.TrimSpace(body))
	if json.Unmarshal(body, &e) == nil && e.Message != "" {
		s = e.Message
	}
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}
