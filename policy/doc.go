// Package policy knows the migration: the configuration model, its strict
// loading and validation (every problem reported at once as
// FILE:LINE: key.path: problem), the dated stage schedule, and Decide,
// which turns a request into a Decision value that can be logged and
// asserted. A loaded Snapshot is immutable; reloading builds a new one.
// Besides reading the config and key files it does no I/O.
package policy
