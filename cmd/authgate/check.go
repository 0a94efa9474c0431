package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"authgate/policy"
)

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := fs.String("config", "", "config file (default $AUTHGATE_CONFIG, then config.yaml)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: authgate check [--config PATH]\n\nValidates the config: prints ok and a summary, or every error as FILE:LINE: key: problem.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "check: unexpected argument %q\n", fs.Arg(0))
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
	fmt.Fprintln(stdout, "ok")
	fmt.Fprintln(stdout, summary(snap, time.Now()))
	return 0
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
