package proxy

import (
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are registered once per Server on its own registry (never the
// global one, never again on reload). Label values come from config (route
// names) and fixed sets, never from request paths.
type metrics struct {
	reg          *prometheus.Registry
	decisions    *prometheus.CounterVec
	wsOpen       *prometheus.GaugeVec
	legacySeen   *prometheus.GaugeVec
	reloads      *prometheus.CounterVec
	upstreamErrs *prometheus.CounterVec
	handshake    prometheus.Histogram
	rateLimited  prometheus.Counter
	logHeld      prometheus.Counter

	// counters caches decisions children: WithLabelValues hashes its
	// labels on every call, the cache does it once per label set.
	mu       sync.RWMutex
	counters map[decisionKey]prometheus.Counter
}

type decisionKey struct{ route, transport, class, action string }

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authgate_decisions_total", Help: "Decisions on matched routes by route, transport, token class and action.",
		}, []string{"route", "transport", "class", "action"}),
		wsOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "authgate_websocket_open", Help: "Relayed WebSockets open now, by route.",
		}, []string{"route"}),
		legacySeen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "authgate_legacy_last_seen_timestamp_seconds", Help: "Unix time of the last request carrying a legacy UUID, by route.",
		}, []string{"route"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authgate_config_reloads_total", Help: "Config reloads by result (reloaded, rejected, unchanged).",
		}, []string{"result"}),
		upstreamErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authgate_upstream_errors_total", Help: "Requests the upstream failed (unreachable, timeout), by route (\"\" when unmatched).",
		}, []string{"route"}),
		handshake: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "authgate_handshake_seconds", Help: "WebSocket upgrade time from request to 101 (or rejection) written.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
		rateLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "authgate_rate_limited_total", Help: "Requests refused because their client IP failed authentication too often.",
		}),
		logHeld: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "authgate_log_lines_held_total", Help: "Log lines the budget (log.max_lines_per_minute) held back; each is counted in a summary line's repeat.",
		}),
		counters: map[decisionKey]prometheus.Counter{},
	}
	m.reg.MustRegister(m.decisions, m.wsOpen, m.legacySeen, m.reloads, m.upstreamErrs, m.handshake, m.rateLimited, m.logHeld,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, r := range []string{"reloaded", "rejected", "unchanged"} {
		m.reloads.WithLabelValues(r)
	}
	return m
}

func (m *metrics) decision(route, transport, class, action string) {
	k := decisionKey{route, transport, class, action}
	m.mu.RLock()
	c, ok := m.counters[k]
	m.mu.RUnlock()
	if !ok {
		c = m.decisions.WithLabelValues(route, transport, class, action)
		m.mu.Lock()
		if len(m.counters) < 4096 {
			m.counters[k] = c
		}
		m.mu.Unlock()
	}
	c.Inc()
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Registry returns the Server's Prometheus registry (for tests and
// embedding).
func (s *Server) Registry() *prometheus.Registry { return s.metrics.reg }
