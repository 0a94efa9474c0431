// Package rewrite knows tokens: where they sit in a request (Extract), what
// class they are (Verifier.Classify), how to mint a replacement JWT for a
// legacy UUID (Minter), and how to put a token into the outgoing request
// (Apply). It is pure functions over *http.Request values and bytes: no
// sockets, no logging, no policy.
package rewrite
