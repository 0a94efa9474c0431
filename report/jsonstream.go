package report

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Render's JSON shapes, read as a stream of JSON values:
//
//   - `render logs -o json` writes each log with json.MarshalIndent and
//     nothing between them (render-oss/cli cmd/logs.go, writeLog): objects
//     {"id", "labels": [{"name", "value"}], "message", "timestamp"} back to
//     back, newest first (the CLI's default direction is backward);
//   - a page of GET /v1/logs (pkg/client/types_gen.go, Logs200Response):
//     {"logs": [log...], "hasMore", "nextStartTime", "nextEndTime"}, one or
//     many per file, compact (as --save writes them) or indented.
//
// A log's message is the app's line; its "instance" label is the line's
// instance when the line has none. Objects are decoded one log at a time,
// so memory does not grow with the file: a page's logs are read one by
// one, and no value may hold more than maxJSONValue bytes.

// maxJSONValue bounds the bytes the decoder may buffer for one value: a
// log of the longest line the report reads, every byte escaped.
const maxJSONValue = 8 * maxLineLength

// isJSONStream reports whether br starts with Render's JSON: an object
// whose first line is only "{" (MarshalIndent's output), or whose first
// key is one of a page's (Logs200Response: hasMore, logs, nextEndTime,
// nextStartTime). A plain line is an object on one line whose first key
// is zerolog's "level".
func isJSONStream(br *bufio.Reader) bool {
	head, _ := br.Peek(4096)
	head = bytes.TrimPrefix(head, []byte("\xef\xbb\xbf"))
	i := skipWS(head, 0)
	if i >= len(head) || head[i] != '{' {
		return false
	}
	for i++; i < len(head) && (head[i] == ' ' || head[i] == '\t'); i++ {
	}
	if i < len(head) && (head[i] == '\n' || head[i] == '\r') {
		return true
	}
	for _, key := range pageKeys {
		if bytes.HasPrefix(head[i:], []byte(key)) {
			return true
		}
	}
	return false
}

var pageKeys = []string{`"logs"`, `"hasMore"`, `"nextStartTime"`, `"nextEndTime"`}

// renderLog is one log of either shape. A message that is absent, null
// or not a string leaves Message nil: that record is invalid, the stream
// goes on.
type renderLog struct {
	Labels  []renderLabel `json:"labels"`
	Message *string       `json:"message"`
}

type renderLabel struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// skip consumes any JSON value without keeping it.
type skip struct{}

func (*skip) UnmarshalJSON([]byte) error { return nil }

// errValueTooLong is the reader's refusal to buffer more of one value.
var errValueTooLong = errors.New("value too long")

// boundedReader counts the bytes read and refuses to read more than
// maxJSONValue beyond the decoder's position.
type boundedReader struct {
	r   io.Reader
	dec *json.Decoder
	n   int64
	err error // the underlying reader's error other than io.EOF
}

func (b *boundedReader) Read(p []byte) (int, error) {
	if b.dec != nil && b.n-b.dec.InputOffset() > maxJSONValue {
		return 0, errValueTooLong
	}
	n, err := b.r.Read(p)
	b.n += int64(n)
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

// jsonStream reads one input's JSON values.
type jsonStream struct {
	a        *Aggregator
	dec      *json.Decoder
	records  int64 // complete records read
	inPage   bool  // inside a page's logs: a broken record there is an API record
	recStart int64 // where the page's record being read begins
}

// readJSONStream folds every log of a JSON stream into the report. What
// cannot be read (the stream cut off or broken mid-value) is one invalid
// line and a warning naming the input and the byte offset where the
// broken value begins; what came before it counts. It returns an error
// only when the input itself cannot be read.
func (a *Aggregator) readJSONStream(name string, gzipped bool, r io.Reader) ([]string, error) {
	br := &boundedReader{r: r}
	s := &jsonStream{a: a, dec: json.NewDecoder(br)}
	br.dec = s.dec
	var warnings []string
	for {
		start := s.dec.InputOffset()
		tok, err := s.dec.Token()
		if err == io.EOF {
			return warnings, nil
		}
		if err == nil {
			if d, ok := tok.(json.Delim); ok && d == '{' {
				start, err = s.object()
			} else {
				err = fmt.Errorf("%v where a JSON object should begin", tok)
			}
		}
		if err == nil {
			continue
		}
		if br.err != nil {
			return warnings, fmt.Errorf("reading %s: %w", name, br.err)
		}
		a.lines.Read++
		if s.inPage {
			a.lines.ByFormat.RenderAPI++
		} else {
			a.lines.ByFormat.RenderCLIJSON++
		}
		why := "broken JSON (" + err.Error() + ")"
		switch {
		case errors.Is(err, io.ErrUnexpectedEOF):
			why = "the stream is cut off inside a JSON object (an interrupted download?)"
			a.lines.SkippedBy.Invalid++
		case errors.Is(err, errValueTooLong):
			why = fmt.Sprintf("a JSON value longer than %d MiB", maxJSONValue>>20)
			a.lines.SkippedBy.TooLong++
		default:
			a.lines.SkippedBy.Invalid++
		}
		where := "byte"
		if gzipped {
			where = "byte (decompressed)"
		}
		warnings = append(warnings, fmt.Sprintf("%s: %s %d: %s; the %d complete records before it were read, the rest is counted as one invalid line",
			name, where, start, why, s.records))
		return warnings, nil
	}
}

// object reads the members of an object whose '{' has been read: a page
// when it has "logs", else a log. It returns the offset where a broken
// value begins.
func (s *jsonStream) object() (int64, error) {
	objStart := s.dec.InputOffset() - 1
	var rec renderLog
	isPage := false
	for s.dec.More() {
		tok, err := s.dec.Token()
		if err != nil {
			return objStart, err
		}
		key, _ := tok.(string)
		switch key {
		case "logs":
			isPage = true
			if err := s.page(); err != nil {
				return s.brokenAt(objStart), err
			}
		case "message":
			err = s.dec.Decode(&rec.Message)
			var te *json.UnmarshalTypeError
			if errors.As(err, &te) {
				rec.Message, err = nil, nil // not a string: an invalid record
			}
		case "labels":
			err = s.dec.Decode(&rec.Labels)
			var te *json.UnmarshalTypeError
			if errors.As(err, &te) {
				rec.Labels, err = nil, nil // labels of another shape: none
			}
		default:
			err = s.dec.Decode(&skip{})
		}
		if err != nil {
			return objStart, err
		}
	}
	if _, err := s.dec.Token(); err != nil { // '}'
		return objStart, err
	}
	if !isPage {
		s.a.lines.ByFormat.RenderCLIJSON++
		s.record(&rec)
	}
	return objStart, nil
}

// brokenAt is where the value that broke a page begins: the record being
// read when inside the logs, else the page.
func (s *jsonStream) brokenAt(objStart int64) int64 {
	if s.inPage {
		return s.recStart
	}
	return objStart
}

// page reads a page's "logs" array, one log at a time.
func (s *jsonStream) page() error {
	tok, err := s.dec.Token()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != '[' {
		return fmt.Errorf(`"logs" is %v, not an array`, tok)
	}
	s.inPage = true
	for s.dec.More() {
		s.recStart = s.dec.InputOffset()
		var rec renderLog
		err := s.dec.Decode(&rec)
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &te):
			// Well-formed JSON of another shape: this record only.
			s.a.lines.Read++
			s.a.lines.ByFormat.RenderAPI++
			s.a.lines.SkippedBy.Invalid++
			s.records++
			continue
		case err != nil:
			return err
		}
		s.a.lines.ByFormat.RenderAPI++
		s.record(&rec)
	}
	if _, err := s.dec.Token(); err != nil { // ']'
		return err
	}
	s.inPage = false
	return nil
}

// record folds one complete log.
func (s *jsonStream) record(rec *renderLog) {
	s.records++
	a := s.a
	if rec.Message == nil {
		a.lines.Read++
		a.lines.SkippedBy.Invalid++
		return
	}
	var instance []byte
	for _, l := range rec.Labels {
		if l.Name == "instance" && l.Value != "" {
			instance = []byte(l.Value)
		}
	}
	line := []byte(*rec.Message)
	for len(line) > 0 && (line[len(line)-1] == '\n' || line[len(line)-1] == '\r') {
		line = line[:len(line)-1]
	}
	if len(line) > maxLineLength {
		a.lines.Read++
		a.lines.SkippedBy.TooLong++
		return
	}
	a.recordLine(line, instance)
}
