package report

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"time"

	"authgate/report/renderapi"
)

// Options are the parts of a run that do not come from flags.
type Options struct {
	// Now returns the current time: the window's end when --until is not
	// given, and the base of --since DUR. Nil means time.Now; tests set a
	// fixed clock so their output is deterministic.
	Now func() time.Time
	// Getenv reads RENDER_API_KEY and RENDER_API_URL; nil is os.Getenv.
	Getenv func(string) string
	// Terminal tells whether stderr is a terminal (a progress bar);
	// nil checks for a character device.
	Terminal func(io.Writer) bool
	// RenderClient, when set, adjusts the API client before --render
	// uses it (tests shorten its waits).
	RenderClient func(*renderapi.Client)
}

// Command runs `authgate report` with args (the arguments after
// "report") and returns the process exit status: 0 safe, 1 not_safe,
// 2 insufficient_data, 3 usage or read error.
func Command(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return Options{}.Command(args, stdin, stdout, stderr)
}

const usageText = `usage: authgate report [flags] [FILE...]
       authgate report --render SERVICE_ID [--save FILE] [flags] [FILE...]

Reads authgate's JSON log lines from FILEs, plain or gzip (told apart by
content), or from stdin when there is no FILE (and no --render) or FILE is
"-". Files of several instances are merged, in any order. Lines with a
prefix before the JSON object (a log collector's timestamp) are read; other
lines are skipped and counted. Render's shapes are read as they come,
told apart by content: ` + "`render logs -o json`" + ` and ` + "`-o text`" + ` output, pages of
its API's GET /v1/logs (as --save writes them), and RFC 5424 lines of a log
stream. Prints who still uses the legacy UUID path, and whether it can be
deleted.

flags:
  --since DUR|TIME   start of the window: a duration before the window's end
                     (7d, 36h, 1d12h) or a time (RFC 3339, or YYYY-MM-DD for
                     midnight UTC); default: the start of the logs
  --until TIME       end of the window, exclusive; default: now
  --route NAME       only auth events of this route
  --format FORMAT    text (default), json, csv or html
  --users            with --format csv: one row per legacy user instead of per day
  --coverage         with --format csv: one row per instance (its log coverage)
  --quiet-for DUR    how long before the window's end legacy use must have
                     stopped for the verdict safe (default 7d)
  --max-gap DUR      the longest silence of an instance inside the quiet
                     period that is not a hole in the logs (default 6h)
  --render ID        also fetch the window's app logs of Render service ID
                     (srv-...) from Render's API: RENDER_API_KEY (required),
                     RENDER_API_URL (default https://api.render.com/v1);
                     without --since, the last 30 days (Render keeps 7 days
                     on Hobby, 14 on Professional, 30 on Organization and
                     Enterprise). Progress goes to stderr.
  --save FILE        with --render: append what was fetched to FILE (pages
                     of the API, which this command reads), so a later
                     report can reach past Render's retention

coverage (why the verdict may be insufficient_data with traffic present):
  Every authgate line (any event, any route) is presence of its instance,
  the "instance" field (lines without one, from older versions, are one
  unnamed instance). Lines are ordered by time whatever the order of files.
  Inside the quiet period, for each instance:
  - a silence between two of its lines longer than --max-gap is a hole,
    unless it begins after the instance logged stop (a later start resumes
    it); a restart after a crash logs start without a stop: a hole;
  - after its last line, a silence to the window's end longer than
    --max-gap is a hole unless it logged stop;
  - before its first line in the period, a silence from the period's start
    longer than --max-gap is a hole, unless it had logged stop before the
    period, or it is new (no earlier lines) and logged start before serving:
    a deploy or scale-up, covered by the instances before it.
  Across instances, a stretch longer than --max-gap in which no instance
  logged anything is a hole too (all had stopped). Idle instances log
  nothing either: for a service without traffic at night, raise --max-gap.

verdict and exit status:
  0 safe               no legacy use in the quiet period, traffic in it, and
                       logs that cover it
  1 not_safe           legacy use in the quiet period
  2 insufficient_data  no traffic in the quiet period, the logs begin after
                       it, or they have a hole (the reason names the
                       instance and the gap)
  3                    usage or read error
`

// Command is Command with these options.
func (o Options) Command(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	fs := flag.NewFlagSet("authgate report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {} // printed below, to stdout for -h and stderr for errors
	since := fs.String("since", "", "start of the window: DUR before its end, or TIME")
	until := fs.String("until", "", "end of the window (exclusive): TIME; default now")
	route := fs.String("route", "", "only this route")
	format := fs.String("format", "text", "text, json, csv or html")
	users := fs.Bool("users", false, "with --format csv: one row per legacy user")
	coverage := fs.Bool("coverage", false, "with --format csv: one row per instance")
	quietFor := fs.String("quiet-for", "7d", "quiet period before the window's end")
	maxGap := fs.String("max-gap", "6h", "longest silence of an instance that is not a hole")
	renderSvc := fs.String("render", "", "fetch this Render service's app logs")
	saveFile := fs.String("save", "", "with --render: append the fetched logs to this file")

	files, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		io.WriteString(stdout, usageText)
		return 0
	}
	usageErr := func(err error) int {
		fmt.Fprintf(stderr, "authgate report: %v\n\n%s", err, usageText)
		return ExitError
	}
	if err != nil {
		// The flag package has printed the error itself.
		fmt.Fprintf(stderr, "\n%s", usageText)
		return ExitError
	}

	q := Query{Route: *route, To: now().UTC()}
	if *until != "" {
		if q.To, err = ParseTime(*until); err != nil {
			return usageErr(fmt.Errorf("--until: %w", err))
		}
	}
	if *since != "" {
		if d, derr := ParseDuration(*since); derr == nil {
			if d <= 0 {
				return usageErr(fmt.Errorf("--since %s: must be positive", *since))
			}
			q.From = q.To.Add(-d)
		} else if q.From, err = ParseTime(*since); err != nil {
			return usageErr(fmt.Errorf("--since: want a duration (7d, 36h) or a time: %w", err))
		}
		if !q.From.Before(q.To) {
			return usageErr(fmt.Errorf("--since %s is not before the window's end %s", *since, q.To.Format(time.RFC3339)))
		}
	}
	if q.QuietFor, err = ParseDuration(*quietFor); err != nil {
		return usageErr(fmt.Errorf("--quiet-for: %w", err))
	}
	if q.QuietFor <= 0 {
		return usageErr(fmt.Errorf("--quiet-for %s: must be positive", *quietFor))
	}
	if q.MaxGap, err = ParseDuration(*maxGap); err != nil {
		return usageErr(fmt.Errorf("--max-gap: %w", err))
	}
	if q.MaxGap <= 0 {
		return usageErr(fmt.Errorf("--max-gap %s: must be positive (a silence of any length would be a hole)", *maxGap))
	}
	switch *format {
	case "text", "json", "csv", "html":
	default:
		return usageErr(fmt.Errorf("--format %q: want text, json, csv or html", *format))
	}
	if *users && *format != "csv" {
		return usageErr(errors.New("--users applies to --format csv only"))
	}
	if *coverage && *format != "csv" {
		return usageErr(errors.New("--coverage applies to --format csv only"))
	}
	if *users && *coverage {
		return usageErr(errors.New("--users and --coverage: choose one CSV"))
	}
	if *saveFile != "" && *renderSvc == "" {
		return usageErr(errors.New("--save applies to --render only"))
	}
	getenv := os.Getenv
	if o.Getenv != nil {
		getenv = o.Getenv
	}
	var client *renderapi.Client
	if *renderSvc != "" {
		key := getenv("RENDER_API_KEY")
		if key == "" {
			fmt.Fprintf(stderr, "authgate report: --render %s needs RENDER_API_KEY: a Render API key (Account Settings, API Keys)\n", *renderSvc)
			return ExitError
		}
		base := getenv("RENDER_API_URL")
		if err := checkAPIURL(base); err != nil {
			fmt.Fprintf(stderr, "authgate report: RENDER_API_URL %q: %v\n", base, err)
			return ExitError
		}
		client = &renderapi.Client{BaseURL: base, Key: key,
			OnWait: func(d time.Duration, why string) {
				fmt.Fprintf(stderr, "render: %s: waiting %s\n", why, d.Round(time.Millisecond))
			}}
		if o.RenderClient != nil {
			o.RenderClient(client)
		}
	}

	// Open every file before reading any, so a typo fails at once.
	type input struct {
		name string
		r    io.Reader
		f    *os.File // nil for stdin, which is not ours to close
	}
	var inputs []input
	if len(files) == 0 && *renderSvc == "" {
		files = []string{"-"}
	}
	for _, name := range files {
		if name == "-" {
			inputs = append(inputs, input{"stdin", stdin, nil})
			continue
		}
		f, err := os.Open(name)
		if err != nil {
			fmt.Fprintf(stderr, "authgate report: %v\n", err)
			return ExitError
		}
		defer f.Close()
		inputs = append(inputs, input{name, f, f})
	}

	// The --save file too, before any request.
	var save *os.File
	if *saveFile != "" {
		if save, err = os.OpenFile(*saveFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600); err != nil {
			fmt.Fprintf(stderr, "authgate report: --save: %v\n", err)
			return ExitError
		}
		defer save.Close()
	}

	agg := NewAggregator(q)
	for _, in := range inputs {
		err := agg.ReadFrom(in.name, in.r)
		if in.f != nil {
			in.f.Close()
		}
		if err != nil {
			fmt.Fprintf(stderr, "authgate report: %v\n", err)
			return ExitError
		}
	}
	if client != nil {
		start := q.From
		if start.IsZero() {
			start = q.To.Add(-renderMaxRetention)
		}
		if err := o.fetchRender(context.Background(), agg, client, *renderSvc, start, q.To, save, stderr); err != nil {
			fmt.Fprintf(stderr, "authgate report: --render: %v\n", err)
			return ExitError
		}
		if save != nil {
			if err := save.Close(); err != nil {
				fmt.Fprintf(stderr, "authgate report: --save: %v\n", err)
				return ExitError
			}
		}
	}
	rep := agg.Report()
	for _, in := range rep.Inputs {
		for _, w := range in.Warnings {
			fmt.Fprintf(stderr, "authgate report: warning: %s\n", w)
		}
	}
	if client != nil && rep.Verdict.Status == StatusInsufficientData && logsBeginLate(rep) {
		rep.Verdict.Reason += " (" + renderRetention + ")"
	}

	bw := bufio.NewWriterSize(stdout, 64<<10)
	switch {
	case *format == "json":
		err = rep.WriteJSON(bw)
	case *format == "csv" && *users:
		err = rep.WriteUsersCSV(bw)
	case *format == "csv" && *coverage:
		err = rep.WriteCoverageCSV(bw)
	case *format == "csv":
		err = rep.WriteCSV(bw)
	case *format == "html":
		err = rep.WriteHTML(bw)
	default:
		err = rep.WriteText(bw)
	}
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		fmt.Fprintf(stderr, "authgate report: writing report: %v\n", err)
		return ExitError
	}
	return rep.Verdict.ExitCode
}

// checkAPIURL refuses a RENDER_API_URL the key must not be sent to: not
// https, unless it is on loopback (a stand-in for tests).
func checkAPIURL(base string) error {
	if base == "" {
		return nil
	}
	u, err := url.Parse(base)
	if err != nil {
		return err
	}
	switch {
	case u.Scheme == "https" && u.Host != "":
		return nil
	case u.Scheme == "http":
		if ip := net.ParseIP(u.Hostname()); (ip != nil && ip.IsLoopback()) || u.Hostname() == "localhost" {
			return nil
		}
		return errors.New("plain http would send RENDER_API_KEY in the clear: use https (http only on loopback)")
	}
	return errors.New("want an https URL, like https://api.render.com/v1")
}

// logsBeginLate reports whether the logs begin after the start of the
// quiet period (by more than the tenth the verdict allows): what a window
// older than Render's retention looks like.
func logsBeginLate(r *Report) bool {
	v := r.Verdict
	return r.Window.FirstEvent == nil ||
		float64(r.Window.FirstEvent.Sub(v.QuietFrom)) > (1-minCoverage)*float64(r.Window.To.Sub(v.QuietFrom))
}

// parseInterspersed parses flags that may follow file names, as in
// `authgate report a.log --format json`; after "--" all are files.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var files []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return files, nil
		}
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			return append(files, rest...), nil
		}
		files = append(files, rest[0])
		args = rest[1:]
	}
}
