package main

import (
	"io"

	"authgate/report"
)

func reportCommand(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return report.Command(args, stdin, stdout, stderr)
}
