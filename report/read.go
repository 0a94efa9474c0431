package report

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
)

// readBufferSize is the size of one read; a line may be up to
// maxLineLength, so the buffer holds both.
const readBufferSize = 256 << 10

// ReadFrom folds every line of r into the report. r may be plain text or
// gzip (one or more members), told apart by the gzip magic number, not by
// the name. name labels the input in the report and in errors. Lines
// longer than 1 MiB are skipped and counted, without being held in memory.
// The input may be lines (authgate's own, syslog, `render logs -o text`)
// or Render's JSON (`render logs -o json`, API pages), told apart by its
// first bytes (see formats.go).
func (a *Aggregator) ReadFrom(name string, r io.Reader) error {
	in := Input{Name: name, Warnings: []string{}}
	before, formats := a.lines.Read, a.lines.ByFormat
	defer func() {
		in.Lines = a.lines.Read - before
		in.ByFormat = a.lines.ByFormat.minus(formats)
		a.inputs = append(a.inputs, in)
	}()

	br := bufio.NewReaderSize(r, 64<<10)
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("reading %s: %w", name, err)
		}
		defer zr.Close()
		in.Gzip = true
		br = bufio.NewReaderSize(zr, 64<<10)
	}
	if isJSONStream(br) {
		var err error
		in.Warnings, err = a.readJSONStream(name, in.Gzip, br)
		if in.Warnings == nil {
			in.Warnings = []string{}
		}
		return err
	}
	if err := a.readLines(br); err != nil {
		return fmt.Errorf("reading %s: %w", name, err)
	}
	return nil
}

func (a *Aggregator) readLines(r io.Reader) error {
	buf := make([]byte, maxLineLength+readBufferSize)
	start, end := 0, 0
	discarding := false // inside a line longer than maxLineLength
	for {
		n, err := r.Read(buf[end:])
		end += n
		for {
			i := bytes.IndexByte(buf[start:end], '\n')
			if i < 0 {
				break
			}
			if discarding {
				discarding = false
			} else {
				a.inputLine(trimCR(buf[start : start+i]))
			}
			start += i + 1
		}
		if err == io.EOF {
			switch {
			case start == end || discarding:
			case end-start > maxLineLength:
				a.lines.Read++
				a.lines.ByFormat.Plain++
				a.lines.SkippedBy.TooLong++
			default:
				a.inputLine(trimCR(buf[start:end]))
			}
			return nil
		}
		if err != nil {
			return err
		}
		switch {
		case discarding:
			start, end = 0, 0 // nothing of an overlong line is kept
		case end-start > maxLineLength:
			a.lines.Read++
			a.lines.ByFormat.Plain++
			a.lines.SkippedBy.TooLong++
			discarding = true
			start, end = 0, 0
		case start > 0 && len(buf)-end < readBufferSize:
			end = copy(buf, buf[start:end])
			start = 0
		}
	}
}

func trimCR(b []byte) []byte {
	if len(b) > 0 && b[len(b)-1] == '\r' {
		return b[:len(b)-1]
	}
	return b
}
