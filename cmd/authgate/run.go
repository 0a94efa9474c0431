package main

import (
	"fmt"
	"io"
	"os"
	"runtime/debug"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3";
// otherwise the module build info is used.
var version = ""

const usage = `authgate: a reverse proxy that migrates clients from a legacy UUID
credential to JWTs, with a dated policy, a kill switch and a report.

Usage:
  authgate serve   [--config PATH]              run the proxy
  authgate serve   [--config PATH] -- COMMAND [ARGS...]
                                                run the proxy and the backend, as its child
  authgate check   [--config PATH] [-- COMMAND [ARGS...]]
                                                validate the config (and say the mode)
  authgate explain [--config PATH] [--at TIME] [--header 'K: V']... URL
                                                what the proxy would do with URL
  authgate report  [flags] [FILE...]            legacy use and a safe-to-delete verdict
  authgate demo    [--serve]                    a sample backend, proxy and clients
  authgate version

--config defaults to $AUTHGATE_CONFIG, then config.yaml.
Run 'authgate COMMAND -h' for a command's flags.
`

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	rest := args[1:]
	switch args[0] {
	case "serve":
		return cmdServe(rest, stdout, stderr)
	case "check":
		return cmdCheck(rest, stdout, stderr)
	case "explain":
		return cmdExplain(rest, stdout, stderr)
	case "report":
		return reportCommand(rest, stdin, stdout, stderr)
	case "demo":
		return cmdDemo(rest, stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "authgate", versionString())
		return 0
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "authgate: unknown command %q\n\n%s", args[0], usage)
	return 2
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		v := bi.Main.Version
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v += " " + s.Value[:12]
			}
		}
		if v != "" {
			return v
		}
	}
	return "(devel)"
}

// configPath returns the --config value, $AUTHGATE_CONFIG, or config.yaml.
func configPath(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	if p := os.Getenv("AUTHGATE_CONFIG"); p != "" {
		return p
	}
	return "config.yaml"
}
