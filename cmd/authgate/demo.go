package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"syscall"

	"authgate/demo"
)

func cmdDemo(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	serve := fs.Bool("serve", false, "keep running after the sample clients and print URLs to try by hand")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: authgate demo [--serve]\n\nStarts a sample JWT-only backend and authgate with an embedded policy on loopback,\ndrives sample clients through it, and prints each outcome and the report.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return demo.Run(ctx, stdout, demo.Options{Serve: *serve})
}
