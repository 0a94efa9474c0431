// Package renderapitest is a stand-in for Render's REST API on loopback,
// for tests: GET /v1/services/{id} and GET /v1/logs as Render's published
// client describes them (render-oss/cli pkg/client), with faults to
// inject: 429s with Ratelimit-Reset, 5xx answers, answers of another
// shape.
package renderapitest

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"authgate/report/renderapi"
)

// Server is a stand-in API. Set its fields before the first request.
type Server struct {
	*httptest.Server
	Key      string            // the API key it accepts
	Services map[string]string // service id -> owner id
	Logs     []renderapi.Log   // every log of every service (the "resource" label names it)
	// Limit caps a page whatever the client asks (default 100): many
	// pages from few logs.
	Limit int

	mu       sync.Mutex
	faults   []Fault
	before   int // GET /logs requests to answer before the faults
	requests []*http.Request
}

// Fault is an answer given instead of the next GET /logs's.
type Fault struct {
	Status int
	Header map[string]string
	Body   string
}

// New starts a stand-in on loopback; it is closed when t ends.
func New(t testing.TB, key string) *Server {
	s := &Server{Key: key, Services: map[string]string{}}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

// URL of the API, as RENDER_API_URL takes it.
func (s *Server) APIURL() string { return s.Server.URL + "/v1" }

// Fail queues faults for the next GET /logs requests, in order.
func (s *Server) Fail(f ...Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, f...)
}

// FailAfter queues faults for the GET /logs requests after the next n.
func (s *Server) FailAfter(n int, f ...Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.before = n
	s.faults = append(s.faults, f...)
}

// Requests returns the requests served so far.
func (s *Server) Requests() []*http.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Ratelimit-Limit", "400")
	w.Header().Set("Ratelimit-Remaining", "399")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func errorBody(msg string) map[string]string { return map[string]string{"id": "error", "message": msg} }

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests = append(s.requests, r.Clone(r.Context()))
	s.mu.Unlock()
	if r.Method != http.MethodGet {
		writeJSON(w, http.StatusMethodNotAllowed, errorBody("method not allowed"))
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+s.Key {
		writeJSON(w, http.StatusUnauthorized, errorBody("unauthorized"))
		return
	}
	switch {
	case strings.HasPrefix(r.URL.Path, "/v1/services/"):
		id := strings.TrimPrefix(r.URL.Path, "/v1/services/")
		owner, ok := s.Services[id]
		if !ok {
			writeJSON(w, http.StatusNotFound, errorBody("not found"))
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"id": id, "name": "web", "ownerId": owner, "type": "web_service",
			"slug": "web", "suspended": "not_suspended", "createdAt": "2026-01-01T00:00:00Z"})
	case r.URL.Path == "/v1/logs":
		s.mu.Lock()
		var f *Fault
		if s.before > 0 {
			s.before--
		} else if len(s.faults) > 0 {
			f = &s.faults[0]
			s.faults = s.faults[1:]
		}
		s.mu.Unlock()
		if f != nil {
			for k, v := range f.Header {
				w.Header().Set(k, v)
			}
			w.WriteHeader(f.Status)
			w.Write([]byte(f.Body))
			return
		}
		s.logs(w, r)
	default:
		writeJSON(w, http.StatusNotFound, errorBody("not found"))
	}
}

// logs answers GET /v1/logs: the logs of the resource with start <= time
// <= end, oldest first with direction=forward (newest first otherwise, as
// Render's default), at most limit; the next page's bound is the time of
// the last log given, so a page that ends inside one timestamp is followed
// by one that begins with it again.
func (s *Server) logs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	owner, resource := q.Get("ownerId"), q.Get("resource")
	if owner == "" || resource == "" || s.Services[resource] != owner {
		writeJSON(w, http.StatusBadRequest, errorBody("ownerId and resource must name a service of the owner"))
		return
	}
	backward := q.Get("direction") != "forward" // Render's default, as the CLI's
	if t := q.Get("type"); t != "" && t != "app" {
		writeJSON(w, http.StatusBadRequest, errorBody("this stand-in holds app logs only"))
		return
	}
	start, err1 := time.Parse(time.RFC3339Nano, q.Get("startTime"))
	end, err2 := time.Parse(time.RFC3339Nano, q.Get("endTime"))
	if err1 != nil || err2 != nil {
		writeJSON(w, http.StatusBadRequest, errorBody("startTime and endTime: RFC 3339"))
		return
	}
	limit, _ := strconv.Atoi(q.Get("limit"))
	if capped := max(s.Limit, 1); s.Limit == 0 {
		limit = min(limit, 100)
	} else {
		limit = min(limit, capped)
	}
	if limit <= 0 {
		limit = 100
	}
	var matched []renderapi.Log
	for _, l := range s.Logs {
		if l.Timestamp.Before(start) || l.Timestamp.After(end) || label(l, "resource") != resource {
			continue
		}
		matched = append(matched, l)
	}
	slices.SortStableFunc(matched, func(a, b renderapi.Log) int { return a.Timestamp.Compare(b.Timestamp) })
	if backward {
		slices.Reverse(matched)
	}
	page := renderapi.Page{Logs: matched[:min(limit, len(matched))], NextEndTime: end, NextStartTime: end}
	if backward {
		page.NextStartTime = start
	}
	if page.Logs == nil {
		page.Logs = []renderapi.Log{}
	}
	if len(matched) > limit {
		page.HasMore = true
		if backward {
			page.NextEndTime = matched[limit-1].Timestamp
		} else {
			page.NextStartTime = matched[limit-1].Timestamp
		}
	}
	writeJSON(w, http.StatusOK, page)
}

func label(l renderapi.Log, name string) string {
	for _, lb := range l.Labels {
		if lb.Name == name {
			return lb.Value
		}
	}
	return ""
}
