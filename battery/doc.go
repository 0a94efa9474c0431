// Package battery is authgate's adversarial test battery: tests only.
//
// It runs authgate in-process (proxy.New + Serve on loopback, and
// proxy.Run for config-file faults) in front of real backends (an
// httptest server with gorilla/websocket, and raw TCP upstreams that
// misbehave on purpose), and attacks it case by case: oversized and
// garbage tokens, alg none, HS/RS confusion, unknown kids and JWKS
// floods, jku/x5u/crit headers, ambiguous token sources, slowloris and
// header limits, request smuggling shapes, broken WebSocket handshakes and
// frames (RFC 6455 §5), spoofed forwarding headers, upstream and JWKS
// faults, broken config files, reload storms, and hostile report input.
//
// Every case is a table row with its name, the attack, and the exact
// answer expected (status, close code, class). Around every case the
// battery checks that authgate keeps serving (a canary WebSocket opened
// at the start echoes after each case), that no goroutine or descriptor
// is left behind, that no token or JWT segment reaches any log line, and
// that nothing panicked (net/http's recovered panics go to the standard
// log package, which TestMain captures).
//
// A failing case pins the correct behaviour of a bug in authgate; the
// battery does not fix authgate.
package battery
