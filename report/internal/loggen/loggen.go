// Package loggen writes large, realistic authgate logs for benchmarks
// and tests: auth and ws_close events as zerolog writes them, from a few
// thousand users over some days, a legacy client population that shrinks
// over time, lines of other programs and garbage, and lines with a log
// collector's timestamp prefix. With Instances set, the lines come from
// several instances, each with its instance field, start and stop events
// and holes (lines a log drain dropped, a crash, a restart), into one
// merged log or one file per instance.
package loggen

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
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
	// Instances are the instances writing the log; the alive ones take
	// turns. None: lines without an instance field, as authgate wrote
	// before it had one. With instances, the log ends at Start + Days
	// and Size sets how many lines it has there, not its size.
	Instances []Instance
	// Outputs, when set, takes each instance's lines (and its start and
	// stop events) to its own writer, keyed by name, as a per-instance log
	// file; lines of other programs and of instances not in it go to w.
	Outputs map[string]io.Writer
}

// Instance is one authgate process in the log.
type Instance struct {
	Name string // the instance field; "" writes none
	// From and To bound its lines: [From, To); zero means the log's start
	// and end.
	From, To time.Time
	// Start and Stop write its start event (after a config event) at From
	// and its stop event at To.
	Start, Stop bool
	Holes       []Hole
}

// Hole is a stretch in which an instance's lines are missing.
type Hole struct {
	From, To time.Time
	// Stop writes a stop event at From: the instance was shut down.
	Stop bool
	// Start writes a start event at To: it came back. Without Stop this
	// is a crash and a restart; with neither, a log drain dropped lines.
	Start bool
}

func (in *Instance) alive(t time.Time) bool {
	if (!in.From.IsZero() && t.Before(in.From)) || (!in.To.IsZero() && !t.Before(in.To)) {
		return false
	}
	for _, h := range in.Holes {
		if !t.Before(h.From) && t.Before(h.To) {
			return false
		}
	}
	return true
}

// lifecycleLine is a start, stop or config event to write at its time.
type lifecycleLine struct {
	at   time.Time
	inst string
	ev   string
}

// Stats counts what was written.
type Stats struct {
	Bytes, Lines, Auth, UUID int64
	// UUIDPlain counts uuid auth events on lines without a prefix: what a
	// tool that needs the line to be exactly one JSON object (jq) can see.
	UUIDPlain int64
	// Dropped counts event lines not written because no instance was
	// alive (Instances' From, To and Holes).
	Dropped int64
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
	avgLine := int64(445) // bytes, measured on this generator's output
	if len(c.Instances) > 0 {
		// The instance field on nine lines in ten.
		var names int64
		for _, in := range c.Instances {
			names += int64(len(in.Name))
		}
		avgLine += (int64(len(`,"instance":""`)) + names/int64(len(c.Instances))) * 9 / 10
	}
	total := c.Size / avgLine
	span := time.Duration(c.Days) * 24 * time.Hour
	step := span / time.Duration(max(total, 1))

	bw := bufio.NewWriterSize(w, 1<<20)
	outs := make(map[string]*bufio.Writer, len(c.Outputs))
	for name, ow := range c.Outputs {
		outs[name] = bufio.NewWriterSize(ow, 64<<10)
	}
	out := func(inst string) *bufio.Writer {
		if o := outs[inst]; o != nil {
			return o
		}
		return bw
	}
	end := c.Start.Add(span)
	var life []lifecycleLine
	for _, in := range c.Instances {
		from, to := in.From, in.To
		if from.IsZero() {
			from = c.Start
		}
		if to.IsZero() {
			to = end
		}
		if in.Start {
			life = append(life, lifecycleLine{from, in.Name, event.Config}, lifecycleLine{from, in.Name, event.Start})
		}
		if in.Stop {
			life = append(life, lifecycleLine{to, in.Name, event.Stop})
		}
		for _, h := range in.Holes {
			if h.Stop {
				life = append(life, lifecycleLine{h.From, in.Name, event.Stop})
			}
			if h.Start {
				life = append(life, lifecycleLine{h.To, in.Name, event.Config}, lifecycleLine{h.To, in.Name, event.Start})
			}
		}
	}
	slices.SortStableFunc(life, func(x, y lifecycleLine) int { return x.at.Compare(y.at) })

	var st Stats
	var line []byte
	var reqID uint64
	var alive []*Instance
	write := func(o *bufio.Writer, line []byte) error {
		n, err := o.Write(line)
		st.Bytes += int64(n)
		st.Lines++
		return err
	}
	// Without instances the log ends at Size; with them at the span's end,
	// so that their last events are written (Size then sets the density).
	for slot := int64(0); st.Bytes < c.Size || len(c.Instances) > 0; slot++ {
		t := c.Start.Add(time.Duration(slot) * step)
		if len(c.Instances) > 0 {
			for len(life) > 0 && !life[0].at.After(t) {
				if err := write(out(life[0].inst), appendLifecycle(line[:0], life[0])); err != nil {
					return st, err
				}
				life = life[1:]
			}
			if !t.Before(end) {
				break
			}
		}
		line = line[:0]
		prefixed := rng.IntN(100) < c.PrefixPct
		if prefixed {
			line = t.AppendFormat(line, time.RFC3339Nano)
			line = append(line, ' ')
		}
		o := bw
		r := rng.IntN(100)
		var inst string
		if r >= c.GarbagePct && len(c.Instances) > 0 {
			alive = alive[:0]
			for i := range c.Instances {
				if c.Instances[i].alive(t) {
					alive = append(alive, &c.Instances[i])
				}
			}
			if len(alive) == 0 {
				st.Dropped++
				continue
			}
			inst = alive[slot%int64(len(alive))].Name
			o = out(inst)
		}
		switch {
		case r < c.GarbagePct:
			line = append(line, garbage[rng.IntN(len(garbage))]...)
		case r < c.GarbagePct+6:
			line = appendClose(line, rng, users, t, inst)
		default:
			// The legacy population shrinks linearly to a tenth over the span.
			progress := float64(t.Sub(c.Start)) / float64(span)
			u := rng.IntN(len(users))
			legacyUser := u*100 < c.LegacyShare*len(users)
			legacy := legacyUser && rng.Float64() > progress*0.9
			reqID++
			line = appendAuth(line, rng, users[u], u, legacy, t, reqID, inst)
			st.Auth++
			if legacy {
				st.UUID++
				if !prefixed {
					st.UUIDPlain++
				}
			}
		}
		line = append(line, '\n')
		if err := write(o, line); err != nil {
			return st, err
		}
	}
	for _, o := range outs {
		if err := o.Flush(); err != nil {
			return st, err
		}
	}
	return st, bw.Flush()
}

func appendInstance(b []byte, inst string) []byte {
	if inst == "" {
		return b
	}
	return appendStr(b, event.FieldInstance, inst)
}

func appendLifecycle(b []byte, l lifecycleLine) []byte {
	b = append(b, `{"level":"info"`...)
	b = appendInstance(b, l.inst)
	b = appendStr(b, event.FieldEvent, l.ev)
	msg := "authgate started"
	switch l.ev {
	case event.Config:
		b = appendStr(b, event.FieldResult, "loaded")
		msg = "config loaded"
	case event.Stop:
		b = appendInt(b, "websockets_closed", 3)
		msg = "authgate stopped"
	default:
		b = appendStr(b, "listen", ":8080")
	}
	b = append(b, `,"time":"`...)
	b = l.at.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","message":"`...)
	b = append(b, msg...)
	return append(b, "\"}\n"...)
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

func appendAuth(b []byte, rng *rand.Rand, user string, u int, legacy bool, t time.Time, reqID uint64, inst string) []byte {
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
	b = appendInstance(b, inst)
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

func appendClose(b []byte, rng *rand.Rand, users []string, t time.Time, inst string) []byte {
	b = append(b, `{"level":"info"`...)
	b = appendInstance(b, inst)
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
