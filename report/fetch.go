package report

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"authgate/report/renderapi"
)

// renderRetention is what Render keeps of a service's logs, by plan.
const renderRetention = "Render keeps logs 7 days on Hobby, 14 on Professional, 30 on Organization and Enterprise; " +
	"older logs are only in a --save file or a log stream"

// renderMaxRetention is the longest: the default start of a fetch
// without --since.
const renderMaxRetention = 30 * 24 * time.Hour

// fetchRender reads a Render service's app logs for the window into agg
// as one input, and appends each page to save when it is not nil. It
// prints progress to stderr: a bar when stderr is a terminal, else a line
// every few pages.
func (o Options) fetchRender(ctx context.Context, agg *Aggregator, c *renderapi.Client, serviceID string,
	start, end time.Time, save *os.File, stderr io.Writer) error {
	owner, err := c.Owner(ctx, serviceID)
	switch {
	case errors.Is(err, renderapi.ErrKey):
		return fmt.Errorf("Render refused RENDER_API_KEY for service %s (%v): check the key, and that its account can see the service", serviceID, err)
	case errors.Is(err, renderapi.ErrNotFound):
		return fmt.Errorf("no Render service %s for this RENDER_API_KEY (%v): check the service id (srv-...) in the dashboard's URL", serviceID, err)
	case err != nil:
		return fmt.Errorf("looking up service %s: %w", serviceID, err)
	}
	p := newProgress(stderr, o.terminal(stderr), serviceID, start, end)
	in := Input{Name: "render:" + serviceID, Warnings: []string{}}
	before, formats := agg.lines.Read, agg.lines.ByFormat
	defer func() {
		in.Lines = agg.lines.Read - before
		in.ByFormat = agg.lines.ByFormat.minus(formats)
		agg.inputs = append(agg.inputs, in)
	}()
	err = c.Logs(ctx, renderapi.Query{OwnerID: owner, Resource: serviceID, Start: start, End: end}, func(pg *renderapi.Page) error {
		if save != nil && len(pg.Logs) > 0 {
			b, err := json.Marshal(pg)
			if err != nil {
				return err
			}
			if _, err := save.Write(append(b, '\n')); err != nil {
				return fmt.Errorf("--save %s: %w", save.Name(), err)
			}
		}
		for i := range pg.Logs {
			agg.apiLog(&pg.Logs[i])
		}
		p.page(pg)
		return nil
	})
	p.done()
	if err != nil {
		how := p.sofar()
		if save != nil {
			how += ", saved in " + save.Name()
		}
		if errors.Is(err, renderapi.ErrKey) {
			return fmt.Errorf("Render refused RENDER_API_KEY reading the logs of %s (%v); %s", serviceID, err, how)
		}
		return fmt.Errorf("fetching the logs of %s: %w; %s", serviceID, err, how)
	}
	return nil
}

// apiLog folds one log fetched from the API.
func (a *Aggregator) apiLog(l *renderapi.Log) {
	a.lines.ByFormat.RenderAPI++
	var instance []byte
	for _, lb := range l.Labels {
		if lb.Name == "instance" && lb.Value != "" {
			instance = []byte(lb.Value)
		}
	}
	line := []byte(strings.TrimRight(l.Message, "\r\n"))
	if len(line) > maxLineLength {
		a.lines.Read++
		a.lines.SkippedBy.TooLong++
		return
	}
	a.recordLine(line, instance)
}

// terminal reports whether w is a terminal (a bar, not lines).
func (o Options) terminal(w io.Writer) bool {
	if o.Terminal != nil {
		return o.Terminal(w)
	}
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// progress reports a fetch on stderr.
type progress struct {
	w             io.Writer
	bar           bool
	service       string
	start, end    time.Time
	records       int64
	pages         int
	first, latest time.Time
	lastLine      time.Time
}

func newProgress(w io.Writer, bar bool, service string, start, end time.Time) *progress {
	fmt.Fprintf(w, "render: fetching the app logs of %s from %s to %s\n", service,
		start.UTC().Format(time.RFC3339), end.UTC().Format(time.RFC3339))
	return &progress{w: w, bar: bar, service: service, start: start, end: end, lastLine: time.Now()}
}

func (p *progress) page(pg *renderapi.Page) {
	p.pages++
	for _, l := range pg.Logs {
		p.records++
		if p.first.IsZero() || l.Timestamp.Before(p.first) {
			p.first = l.Timestamp
		}
		if l.Timestamp.After(p.latest) {
			p.latest = l.Timestamp
		}
	}
	switch {
	case p.bar:
		const width = 30
		n := int(p.share() * width)
		fmt.Fprintf(p.w, "\rrender: [%s%s] %3.0f%% %d records", strings.Repeat("#", n), strings.Repeat(" ", width-n),
			100*p.share(), p.records)
	case time.Since(p.lastLine) >= 5*time.Second:
		fmt.Fprintf(p.w, "render: %s\n", p.sofar())
		p.lastLine = time.Now()
	}
}

// share is the part of the window fetched.
func (p *progress) share() float64 {
	if p.latest.IsZero() || !p.end.After(p.start) {
		return 0
	}
	return min(1, max(0, float64(p.latest.Sub(p.start))/float64(p.end.Sub(p.start))))
}

// sofar says how far the fetch got.
func (p *progress) sofar() string {
	if p.records == 0 {
		return fmt.Sprintf("no records fetched (%d pages)", p.pages)
	}
	return fmt.Sprintf("%d records in %d pages, %s to %s (%.0f%% of the window)", p.records, p.pages,
		p.first.UTC().Format(time.RFC3339), p.latest.UTC().Format(time.RFC3339), 100*p.share())
}

func (p *progress) done() {
	if p.bar {
		fmt.Fprintln(p.w)
	}
	fmt.Fprintf(p.w, "render: %s\n", p.sofar())
}
