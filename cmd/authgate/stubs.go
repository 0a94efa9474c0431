package main

import "io"

func cmdServe(args []string, stdout, stderr io.Writer) int   { return 2 }
func cmdExplain(args []string, stdout, stderr io.Writer) int { return 2 }
func cmdDemo(args []string, stdout, stderr io.Writer) int    { return 2 }

func reportCommand(args []string, stdin io.Reader, stdout, stderr io.Writer) int { return 2 }
