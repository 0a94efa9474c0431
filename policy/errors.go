package policy

import (
	"fmt"
	"sort"
	"strings"
)

// Problem is one configuration error or warning, located in its file.
type Problem struct {
	File string
	Line int    // 0 when unknown (the file as a whole)
	Path string // dotted key path, e.g. routes[1].policy.uuid[2].until
	Msg  string
	col  int // orders problems on one line in file order
}

func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		fmt.Fprintf(&b, ":%d", p.Line)
	}
	b.WriteString(": ")
	if p.Path != "" {
		b.WriteString(p.Path)
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Error is every problem that made a configuration invalid, in file order.
type Error struct {
	Problems []Problem
	// Hash is the SHA-256 of the file's bytes (and of the files it names)
	// when it could be read, so a reloader can tell a file it already
	// rejected from a new attempt.
	Hash [32]byte
	// Files are the files the config names that Parse tried to read, so
	// a reloader can watch them even while the config is rejected.
	Files []string
}

func (e *Error) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

func sortProblems(ps []Problem) {
	sort.SliceStable(ps, func(i, j int) bool {
		if ps[i].Line != ps[j].Line {
			return ps[i].Line < ps[j].Line
		}
		return ps[i].col < ps[j].col
	})
}
