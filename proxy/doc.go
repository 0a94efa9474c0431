// Package proxy knows the network: the public listener and its handler,
// HTTP proxying, the WebSocket upgrade and relay, the registry of open
// connections, shutdown, and writing the log events that `authgate report`
// reads. Decisions come from package policy; tokens are handled by
// package rewrite; frames are copied by package proxy/relay.
//
// A request flows: ServeHTTP -> policy.Decide (extract, classify, decide)
// -> reject, or mint and rewrite.Apply -> serveHTTPProxy or
// serveWebSocket -> relay -> log.
package proxy
