package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"authgate/proxy"
)

const serveUsage = `usage: authgate serve [--config PATH] [-- COMMAND [ARGS...]]

Runs the proxy. With -- COMMAND, authgate runs the backend itself as its
child (same-service mode): PORT set to upstream.url's port, its own process
group, stopped after authgate's own shutdown; authgate exits with its status.
`

func cmdServe(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := fs.String("config", "", "config file (default $AUTHGATE_CONFIG, then config.yaml)")
	fs.Usage = func() {
		fmt.Fprint(stderr, serveUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	command, ok := childCommand("serve", args, fs, stderr)
	if !ok {
		return 2
	}
	if command != nil {
		return serveWithChild(configPath(*cfg), command, stdout, stderr)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	reload, stopHUP := reloadOnHUP()
	defer stopHUP()
	err := proxy.Run(ctx, proxy.RunOptions{ConfigPath: configPath(*cfg), Logs: stdout, Reload: reload, Watch: true})
	if err != nil {
		printLoadError(stderr, err)
		fmt.Fprintln(stderr, "authgate: not started")
		return 1
	}
	return 0
}

// childCommand returns what follows "--" in args once fs has parsed them
// (nil without "--"). An argument that is not a flag and has no "--"
// before it is a usage error, as is "--" with nothing after it.
func childCommand(name string, args []string, fs *flag.FlagSet, stderr io.Writer) ([]string, bool) {
	rest := fs.Args()
	dashdash := len(rest) < len(args) && args[len(args)-len(rest)-1] == "--"
	switch {
	case !dashdash && len(rest) > 0:
		fmt.Fprintf(stderr, "%s: unexpected argument %q (the backend's command goes after --: authgate %s -- COMMAND [ARGS...])\n", name, rest[0], name)
		return nil, false
	case dashdash && len(rest) == 0:
		fmt.Fprintf(stderr, "%s: nothing after --: want authgate %s [--config PATH] -- COMMAND [ARGS...]\n", name, name)
		return nil, false
	case !dashdash:
		return nil, true
	}
	return rest, true
}

// reloadOnHUP turns SIGHUP into reload requests, coalesced while one is
// pending.
func reloadOnHUP() (<-chan struct{}, func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	reload := make(chan struct{}, 1)
	go func() {
		for range hup {
			select {
			case reload <- struct{}{}:
			default: // a reload is already pending
			}
		}
	}()
	return reload, func() { signal.Stop(hup) }
}
