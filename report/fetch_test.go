package report

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"authgate/report/renderapi"
	"authgate/report/renderapi/renderapitest"
)

const testKey = "rnd_reportTestKey42"

// apiLogs are records as Render's API holds them.
func apiLogs(recs []testRecord) []renderapi.Log {
	var logs []renderapi.Log
	for _, r := range recs {
		l := r.log()
		var labels []renderapi.Label
		for _, lb := range l.Labels {
			labels = append(labels, renderapi.Label{Name: lb.Name, Value: lb.Value})
		}
		logs = append(logs, renderapi.Log{ID: l.ID, Labels: labels, Message: l.Message, Timestamp: l.Timestamp})
	}
	return logs
}

func newTestAPI(t *testing.T, recs []testRecord) *renderapitest.Server {
	api := renderapitest.New(t, testKey)
	api.Services["srv-d1abc"] = "tea-1"
	api.Logs = apiLogs(recs)
	return api
}

// renderCommand runs the report with the stand-in as RENDER_API_URL and
// the client's waits shortened (1ms backoff, 2 retries).
func renderCommand(t *testing.T, api *renderapitest.Server, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	env := map[string]string{"RENDER_API_KEY": testKey, "RENDER_API_URL": api.APIURL()}
	o := Options{
		Getenv:       func(k string) string { return env[k] },
		Terminal:     func(io.Writer) bool { return false },
		RenderClient: func(c *renderapi.Client) { c.Backoff, c.Retries, c.Timeout = time.Millisecond, 2, 2*time.Second },
	}
	var out, errOut bytes.Buffer
	code = o.Command(args, strings.NewReader(""), &out, &errOut)
	return out.String(), errOut.String(), code
}

func TestRenderFetchGivesUp(t *testing.T) {
	_, lines := genLines(t, 512<<10)
	api := newTestAPI(t, toRecords(lines, true))
	save := filepath.Join(t.TempDir(), "saved.pages")
	// Three pages (of the stand-in's 100 logs), then 502s: more than the
	// client's two retries.
	api.FailAfter(3, renderapitest.Fault{Status: http.StatusBadGateway, Body: "bad gateway"},
		renderapitest.Fault{Status: http.StatusServiceUnavailable, Body: "no healthy upstream"},
		renderapitest.Fault{Status: http.StatusBadGateway, Body: "bad gateway"})
	window := []string{"--since", fmtStart.Format(time.RFC3339), "--until", fmtUntil.Format(time.RFC3339)}
	out, errOut, code := renderCommand(t, api, append([]string{"--render", "srv-d1abc", "--save", save}, window...)...)
	if code != ExitError || out != "" {
		t.Errorf("exit %d, stdout %q: want 3 and no report", code, out)
	}
	for _, w := range []string{"/v1/logs: gave up after 3 attempts: ", "502 Bad Gateway: bad gateway",
		" records in 3 pages, 2026-09-24T00:00:00Z to ", "saved in " + save} {
		if !strings.Contains(errOut, w) {
			t.Errorf("stderr lacks %q:\n%s", w, errOut)
		}
	}
	// What was fetched is in the --save file, and reads. (Pages that meet
	// inside one timestamp repeat a log or two, given once: fewer than 300.)
	m := regexp.MustCompile(`; (\d+) records in 3 pages`).FindStringSubmatch(errOut)
	if m == nil {
		t.Fatal("stderr does not say how far it got")
	}
	if n, _ := strconv.Atoi(m[1]); n < 290 || n > 300 {
		t.Fatalf("%d records in 3 pages of 100", n)
	}
	out, errOut, _ = Options{}.commandOut(t, append([]string{save, "--format", "json"}, window...)...)
	if !strings.Contains(out, `"render_api": `+m[1]) {
		t.Errorf("the --save file does not hold the %s records fetched: stderr %s\n%s", m[1], errOut, out[:min(len(out), 2000)])
	}
}

func (o Options) commandOut(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = o.Command(args, strings.NewReader(""), &out, &errOut)
	return out.String(), errOut.String(), code
}

// A window older than Render's retention: the logs begin late, and the
// reason says what Render keeps.
func TestRenderRetention(t *testing.T) {
	_, lines := genLines(t, 256<<10)
	recs := toRecords(lines, true)
	// Render kept the last 7 days only.
	var kept []testRecord
	for _, r := range recs {
		if r.at.After(fmtUntil.Add(-7*24*time.Hour)) && !strings.Contains(r.line, `"class":"uuid"`) {
			kept = append(kept, r)
		}
	}
	api := newTestAPI(t, kept)
	out, errOut, code := renderCommand(t, api, "--render", "srv-d1abc", "--until", fmtUntil.Format(time.RFC3339), "--quiet-for", "10d")
	if code != ExitInsufficientData {
		t.Fatalf("exit %d, want 2\nstderr %s\n%s", code, errOut, out)
	}
	for _, w := range []string{"the logs in the window begin only at", "Render keeps logs 7 days on Hobby, 14 on Professional, 30 on Organization and Enterprise"} {
		if !strings.Contains(out, w) {
			t.Errorf("report lacks %q:\n%s", w, out)
		}
	}
	// Without --since the fetch starts 30 days back, Render's longest.
	if q := api.Requests()[1].URL.Query(); q.Get("startTime") != fmtUntil.Add(-30*24*time.Hour).Format(time.RFC3339) {
		t.Errorf("startTime %s", q.Get("startTime"))
	}
}

func TestRenderSaveAppends(t *testing.T) {
	save := filepath.Join(t.TempDir(), "saved.pages")
	if err := os.WriteFile(save, []byte("earlier line\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, lines := genLines(t, 128<<10)
	api := newTestAPI(t, toRecords(lines, true))
	if _, errOut, code := renderCommand(t, api, "--render", "srv-d1abc", "--save", save, "--until", fmtUntil.Format(time.RFC3339)); code == ExitError {
		t.Fatal(errOut)
	}
	b, _ := os.ReadFile(save)
	if !strings.HasPrefix(string(b), "earlier line\n{\"hasMore\":") || bytes.Contains(b, []byte(testKey)) {
		t.Errorf("--save did not append pages: %.200q", b)
	}
	if _, errOut, code := (Options{}).commandOut(t, "--save", save); code != ExitError || !strings.Contains(errOut, "--save applies to --render only") {
		t.Errorf("--save without --render: exit %d, %s", code, errOut)
	}
}
