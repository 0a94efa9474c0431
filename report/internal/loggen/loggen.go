// Package loggen writes large, realistic authgate logs for benchmarks:
// auth and ws_close events as zerolog writes them, from a few thousand
// users over some days, a legacy client population that shrinks over
// time, lines of other programs and garbage, and lines with a log
// collector's timestamp prefix.
package loggen

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"time"

	"authgate/event"
)

// Config shapes a generated log. Zero fields take the defaults noted.
type Config struct {
	Size        int64     // bytes to write, approximately; default 1 GiB
	Users       int       // distinct users; default 3000
	Days        int       // days covered; default 30
	Start       time.Time // first event; default 2025-07-03T00:00:00Z
	GarbagePct  int       // lines of other programs and garbage, percent; default 10
	PrefixPct   int       // lines with a collector's timestamp prefix, percent; default 5
	LegacyShare int       // users still on a legacy client at the start, percent; default 15
	Seed        uint64
}

// Stats counts what was written.
type Stats struct {
	Bytes, Lines, Auth, UUID int64
	// UUIDPlain counts uuid auth events on lines without a prefix: what a
	// tool that needs the line to be exactly one JSON object (jq) can see.
	UUIDPlain int64
}

var userAgents = []string{
	"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/138.0.0.0 Safari/537.36",
	"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.5 Safari/605.1.15",
	"Mozilla/5.0 (X11; Linux x86_64; rv:141.0) Gecko/20100101 Firefox/141.0",
	"Mozilla/5.0 (iPhone; CPU iPhone OS 18_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.5 Mobile/15E148 Safari/604.1",
	"pam-app/2.4.0 (Android 15; Pixel 8) okhttp/4.12.0",
	"pam-app/2.4.1 (iOS 18.5; iPhone15,2) CFNetwork/1568",
}

var legacyAgents = []string{
	"pam-app/1.9.3 (Android 13; SM-A515F) okhttp/4.9.0",
	"pam-app/1.9.7 (iOS 16.7; iPhone12,8) CFNetwork/1410",
	"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36 PamWeb/1.8.2",
	`pam-cli/0.4 (build \"legacy\" \u00e9dition)`,
	"python-requests/2.31.0",
}

var origins = []string{"https://app.example.com", "https://staging.example.com", ""}

var garbage = []string{
	`INFO:     10.0.0.3:51234 - "GET /healthz HTTP/1.1" 200 OK`,
	`Traceback (most recent call last):`,
	`  File "/app/main.py", line 42, in websocket_endpoint`,
	`{"level":30,"time":1722600000000,"pid":7,"hostname":"web-1","msg":"request completed","responseTime":3}`,
	`10.0.0.7 - - [02/Aug/2025:10:00:00 +0000] "GET /api/v1/items HTTP/1.1" 200 512 "-" "curl/8.5.0"`,
	`==> Deploying... build 7f3c2e1`,
	`{"event":"metrics","level":"debug","ts":"2025-08-02T10:00:00Z","heap":123456}`,
	``,
}

// Write writes a log shaped by c to w.
func Write(w io.Writer, c Config) (Stats, error) {
	if c.Size == 0 {
		c.Size = 1 << 30
	}
	if c.Users == 0 {
		c.Users = 3000
	}
	if c.Days == 0 {
		c.Days = 30
	}
	if c.Start.IsZero() {
		c.Start = time.Date(2025, 7, 3, 0, 0, 0, 0, time.UTC)
	}
	if c.GarbagePct == 0 {
		c.GarbagePct = 10
	}
	if c.PrefixPct == 0 {
		c.PrefixPct = 5
	}
	if c.LegacyShare == 0 {
		c.LegacyShare = 15
	}
	rng := rand.New(rand.NewPCG(c.Seed, 0x5eed))
	users := make([]string, c.Users)
	for i := range users {
		users[i] = fmt.Sprintf("%08x-%04x-4%03x-%04x-%012x", rng.Uint32(), rng.Uint32()&0xffff,
			rng.Uint32()&0xfff, 0x8000|rng.Uint32()&0x3fff, rng.Uint64()&0xffffffffffff)
	}
	const avgLine = 445 // bytes, measured on this generator's output
	total := c.Size / avgLine
	span := time.Duration(c.Days) * 24 * time.Hour
	step := span / time.Duration(max(total, 1))

	bw := bufio.NewWriterSize(w, 1<<20)
	var st Stats
	var line []byte
	var reqID uint64
	for st.Bytes < c.Size {
		t := c.Start.Add(time.Duration(st.Lines) * step)
		line = line[:0]
		prefixed := rng.IntN(100) < c.PrefixPct
		if prefixed {
			line = t.AppendFormat(line, time.RFC3339Nano)
			line = append(line, ' ')
		}
		switch r := rng.IntN(100); {
		case r < c.GarbagePct:
			line = append(line, garbage[rng.IntN(len(garbage))]...)
		case r < c.GarbagePct+6:
			line = appendClose(line, rng, users, t)
		default:
			// The legacy population shrinks linearly to a tenth over the span.
			progress := float64(t.Sub(c.Start)) / float64(span)
			u := rng.IntN(len(users))
			legacyUser := u*100 < c.LegacyShare*len(users)
			legacy := legacyUser && rng.Float64() > progress*0.9
			reqID++
			line = appendAuth(line, rng, users[u], u, legacy, t, reqID)
			st.Auth++
			if legacy {
				st.UUID++
				if !prefixed {
					st.UUIDPlain++
				}
			}
		}
		line = append(line, '\n')
		n, err := bw.Write(line)
		st.Bytes += int64(n)
		st.Lines++
		if err != nil {
			return st, err
		}
	}
	return st, bw.Flush()
}

func appendStr(b []byte, key, val string) []byte {
	b = append(b, ',', '"')
	b = append(b, key...)
	b = append(b, '"', ':', '"')
	b = append(b, val...) // values are written pre-escaped
	return append(b, '"')
}

func appendInt(b []byte, key string, v int64) []byte {
	b = append(b, ',', '"')
	b = append(b, key...)
	b = append(b, '"', ':')
	return strconv.AppendInt(b, v, 10)
}

func appendAuth(b []byte, rng *rand.Rand, user string, u int, legacy bool, t time.Time, reqID uint64) []byte {
	class, action, reason, level := event.ClassJWT, event.ActionPass, "verified", "info"
	source := "query:token"
	ua := userAgents[u%len(userAgents)]
	var would string
	var closeCode int64
	switch r := rng.IntN(100); {
	case legacy:
		class, level, ua = event.ClassUUID, "warn", legacyAgents[u%len(legacyAgents)]
		switch r2 := rng.IntN(10); {
		case r2 < 6:
			action, reason = event.ActionRewrite, "legacy uuid rewritten"
		case r2 < 8:
			action, reason, would = event.ActionRewrite, "dry run: would reject", event.ActionReject
		default:
			action, reason, closeCode = event.ActionReject, "legacy authentication no longer accepted", 4003
		}
	case r < 4:
		class, action, reason, level, closeCode = event.ClassJWTExpired, event.ActionReject, "token expired", "warn", 4002
	case r < 6:
		class, action, reason, level, closeCode, source = event.ClassMissing, event.ActionReject, "authentication required", "warn", 4001, ""
	case r < 7:
		class, action, reason, level, closeCode = event.ClassMalformed, event.ActionReject, "invalid token", "warn", 4001
	}
	b = append(b, `{"level":"`...)
	b = append(b, level...)
	b = append(b, '"')
	b = appendStr(b, event.FieldEvent, event.Auth)
	route, transport, path := "pam-ws", event.TransportWebSocket, "/api/v1/pam/ws"
	if u%5 == 0 {
		route, transport, path = "api", event.TransportHTTP, "/api/v1/items"
	}
	b = appendStr(b, event.FieldRoute, route)
	b = appendStr(b, event.FieldTransport, transport)
	b = appendStr(b, event.FieldClass, class)
	b = appendStr(b, event.FieldAction, action)
	if would != "" {
		b = appendStr(b, event.FieldWould, would)
	}
	b = appendInt(b, event.FieldStage, int64(rng.IntN(3)))
	b = appendStr(b, event.FieldReason, reason)
	if class != event.ClassMissing && class != event.ClassMalformed {
		b = appendStr(b, event.FieldUser, user)
	}
	if source != "" {
		b = appendStr(b, event.FieldSource, source)
	}
	b = append(b, `,"verified":`...)
	b = strconv.AppendBool(b, class == event.ClassJWT)
	b = appendStr(b, event.FieldClientIP, fmt.Sprintf("203.0.113.%d", u%250))
	if o := origins[u%len(origins)]; o != "" {
		b = appendStr(b, event.FieldOrigin, o)
	}
	b = appendStr(b, event.FieldUserAgent, ua)
	b = appendStr(b, event.FieldPath, path)
	b = appendStr(b, event.FieldRequestID, fmt.Sprintf("%016x", reqID))
	if closeCode != 0 {
		b = appendInt(b, event.FieldCloseCode, closeCode)
	}
	b = append(b, `,"time":"`...)
	b = t.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","message":"auth decision"}`...)
	return b
}

func appendClose(b []byte, rng *rand.Rand, users []string, t time.Time) []byte {
	b = append(b, `{"level":"info"`...)
	b = appendStr(b, event.FieldEvent, event.WSClose)
	b = appendStr(b, event.FieldRoute, "pam-ws")
	b = appendStr(b, event.FieldUser, users[rng.IntN(len(users))])
	b = appendInt(b, event.FieldDurationMS, rng.Int64N(3_600_000))
	b = appendInt(b, event.FieldBytesIn, rng.Int64N(1<<20))
	b = appendInt(b, event.FieldBytesOut, rng.Int64N(1<<22))
	b = appendInt(b, event.FieldCloseCode, 1000)
	b = appendStr(b, event.FieldClosedBy, "client")
	b = append(b, `,"time":"`...)
	b = t.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","message":"websocket closed"}`...)
	return b
}
