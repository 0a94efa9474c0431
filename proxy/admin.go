package proxy

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"time"
)

// adminServer serves /healthz, /readyz, /policy and /jwks.json on the
// admin listener (never on the public one).
type adminServer struct {
	srv *Server
	hs  *http.Server
}

func newAdmin(srv *Server) *adminServer {
	a := &adminServer{srv: srv}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", a.readyz)
	mux.HandleFunc("GET /policy", a.policy)
	mux.HandleFunc("GET /jwks.json", a.jwks)
	mux.Handle("GET /metrics", srv.metrics.handler())
	a.hs = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, MaxHeaderBytes: 16 << 10}
	return a
}

func (a *adminServer) serve(ln net.Listener) { a.hs.Serve(ln) }

func (a *adminServer) close(ctx context.Context) { a.hs.Shutdown(ctx) }

func (a *adminServer) readyz(w http.ResponseWriter, r *http.Request) {
	if a.srv.Snapshot() == nil || a.srv.draining.Load() {
		http.Error(w, "not ready\n", http.StatusServiceUnavailable)
		return
	}
	w.Write([]byte("ready\n"))
}

func (a *adminServer) policy(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(a.srv.Snapshot().Description(a.srv.now()))
}

func (a *adminServer) jwks(w http.ResponseWriter, r *http.Request) {
	b := a.srv.mintKeys.jwks(a.srv.Snapshot(), a.srv.now())
	if b == nil {
		http.Error(w, "no asymmetric mint key configured\n", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/jwk-set+json")
	// Short: after a rotation a backend should see the new key soon
	// (one that refetches on an unknown kid sees it at once).
	w.Header().Set("Cache-Control", "max-age=60")
	w.Write(b)
}
