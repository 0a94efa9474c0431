package main

// `authgate report --render` as a process, against a stand-in for
// Render's API on loopback (report/renderapi/renderapitest).

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"authgate/report/renderapi"
	"authgate/report/renderapi/renderapitest"
)

const (
	renderKey     = "rnd_TESTKEYdoNotLeak0123456789"
	renderService = "srv-d1abc7f9c4"
	renderOwner   = "tea-c0ffee"
)

func runAuthgateEnv(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := authgate(args...)
	cmd.Env = append(cmd.Env, env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code = cmd.ProcessState.ExitCode()
	if err != nil && code < 0 {
		t.Fatalf("running authgate %v: %v", args, err)
	}
	return o.String(), e.String(), code
}

// renderFixture is two instances' plain logs and the same lines as
// Render's API holds them, with a legacy request in the quiet period.
// Around every 100th log (the stand-in's page size) ten logs share one
// timestamp: pages meet inside one timestamp.
func renderFixture(t *testing.T) (files []string, logs []renderapi.Log) {
	t.Helper()
	dir := t.TempDir()
	for _, g := range []genInstance{{name: "srv-d1abc7f9c4-xk2pq", start: true, legacyAt: 200},
		{name: "srv-d1abc7f9c4-m8n3v", start: true}} {
		files = append(files, g.write(t, dir))
	}
	var lines []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")...)
	}
	type timed struct {
		at   time.Time
		line string
		inst string
	}
	var ts []timed
	for _, l := range lines {
		var v struct{ Time, Instance string }
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Fatal(err)
		}
		at, err := time.Parse(time.RFC3339Nano, v.Time)
		if err != nil {
			t.Fatal(err)
		}
		// The instance goes to the label only, as Render gives it.
		l = strings.Replace(l, fmt.Sprintf(`"instance":%q,`, v.Instance), "", 1)
		ts = append(ts, timed{at, l, v.Instance})
	}
	// Render's order: by time.
	for i := 1; i < len(ts); i++ {
		for j := i; j > 0 && ts[j].at.Before(ts[j-1].at); j-- {
			ts[j], ts[j-1] = ts[j-1], ts[j]
		}
	}
	for i, x := range ts {
		at := x.at
		if k := i % 100; k >= 95 && i+10 < len(ts) {
			at = ts[i-k+95].at
		} else if k < 5 && i >= 100 {
			at = ts[i-k-5].at
		}
		logs = append(logs, renderapi.Log{
			ID:        fmt.Sprintf("log-%06d", i),
			Labels:    []renderapi.Label{{Name: "resource", Value: renderService}, {Name: "instance", Value: x.inst}, {Name: "type", Value: "app"}},
			Message:   x.line,
			Timestamp: at,
		})
	}
	return files, logs
}

func newRenderAPI(t *testing.T, logs []renderapi.Log) *renderapitest.Server {
	s := renderapitest.New(t, renderKey)
	s.Services[renderService] = renderOwner
	s.Logs = logs
	return s
}

// reportFindings is a JSON report without its line accounting and inputs.
func reportFindings(t *testing.T, out string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, out)
	}
	delete(m, "lines")
	delete(m, "inputs")
	return m
}

func TestReportRender(t *testing.T) {
	files, logs := renderFixture(t)
	window := []string{"--since", "14d", "--until", genUntil, "--format", "json"}
	plainOut, _, plainCode := runAuthgate(t, append([]string{"report"}, append(window, files...)...)...)
	if plainCode != 1 {
		t.Fatalf("the plain logs' verdict: exit %d, want 1 (not_safe)\n%s", plainCode, plainOut)
	}
	want := reportFindings(t, plainOut)

	api := newRenderAPI(t, logs)
	// A 429 and a 503 along the way.
	api.Fail(renderapitest.Fault{Status: 429, Header: map[string]string{"Ratelimit-Reset": "1"}, Body: `{"message":"rate limit exceeded"}`},
		renderapitest.Fault{Status: 503, Body: "upstream connect error"})
	env := []string{"RENDER_API_KEY=" + renderKey, "RENDER_API_URL=" + api.APIURL()}
	save := filepath.Join(t.TempDir(), "render.pages")
	out, errOut, code := runAuthgateEnv(t, env, append([]string{"report", "--render", renderService, "--save", save}, window...)...)
	if code != plainCode {
		t.Fatalf("exit %d, want %d\nstderr: %s", code, plainCode, errOut)
	}
	if got := reportFindings(t, out); !reflect.DeepEqual(got, want) {
		t.Errorf("the report over --render differs from the plain logs' one:\n%s\nwant\n%s", out, plainOut)
	}
	var rep struct {
		Lines struct {
			Read     int64
			ByFormat map[string]int64 `json:"by_format"`
		}
		Inputs []struct{ Name string }
	}
	json.Unmarshal([]byte(out), &rep)
	if rep.Lines.Read != int64(len(logs)) || rep.Lines.ByFormat["render_api"] != int64(len(logs)) ||
		len(rep.Inputs) != 1 || rep.Inputs[0].Name != "render:"+renderService {
		t.Errorf("lines %+v, inputs %+v: want all %d logs once, from the API", rep.Lines, rep.Inputs, len(logs))
	}
	for _, w := range []string{"render: fetching the app logs of " + renderService, "rate limited (429): waiting 1s",
		"/v1/logs: 503 Service Unavailable: upstream connect error: waiting 1.",
		fmt.Sprintf("render: %d records in ", len(logs))} {
		if !strings.Contains(errOut, w) {
			t.Errorf("stderr lacks %q:\n%s", w, errOut)
		}
	}
	if strings.Contains(errOut+out, renderKey) {
		t.Error("the API key was printed")
	}
	reqs := api.Requests()
	if len(reqs) < len(logs)/100+2 {
		t.Errorf("%d requests: want the service and one per page", len(reqs))
	}
	first := reqs[1].URL.Query()
	wantStart := genStart.Format(time.RFC3339)
	for k, v := range map[string]string{"ownerId": renderOwner, "resource": renderService, "type": "app", "direction": "forward",
		"startTime": wantStart, "endTime": genUntil} {
		if first.Get(k) != v {
			t.Errorf("GET /logs %s=%q, want %q", k, first.Get(k), v)
		}
	}

	// The saved pages give the same report, and so does a later run
	// that reads them (past Render's retention) with no API at all.
	out, errOut, code = runAuthgate(t, append([]string{"report", save}, window...)...)
	if code != plainCode || !reflect.DeepEqual(reportFindings(t, out), want) {
		t.Errorf("report over the --save file: exit %d (stderr %s), differs:\n%s", code, errOut, out)
	}
	if b, _ := os.ReadFile(save); bytes.Contains(b, []byte(renderKey)) {
		t.Error("the API key is in the --save file")
	}
}

func TestReportRenderErrors(t *testing.T) {
	_, logs := renderFixture(t)
	window := []string{"--since", "14d", "--until", genUntil}
	tests := []struct {
		name     string
		env      func(url string) []string
		args     []string
		faults   []renderapitest.Fault
		requests int      // -1: any
		want     []string // in stderr
	}{
		{"no key", func(string) []string { return []string{"RENDER_API_KEY="} }, nil, nil, 0,
			[]string{"--render " + renderService + " needs RENDER_API_KEY"}},
		{"--save cannot be written", nil, []string{"--save", "/nonexistent-dir/x.pages"}, nil, 0,
			[]string{"--save: open /nonexistent-dir/x.pages"}},
		{"wrong key", func(u string) []string { return []string{"RENDER_API_KEY=rnd_wrong", "RENDER_API_URL=" + u} }, nil, nil, 1,
			[]string{"Render refused RENDER_API_KEY for service " + renderService, "401 Unauthorized"}},
		{"unknown service", nil, []string{"--render", "srv-nosuch"}, nil, 1,
			[]string{"no Render service srv-nosuch for this RENDER_API_KEY", "/v1/services/srv-nosuch: 404"}},
		{"answer of another shape", nil, nil, []renderapitest.Fault{{Status: 200, Body: `{"logs": "none", "hasMore": false}`}}, 2,
			[]string{"/v1/logs: unexpected answer: field logs"}},
		{"a page without hasMore", nil, nil, []renderapitest.Fault{{Status: 200, Body: `{"logs": []}`}}, 2,
			[]string{"/v1/logs: unexpected answer: field hasMore: missing"}},
		{"RENDER_API_URL over plain http elsewhere", func(string) []string {
			return []string{"RENDER_API_KEY=" + renderKey, "RENDER_API_URL=http://api.render.com/v1"}
		}, nil, nil, 0, []string{"plain http would send RENDER_API_KEY in the clear"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := newRenderAPI(t, logs)
			api.Fail(tt.faults...)
			env := []string{"RENDER_API_KEY=" + renderKey, "RENDER_API_URL=" + api.APIURL()}
			if tt.env != nil {
				env = tt.env(api.APIURL())
			}
			args := append([]string{"report", "--render", renderService}, window...)
			args = append(args, tt.args...)
			out, errOut, code := runAuthgateEnv(t, env, args...)
			if code != 3 || out != "" {
				t.Errorf("exit %d, stdout %q: want 3 and no report", code, out)
			}
			for _, w := range tt.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr lacks %q:\n%s", w, errOut)
				}
			}
			if n := len(api.Requests()); tt.requests >= 0 && n != tt.requests {
				t.Errorf("%d requests, want %d", n, tt.requests)
			}
			if strings.Contains(errOut, renderKey) {
				t.Error("the API key was printed")
			}
		})
	}
}
