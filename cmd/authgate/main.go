// Command authgate is a reverse proxy that moves clients from a legacy
// UUID credential to real JWTs on a schedule. See README.md.
package main

import "os"

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
