package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"time"

	"authgate/child"
	"authgate/policy"
)

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := fs.String("config", "", "config file (default $AUTHGATE_CONFIG, then config.yaml)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: authgate check [--config PATH] [-- COMMAND [ARGS...]]\n\nValidates the config: prints ok, a summary and the mode (same-service with -- COMMAND,\nas serve takes it), or every error as FILE:LINE: key: problem.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	command, ok := childCommand("check", args, fs, stderr)
	if !ok {
		return 2
	}
	snap, err := policy.Load(configPath(*cfg), policy.Options{})
	if err != nil {
		printLoadError(stderr, err)
		return 1
	}
	for _, w := range snap.Warnings {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	for _, w := range modeWarnings(snap, command) {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	fmt.Fprintln(stdout, "ok")
	fmt.Fprintln(stdout, summary(snap, time.Now()))
	fmt.Fprintln(stdout, modeLine(snap, command))
	return 0
}

// renderStopGrace is how long Render waits between SIGTERM and SIGKILL
// unless a service sets maxShutdownDelaySeconds.
const renderStopGrace = 30 * time.Second

// modeLine says how serve would run with this command line: the backend
// as authgate's child (same service), or elsewhere (separate).
func modeLine(s *policy.Snapshot, command []string) string {
	if command == nil {
		return fmt.Sprintf("mode: separate: the backend runs elsewhere, at %s (serve -- COMMAND would run it here, in authgate's own service)", s.Upstream.URL.Redacted())
	}
	return fmt.Sprintf("mode: same-service: authgate runs %s as its child with PORT=%s and proxies to %s; on SIGTERM authgate drains first (up to shutdown_timeout %s), then stops the child (SIGTERM, SIGKILL after upstream.stop_timeout %s) and exits with its status",
		quoteCommand(command), upstreamPort(s.Upstream.URL), s.Upstream.URL.Redacted(),
		policy.FormatDuration(s.ShutdownTimeout), policy.FormatDuration(s.Upstream.StopTimeout))
}

// modeWarnings are same-service mode's: an upstream not on loopback, a
// shutdown that does not fit Render's grace, a command not found here.
func modeWarnings(s *policy.Snapshot, command []string) []string {
	if command == nil {
		return nil
	}
	var out []string
	if !isLoopback(s.Upstream.URL.Hostname()) {
		out = append(out, fmt.Sprintf("%s: upstream.url: %s is not a loopback address: in same-service mode the backend should listen on 127.0.0.1 only (on Render any other port of a service is reachable over the private network, around authgate)",
			s.File, s.Upstream.URL.Redacted()))
	}
	if total := s.ShutdownTimeout + s.Upstream.StopTimeout; total > renderStopGrace {
		out = append(out, fmt.Sprintf("%s: shutdown_timeout %s + upstream.stop_timeout %s = %s, more than the %s Render waits between SIGTERM and SIGKILL: lower them (shutdown_timeout: 15s with the default stop_timeout fits) or raise the service's maxShutdownDelaySeconds",
			s.File, policy.FormatDuration(s.ShutdownTimeout), policy.FormatDuration(s.Upstream.StopTimeout),
			policy.FormatDuration(total), policy.FormatDuration(renderStopGrace)))
	}
	if _, err := child.Lookup(command[0]); err != nil {
		out = append(out, fmt.Sprintf("%v (here; serve would exit %d)", err, startErrorCode(err)))
	}
	return out
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// quoteCommand shows a command line the way a shell would read it back.
func quoteCommand(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$`|&;<>()*?[]#~") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}

func printLoadError(w io.Writer, err error) {
	var pe *policy.Error
	if errors.As(err, &pe) {
		for _, p := range pe.Problems {
			fmt.Fprintln(w, p)
		}
		return
	}
	fmt.Fprintln(w, err)
}

// summary is check's one paragraph: routes and the stages in force.
func summary(s *policy.Snapshot, now time.Time) string {
	d := s.Description(now)
	var b strings.Builder
	fmt.Fprintf(&b, "%s: listening on %s, proxying to %s", s.File, s.Listen, d.Upstream.URL)
	if s.AdminListen != "" {
		fmt.Fprintf(&b, " (admin on %s)", s.AdminListen)
	}
	switch {
	case d.Verify.HS256Secret && d.Verify.JWKSURL != "":
		b.WriteString("; JWTs verified with the HS256 secret and the JWKS")
	case d.Verify.HS256Secret:
		b.WriteString("; JWTs verified with the HS256 secret")
	case d.Verify.JWKSURL != "":
		b.WriteString("; JWTs verified with the JWKS")
	default:
		b.WriteString("; JWTs NOT verified (no key)")
	}
	fmt.Fprintf(&b, "; the upstream gets %s to answer an upgrade and %s for a response head", d.Upstream.UpgradeTimeout, d.Upstream.ResponseTimeout)
	if d.Upstream.CAFile != "" {
		fmt.Fprintf(&b, ", its certificate verified with the system roots plus %s", d.Upstream.CAFile)
	}
	if len(s.TrustedNames) == 0 {
		b.WriteString("; client_ip is the peer's address (no trusted_proxies)")
	} else {
		fmt.Fprintf(&b, "; client_ip read from X-Forwarded-For past trusted proxies %s", strings.Join(s.TrustedNames, ", "))
		if slices.Contains(s.TrustedNames, "cloudflare") {
			fmt.Fprintf(&b, " (Cloudflare's ranges as published on %s)", policy.CloudflareRangesDate)
		}
	}
	if d.Mint != nil {
		fmt.Fprintf(&b, "; legacy UUIDs rewritten to %s JWTs valid %s", d.Mint.Algorithm, d.Mint.TTL)
	}
	fmt.Fprintf(&b, ". %d route(s), as of %s:", len(d.Routes), now.UTC().Format(time.RFC3339))
	for _, r := range d.Routes {
		fmt.Fprintf(&b, " %s (%s): uuid %s; jwt %s; jwt_expired %s; missing %s.", r.Name, r.Match,
			r.Current["uuid"], r.Current["jwt"], r.Current["jwt_expired"], r.Current["missing"])
	}
	fmt.Fprintf(&b, " Unmatched requests: %s.", d.Unmatched)
	return b.String()
}
