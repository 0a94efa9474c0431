package report

import (
	"fmt"
	"html/template"
	"io"
	"strconv"
	"strings"
	"time"
)

// htmlUsers bounds the users table of the page; JSON and CSV list all.
const htmlUsers = 500

// WriteHTML writes one self-contained page: no script, no external
// stylesheet, font or image, so it can be mailed or attached to a ticket
// and opened offline. The per-day chart is inline SVG.
//
// Values from the logs are escaped, and their slashes written as &#47;,
// so the page source holds no URL at all (an origin such as
// https://app.example.com still reads the same in the browser).
func (r *Report) WriteHTML(w io.Writer) error {
	holes := r.Coverage.holes()
	users := r.Users
	if len(users) > htmlUsers {
		users = users[:htmlUsers]
	}
	return pageTemplate.Execute(w, struct {
		R          *Report
		Users      []User
		Chart      chart
		MoreUsers  int
		ByClass    [][]string
		ByAction   [][]string
		ByReason   [][]string
		WouldRows  [][]string
		StatusWord string
		Timeline   timeline
		Holes      []instanceHole
		MoreHoles  int
		Down       []Gap
		Heartbeats int
	}{
		R:          r,
		Users:      users,
		Chart:      newChart(r.Days),
		MoreUsers:  len(r.Users) - len(users),
		ByClass:    mapRows(r.Totals.ByClass),
		ByAction:   mapRows(r.Totals.ByAction),
		ByReason:   mapRows(r.Rejections.ByReason),
		WouldRows:  mapRows(r.Would.ByAction),
		StatusWord: strings.ReplaceAll(r.Verdict.Status, "_", " "),
		Timeline:   newTimeline(&r.Coverage),
		Holes:      holes[:min(htmlHoles, len(holes))],
		MoreHoles:  max(len(holes)-htmlHoles, 0),
		Down:       r.Coverage.downtimes(),
		Heartbeats: heartbeatInstances(&r.Coverage),
	})
}

// Bounds of the coverage part of the page; JSON lists all.
const (
	htmlHoles     = 500
	htmlInstances = 60 // rows of the timeline
)

// timeline is the geometry of the coverage chart: one row per instance
// over the quiet period, its stretches of log in green and its holes in
// red, and a last row for all instances together (red where none logged).
type timeline struct {
	Width, Height int
	Rows          []tlRow
	Ticks         []tlTick
	TickY         float64
	More          int // instances not drawn
}

type tlRow struct {
	Label          string
	Y, TextY       float64
	Present, Holes []tlRect
}

type tlRect struct {
	X, Y, W float64
	Title   string
}

type tlTick struct {
	X      float64
	Label  string
	Anchor string // the ends align inwards, so their labels stay on the page
}

const (
	tlLeft, tlRight  = 190, 10
	tlRowH, tlRowGap = 14, 6
	tlTop            = 6
	tlTicks          = 6
)

func newTimeline(c *Coverage) timeline {
	tl := timeline{Width: chartW}
	from, to := c.From.UnixNano(), c.To.UnixNano()
	plotW := float64(chartW - tlLeft - tlRight)
	x := func(t time.Time) float64 {
		return tlLeft + float64(t.UnixNano()-from)/float64(to-from)*plotW
	}
	y := float64(tlTop)
	rect := func(g Gap, what string) tlRect {
		x0, x1 := x(g.From), x(g.To)
		return tlRect{X: x0, Y: y, W: max(x1-x0, 1), Title: fmt.Sprintf("%s %s .. %s (%s)", what,
			g.From.Format(time.RFC3339), g.To.Format(time.RFC3339), g.Duration)}
	}
	row := func(label string) *tlRow {
		tl.Rows = append(tl.Rows, tlRow{Label: label, Y: y, TextY: y + tlRowH/2})
		return &tl.Rows[len(tl.Rows)-1]
	}
	next := func() { y += tlRowH + tlRowGap }
	ins := c.Instances
	if len(ins) > htmlInstances {
		tl.More = len(ins) - htmlInstances
		ins = ins[:htmlInstances]
	}
	for _, in := range ins {
		r := row(shorten(instanceLabel(in.Name), 28))
		for _, p := range in.present {
			r.Present = append(r.Present, rect(p, "logging"))
		}
		for _, g := range in.Gaps {
			r.Holes = append(r.Holes, rect(g, "hole"))
		}
		next()
	}
	all := row("any instance")
	cursor := c.From
	for _, u := range c.Uncovered {
		if u.From.After(cursor) {
			all.Present = append(all.Present, rect(newGap(cursor.UnixNano(), u.From.UnixNano()), "some instance logging"))
		}
		all.Holes = append(all.Holes, rect(u, "no instance logging"))
		cursor = u.To
	}
	if c.To.After(cursor) {
		all.Present = append(all.Present, rect(newGap(cursor.UnixNano(), to), "some instance logging"))
	}
	next()
	for i := range tlTicks + 1 {
		t := time.Unix(0, from+(to-from)/tlTicks*int64(i)).UTC()
		anchor := "middle"
		switch i {
		case 0:
			anchor = "start"
		case tlTicks:
			anchor = "end"
		}
		tl.Ticks = append(tl.Ticks, tlTick{X: x(t), Label: t.Format("01-02 15:04"), Anchor: anchor})
	}
	tl.TickY = y + 10
	tl.Height = int(y) + 18
	return tl
}

// chart is the geometry of the stacked per-day bar chart.
type chart struct {
	Width, Height int
	Bars          []bar
	Ticks         []tick
	Labels        []label
	Empty         bool
}

type bar struct {
	Title string
	Segs  []seg
}

type seg struct {
	Class      string
	X, Y, W, H float64
}

type tick struct {
	Y     float64
	Label string
}

type label struct {
	X    float64
	Text string
}

const (
	chartW, chartH         = 960, 280
	chartLeft, chartRight  = 56, 10
	chartTop, chartBottom  = 10, 34
	chartPlotW, chartPlotH = chartW - chartLeft - chartRight, chartH - chartTop - chartBottom
	chartMaxLabels         = 12
	chartGapFraction       = 0.15
	chartClassJWT          = "jwt"
	chartClassLegacy       = "legacy"
	chartClassRejected     = "rejected"
	chartClassOther        = "other"
)

// newChart stacks, per day, accepted JWT, accepted legacy, rejected (any
// class) and other accepted requests (missing or malformed tokens passed
// by policy); the four parts add up to the day's requests.
func newChart(days []Day) chart {
	c := chart{Width: chartW, Height: chartH}
	var top int64
	for _, d := range days {
		top = max(top, d.Requests)
	}
	if len(days) == 0 || top == 0 {
		c.Empty = true
		return c
	}
	step := float64(chartPlotW) / float64(len(days))
	scale := float64(chartPlotH) / float64(top)
	for i, d := range days {
		jwt := d.JWT - d.JWTRejected
		legacy := d.Legacy - d.LegacyRejected
		other := d.Requests - jwt - legacy - d.Rejected
		b := bar{Title: fmt.Sprintf("%s: %d requests, %d JWT, %d legacy accepted, %d rejected (%d legacy), %d other",
			d.Day, d.Requests, jwt, legacy, d.Rejected, d.LegacyRejected, other)}
		x := chartLeft + float64(i)*step + step*chartGapFraction/2
		y := float64(chartTop + chartPlotH)
		for _, part := range []struct {
			class string
			n     int64
		}{{chartClassJWT, jwt}, {chartClassLegacy, legacy}, {chartClassRejected, d.Rejected}, {chartClassOther, other}} {
			if part.n <= 0 {
				continue
			}
			h := float64(part.n) * scale
			y -= h
			b.Segs = append(b.Segs, seg{Class: part.class, X: x, Y: y, W: step * (1 - chartGapFraction), H: h})
		}
		c.Bars = append(c.Bars, b)
	}
	for _, f := range []float64{0, 0.5, 1} {
		v := int64(f * float64(top))
		c.Ticks = append(c.Ticks, tick{Y: float64(chartTop+chartPlotH) - float64(v)*scale, Label: strconv.FormatInt(v, 10)})
	}
	every := (len(days) + chartMaxLabels - 1) / chartMaxLabels
	for i := 0; i < len(days); i += every {
		c.Labels = append(c.Labels, label{X: chartLeft + float64(i)*step + step/2, Text: days[i].Day[5:]})
	}
	return c
}

// htmlText escapes s for HTML text and writes slashes as &#47;.
func htmlText(s string) template.HTML {
	return template.HTML(strings.ReplaceAll(template.HTMLEscapeString(s), "/", "&#47;"))
}

var pageTemplate = template.Must(template.New("page").Funcs(template.FuncMap{
	"t": htmlText,
	"none": func(s string) template.HTML {
		if s == "" {
			return "(none)"
		}
		return htmlText(s)
	},
	"ts": func(t time.Time) string { return t.Format(time.RFC3339) },
	"tsp": func(t *time.Time) string {
		if t == nil {
			return "—"
		}
		return t.Format(time.RFC3339)
	},
	"f":    func(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) },
	"list": func(vals []string, overflow int64) template.HTML { return htmlText(listCell(vals, overflow, 1<<20)) },
	"inst": func(name string) template.HTML { return htmlText(instanceLabel(name)) },
	"pl": func(n int, what string) string {
		if n == 1 {
			return "1 " + what
		}
		if strings.HasSuffix(what, "ch") {
			return fmt.Sprintf("%d %ses", n, what)
		}
		return fmt.Sprintf("%d %ss", n, what)
	},
}).Parse(pageHTML))

const pageHTML = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>authgate report: {{.StatusWord}}</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 24px; color: #1d2430; background: #fff; }
h1 { font-size: 20px; margin: 0 0 12px; }
h2 { font-size: 16px; margin: 28px 0 8px; }
.verdict { padding: 14px 18px; border-radius: 6px; border: 1px solid; }
.verdict b { font-size: 18px; text-transform: uppercase; }
.safe { background: #e8f6ec; border-color: #3c9a5f; }
.not_safe { background: #fdecea; border-color: #c0392b; }
.insufficient_data { background: #fff6e0; border-color: #c9922a; }
table { border-collapse: collapse; margin: 4px 0; }
th, td { padding: 3px 10px; border-bottom: 1px solid #e3e6ea; text-align: left; vertical-align: top; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
.ua { max-width: 420px; overflow-wrap: anywhere; }
.meta td:first-child { color: #5b6573; }
svg { max-width: 100%; height: auto; }
svg text { font: 11px system-ui, sans-serif; fill: #5b6573; }
.jwt { fill: #3c9a5f; } .legacy { fill: #e67e22; } .rejected { fill: #c0392b; } .other { fill: #95a5a6; }
.axis { stroke: #c7ccd3; stroke-width: 1; }
.key span { display: inline-block; width: 10px; height: 10px; margin: 0 4px 0 14px; }
.key .jwt { background: #3c9a5f; } .key .legacy { background: #e67e22; }
.key .rejected { background: #c0392b; } .key .other { background: #95a5a6; }
.present { fill: #3c9a5f; } .hole { fill: #c0392b; } .lane { fill: #f1f3f5; }
.key .present { background: #3c9a5f; } .key .hole { background: #c0392b; } .key .lane { background: #f1f3f5; }
</style>
</head>
<body>
<h1>authgate report</h1>
<div class="verdict {{.R.Verdict.Status}}"><b>{{.StatusWord}}</b> (exit {{.R.Verdict.ExitCode}})<br>{{t .R.Verdict.Reason}}</div>

<h2>Summary</h2>
<table class="meta">
<tr><td>window</td><td>{{tsp .R.Window.From}} .. {{ts .R.Window.To}}{{if .R.Window.Route}} (route {{t .R.Window.Route}}){{else}} (all routes){{end}}</td></tr>
<tr><td>quiet period</td><td>{{.R.Verdict.QuietFor}} since {{ts .R.Verdict.QuietFrom}}: {{.R.Verdict.Requests}} requests, {{.R.Verdict.LegacyRequests}} legacy ({{.R.Verdict.LegacyRejected}} rejected) from {{.R.Verdict.LegacyUsers}} users</td></tr>
<tr><td>legacy</td><td>{{.R.Legacy.Requests}} requests from {{.R.Legacy.Users}} users ({{.R.Legacy.Rejected}} rejected, {{.R.Legacy.Anonymous}} without a user id); first {{tsp .R.Legacy.FirstSeen}}, last {{tsp .R.Legacy.LastSeen}}{{if .R.Legacy.LastUser}} ({{t .R.Legacy.LastUser}}){{end}}</td></tr>
<tr><td>lines</td><td>{{.R.Lines.Read}} read: {{.R.Lines.Events}} events, {{.R.Lines.Skipped}} skipped ({{.R.Lines.SkippedBy.NotJSON}} not json, {{.R.Lines.SkippedBy.TooLong}} too long, {{.R.Lines.SkippedBy.OtherProgram}} other programs, {{.R.Lines.SkippedBy.OtherEvent}} other events, {{.R.Lines.SkippedBy.Invalid}} invalid), {{.R.Lines.Filtered}} filtered ({{.R.Lines.FilteredBy.OutOfWindow}} out of window, {{.R.Lines.FilteredBy.OtherRoute}} other route)</td></tr>
<tr><td>inputs</td><td>{{range $i, $in := .R.Inputs}}{{if $i}}, {{end}}{{t $in.Name}} ({{$in.Lines}} lines{{if $in.Gzip}}, gzip{{end}}){{end}}</td></tr>
</table>

<h2>Log coverage of the quiet period</h2>
<p>{{ts .R.Coverage.From}} .. {{ts .R.Coverage.To}}, --max-gap {{.R.Coverage.MaxGap}}: {{pl (len .R.Coverage.Instances) "instance"}}, {{pl .R.Coverage.Holes "hole"}} (silences longer than --max-gap that no stop event explains), {{pl (len .R.Coverage.Uncovered) "stretch"}} in which no instance logged{{if .R.Coverage.UntrackedLines}}, {{.R.Coverage.UntrackedLines}} lines untracked (coverage unknown){{end}}.</p>
<div class="key"><span class="present"></span>logging<span class="hole"></span>hole<span class="lane"></span>silent: stopped, not yet started, or a short silence</div>
<svg viewBox="0 0 {{.Timeline.Width}} {{.Timeline.Height}}" width="{{.Timeline.Width}}" height="{{.Timeline.Height}}" role="img" aria-label="log coverage per instance">
{{range .Timeline.Rows}}<g><text x="184" y="{{f .TextY}}" text-anchor="end" dominant-baseline="middle">{{t .Label}}</text><rect class="lane" x="190" y="{{f .Y}}" width="760" height="14"></rect>
{{range .Present}}<rect class="present" x="{{f .X}}" y="{{f .Y}}" width="{{f .W}}" height="14"><title>{{.Title}}</title></rect>{{end}}{{range .Holes}}<rect class="hole" x="{{f .X}}" y="{{f .Y}}" width="{{f .W}}" height="14"><title>{{.Title}}</title></rect>{{end}}</g>
{{end}}{{range .Timeline.Ticks}}<text x="{{f .X}}" y="{{f $.Timeline.TickY}}" text-anchor="{{.Anchor}}">{{.Label}}</text>
{{end}}</svg>
{{if .Timeline.More}}<p>{{.Timeline.More}} more instances are not drawn; the table lists all.</p>{{end}}
<table>
<tr><th>instance</th><th class="n">lines</th><th class="n">quiet period lines</th><th>first</th><th>last</th><th class="n">starts</th><th class="n">stops</th><th>stopped</th><th class="n">holes</th></tr>
{{range .R.Coverage.Instances}}<tr><td>{{inst .Name}}</td><td class="n">{{.Lines}}</td><td class="n">{{.QuietLines}}</td><td>{{ts .First}}</td><td>{{ts .Last}}</td><td class="n">{{.Starts}}</td><td class="n">{{.Stops}}</td><td>{{.Stopped}}</td><td class="n">{{len .Gaps}}{{if .Truncated}} (truncated){{end}}</td></tr>
{{end}}</table>
{{if .Heartbeats}}<h2>Heartbeats per instance</h2>
<p>Decisions the heartbeats counted, against the lines read: a line counted but missing was lost on the way (a log pipeline dropped it). {{.R.Coverage.LostLines}} decisions without a line{{if .R.Coverage.LostLegacyLines}}, {{.R.Coverage.LostLegacyLines}} of them legacy{{end}}.</p>
<table>
<tr><th>instance</th><th class="n">heartbeats</th><th>interval</th><th>max silence</th><th class="n">decisions counted</th><th class="n">lines missing</th><th class="n">lost legacy</th><th class="n">held (in summaries)</th></tr>
{{range .R.Coverage.Instances}}<tr><td>{{inst .Name}}</td><td class="n">{{.Heartbeats}}</td><td>{{.HeartbeatInterval}}</td><td>{{.MaxSilence}}</td><td class="n">{{.HeartbeatDecisions}}</td><td class="n">{{if .LostUnknown}}unknown{{else}}{{.LostLines}}{{end}}</td><td class="n">{{.LostLegacyLines}}</td><td class="n">{{.HeldLines}}</td></tr>
{{end}}</table>
{{end}}{{if .Holes}}<h2>Holes ({{.R.Coverage.Holes}}{{if .MoreHoles}}, first {{len .Holes}} shown{{end}}, oldest first)</h2>
<table>
<tr><th>instance</th><th>from</th><th>to</th><th>silent for</th></tr>
{{range .Holes}}<tr><td>{{inst .Name}}</td><td>{{ts .Gap.From}}</td><td>{{ts .Gap.To}}</td><td>{{.Gap.Duration}}</td></tr>
{{end}}</table>{{end}}
{{if .Down}}<h2>No instance logging (every instance stopped or not yet started)</h2>
<table>
<tr><th>from</th><th>to</th><th>for</th></tr>
{{range .Down}}<tr><td>{{ts .From}}</td><td>{{ts .To}}</td><td>{{.Duration}}</td></tr>
{{end}}</table>{{end}}

<h2>Requests per day (UTC)</h2>
{{if .Chart.Empty}}<p>No auth events in the window.</p>{{else}}
<div class="key"><span class="jwt"></span>JWT<span class="legacy"></span>legacy (UUID) accepted<span class="rejected"></span>rejected<span class="other"></span>other</div>
<svg viewBox="0 0 {{.Chart.Width}} {{.Chart.Height}}" width="{{.Chart.Width}}" height="{{.Chart.Height}}" role="img" aria-label="requests per day">
{{range .Chart.Ticks}}<line class="axis" x1="56" x2="950" y1="{{f .Y}}" y2="{{f .Y}}"></line><text x="50" y="{{f .Y}}" text-anchor="end" dominant-baseline="middle">{{.Label}}</text>
{{end}}{{range .Chart.Bars}}<g><title>{{.Title}}</title>{{range .Segs}}<rect class="{{.Class}}" x="{{f .X}}" y="{{f .Y}}" width="{{f .W}}" height="{{f .H}}"></rect>{{end}}</g>
{{end}}{{range .Chart.Labels}}<text x="{{f .X}}" y="266" text-anchor="middle">{{.Text}}</text>
{{end}}</svg>{{end}}

<table>
<tr><th>day</th><th class="n">requests</th><th class="n">jwt</th><th class="n">legacy</th><th class="n">legacy users</th><th class="n">legacy rejected</th><th class="n">rejected</th><th class="n">would</th></tr>
{{range .R.Days}}<tr><td>{{.Day}}</td><td class="n">{{.Requests}}</td><td class="n">{{.JWT}}</td><td class="n">{{.Legacy}}</td><td class="n">{{.LegacyUsers}}</td><td class="n">{{.LegacyRejected}}</td><td class="n">{{.Rejected}}</td><td class="n">{{.Would}}</td></tr>
{{end}}</table>

<h2>Legacy users ({{len .R.Users}}{{if .MoreUsers}}, first {{len .Users}} shown{{end}}, most recent first)</h2>
<table>
<tr><th>user</th><th class="n">requests</th><th class="n">rejected</th><th>first seen</th><th>last seen</th><th>user agents</th><th>origins</th><th>routes</th></tr>
{{range .Users}}<tr><td>{{t .User}}</td><td class="n">{{.Requests}}</td><td class="n">{{.Rejected}}</td><td>{{ts .FirstSeen}}</td><td>{{ts .LastSeen}}</td><td class="ua">{{list .UserAgents .UserAgentsOverflow}}</td><td>{{list .Origins .OriginsOverflow}}</td><td>{{list .Routes .RoutesOverflow}}</td></tr>
{{end}}</table>

<h2>Top legacy user agents</h2>
<table>
<tr><th class="n">requests</th><th class="n">users</th><th>user agent</th></tr>
{{range .R.TopUserAgents}}<tr><td class="n">{{.Requests}}</td><td class="n">{{.Users}}</td><td class="ua">{{none .Value}}</td></tr>
{{end}}</table>

<h2>Top legacy origins</h2>
<table>
<tr><th class="n">requests</th><th class="n">users</th><th>origin</th></tr>
{{range .R.TopOrigins}}<tr><td class="n">{{.Requests}}</td><td class="n">{{.Users}}</td><td>{{none .Value}}</td></tr>
{{end}}</table>

<h2>Routes</h2>
<table>
<tr><th>route</th><th class="n">requests</th><th class="n">legacy</th><th class="n">legacy users</th><th class="n">rejected</th></tr>
{{range .R.Routes}}<tr><td>{{none .Route}}</td><td class="n">{{.Requests}}</td><td class="n">{{.Legacy}}</td><td class="n">{{.LegacyUsers}}</td><td class="n">{{.Rejected}}</td></tr>
{{end}}</table>

<h2>Totals</h2>
<table>
<tr><th>class</th><th class="n">requests</th></tr>
{{range .ByClass}}<tr><td>{{t (index . 0)}}</td><td class="n">{{index . 1}}</td></tr>
{{end}}<tr><th>action</th><th class="n">requests</th></tr>
{{range .ByAction}}<tr><td>{{t (index . 0)}}</td><td class="n">{{index . 1}}</td></tr>
{{end}}</table>

<h2>Rejections by reason</h2>
<table>
<tr><th>reason</th><th class="n">requests</th></tr>
{{range .ByReason}}<tr><td>{{t (index . 0)}}</td><td class="n">{{index . 1}}</td></tr>
{{end}}</table>

<h2>Dry run</h2>
<p>{{.R.Would.Requests}} requests would have been decided otherwise ({{.R.Would.LegacyRequests}} legacy, from {{.R.Would.LegacyUsers}} users).</p>
{{if .WouldRows}}<table>
<tr><th>would</th><th class="n">requests</th></tr>
{{range .WouldRows}}<tr><td>{{t (index . 0)}}</td><td class="n">{{index . 1}}</td></tr>
{{end}}</table>{{end}}
</body>
</html>
`
