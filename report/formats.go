package report

import "fmt"

// Input formats. Every shape a log reaches the report in is a small
// reader that hands authgate's lines to the same Aggregator.Line:
//
//   - plain lines: authgate's JSON, one object a line, optionally after a
//     collector's prefix (read.go);
//   - RFC 5424 syslog lines, as a Render log stream (syslog drain) sends
//     them: `<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG`;
//   - the text output of `render logs -o text`: `2006-01-02 15:04:05  MSG`
//     (the CLI's cmd/logs.go, writeLog: time.DateTime, two spaces);
//   - `render logs -o json`: log objects {id, labels, message, timestamp}
//     written back to back by json.MarshalIndent, newest first, and pages
//     of the API's GET /v1/logs ({"logs": [...], "hasMore", ...}), one or
//     many per file (jsonstream.go).
//
// Line formats are told apart per line (a syslog drain's file may hold a
// line of anything); the JSON stream per input, by its first bytes. In the
// Render formats the app's line is the message: a message that is not
// authgate's (the backend's access lines, build output) is another
// program's line, not "not JSON", since its record is well formed.

// ByFormat counts lines by the format they came in. Lines of other
// programs are counted too: this is how lines came, not what they said.
type ByFormat struct {
	Plain         int64 `json:"plain"`           // plain lines (authgate's JSON, with or without a prefix, and anything else)
	Syslog        int64 `json:"syslog"`          // RFC 5424 lines (a Render log stream)
	RenderCLIText int64 `json:"render_cli_text"` // `render logs -o text` lines
	RenderCLIJSON int64 `json:"render_cli_json"` // `render logs -o json` objects
	RenderAPI     int64 `json:"render_api"`      // log records of GET /v1/logs pages (--render, --save files)
}

// text lists the formats other than plain lines, for the text output:
// "" for an input of plain lines only.
func (b ByFormat) text() string {
	var s string
	for _, f := range []struct {
		n    int64
		name string
	}{{b.Syslog, "syslog"}, {b.RenderCLIText, "render_cli_text"}, {b.RenderCLIJSON, "render_cli_json"}, {b.RenderAPI, "render_api"}} {
		if f.n > 0 {
			s += fmt.Sprintf(", %d %s", f.n, f.name)
		}
	}
	return s
}

func (b ByFormat) minus(o ByFormat) ByFormat {
	return ByFormat{b.Plain - o.Plain, b.Syslog - o.Syslog, b.RenderCLIText - o.RenderCLIText,
		b.RenderCLIJSON - o.RenderCLIJSON, b.RenderAPI - o.RenderAPI}
}

// inputLine folds one line of a line-oriented input: plain, syslog or the
// CLI's text output.
func (a *Aggregator) inputLine(line []byte) {
	if len(line) > 0 {
		switch c := line[0]; {
		case c == '<':
			if msg, ok := syslogMessage(line); ok {
				a.lines.ByFormat.Syslog++
				a.recordLine(msg, nil)
				return
			}
		case '0' <= c && c <= '9':
			if msg, ok := cliTextMessage(line); ok {
				a.lines.ByFormat.RenderCLIText++
				a.recordLine(msg, nil)
				return
			}
		}
	}
	a.lines.ByFormat.Plain++
	a.Line(line)
}

// recordLine folds the app line of a Render record. instance, when not
// nil, is the record's instance label: the line's instance when it has
// none. A message that holds no JSON object is another program's line.
func (a *Aggregator) recordLine(msg, instance []byte) {
	notJSON := a.lines.SkippedBy.NotJSON
	a.p.instance = instance
	a.Line(msg)
	a.p.instance = nil
	if a.lines.SkippedBy.NotJSON != notJSON {
		a.lines.SkippedBy.NotJSON--
		a.lines.SkippedBy.OtherProgram++
	}
}

// cliTextMessage returns the message of a `render logs -o text` line,
// "2006-01-02 15:04:05  MESSAGE", and whether line has that shape.
func cliTextMessage(line []byte) ([]byte, bool) {
	const layout = "dddd-dd-dd dd:dd:dd  "
	if len(line) < len(layout) {
		return nil, false
	}
	for i := 0; i < len(layout); i++ {
		c := line[i]
		switch layout[i] {
		case 'd':
			if c < '0' || c > '9' {
				return nil, false
			}
		default:
			if c != layout[i] {
				return nil, false
			}
		}
	}
	return line[len(layout):], true
}

// syslogMessage returns the MSG of an RFC 5424 line and whether line is
// one: "<" PRI ">" VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID
// SP MSGID SP STRUCTURED-DATA [SP MSG], PRI 0-191, VERSION 1-999, each
// header field a run of printable ASCII or "-", STRUCTURED-DATA "-" or one
// or more [ID PARAM="VALUE"...] elements (VALUE escapes ", \ and ] with a
// backslash). A UTF-8 byte order mark before MSG is dropped. A line
// without MSG has an empty one.
func syslogMessage(line []byte) ([]byte, bool) {
	i := 1
	pri := 0
	for ; i < len(line) && i <= 3 && '0' <= line[i] && line[i] <= '9'; i++ {
		pri = pri*10 + int(line[i]-'0')
	}
	if i == 1 || i >= len(line) || line[i] != '>' || pri > 191 {
		return nil, false
	}
	i++
	v := i
	for ; i < len(line) && i-v < 3 && '0' <= line[i] && line[i] <= '9'; i++ {
	}
	if i == v || line[v] == '0' || i >= len(line) || line[i] != ' ' {
		return nil, false
	}
	i++
	// TIMESTAMP HOSTNAME APP-NAME PROCID MSGID
	for f := 0; f < 5; f++ {
		start := i
		for i < len(line) && line[i] > ' ' && line[i] < 0x7f {
			i++
		}
		if i == start || i >= len(line) || line[i] != ' ' {
			return nil, false
		}
		i++
	}
	switch {
	case i >= len(line):
		return nil, false
	case line[i] == '-':
		i++
	case line[i] == '[':
		for i < len(line) && line[i] == '[' {
			n, ok := skipSDElement(line, i)
			if !ok {
				return nil, false
			}
			i = n
		}
	default:
		return nil, false
	}
	if i == len(line) {
		return line[i:], true
	}
	if line[i] != ' ' {
		return nil, false
	}
	msg := line[i+1:]
	if len(msg) >= 3 && msg[0] == 0xef && msg[1] == 0xbb && msg[2] == 0xbf {
		msg = msg[3:]
	}
	return msg, true
}

// skipSDElement returns the index after the structured-data element that
// starts at line[i] == '['.
func skipSDElement(line []byte, i int) (int, bool) {
	inValue := false
	for i++; i < len(line); i++ {
		switch c := line[i]; {
		case inValue && c == '\\':
			i++ // the escaped byte
		case c == '"':
			inValue = !inValue
		case !inValue && c == ']':
			return i + 1, true
		}
	}
	return 0, false
}
