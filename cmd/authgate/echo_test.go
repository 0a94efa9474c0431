package main

import (
	"net"
	"net/http"

	"github.com/gorilla/websocket"
)

type httpServer struct {
	ln     net.Listener
	up     websocket.Upgrader
	handle func(*websocket.Conn)
}

func (s *httpServer) serve() {
	http.Serve(s.ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := s.up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		s.handle(c)
	}))
}
