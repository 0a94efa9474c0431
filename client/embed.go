// Package client holds authgate.js, the browser module that acts on
// authgate's close codes, for Go code that serves it (the demo's page).
// The module itself is the source of truth; see client/README.md.
package client

import _ "embed"

// Source is authgate.js, served as text/javascript.
//
//go:embed authgate.js
var Source []byte
