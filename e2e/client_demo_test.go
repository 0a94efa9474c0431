//go:build e2e

package e2e

import (
	"bufio"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestClientDemoPage: `authgate demo --serve` prints a browser URL whose
// page uses client/authgate.js. Clicked through in Chromium: a legacy
// UUID stops with legacyblocked, an expired JWT is refreshed once, a
// bearer-subprotocol JWT opens, and stopping the demo (SIGTERM) shows
// 1012 and a restart delay; the demo then exits 0.
func TestClientDemoPage(t *testing.T) {
	cmd := exec.Command(authgateBin, "demo", "--serve")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	out := &syncBuffer{}
	urlc := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`^\s+browser\s+(http://127\.0\.0\.1:\d+/)\s`)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			fmt.Fprintln(out, sc.Text())
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				urlc <- m[1]
			}
		}
		done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
	})
	var pageURL string
	select {
	case pageURL = <-urlc:
	case <-time.After(30 * time.Second):
		t.Fatalf("demo --serve printed no browser URL:\n%s\n%s", out.String(), stderr.String())
	}

	b := newBrowser(t)
	if err := chromedp.Do(b.ctx, chromedp.Navigate(pageURL)); err != nil {
		t.Fatal(err)
	}
	type ev struct {
		Type     string `json:"type"`
		Code     int    `json:"code"`
		Kind     string `json:"kind"`
		Protocol string `json:"protocol"`
	}
	events := func() []ev {
		evs, err := chromedp.Run(b.ctx, chromedp.Evaluate[[]ev]("window.demoEvents"))
		if err != nil {
			t.Fatal(err)
		}
		return evs
	}
	seq := func(evs []ev) string {
		var s []string
		for _, e := range evs {
			s = append(s, e.Type)
		}
		return strings.Join(s, " ")
	}
	// try picks a token kind, connects, and waits until the events since
	// then read want.
	try := func(kind string, bearer bool, want string) []ev {
		t.Helper()
		n := len(events())
		acts := []chromedp.Action[chromedp.Void]{chromedp.Click(chromedp.CSS(`input[value="` + kind + `"]`))}
		checked, _ := chromedp.Run(b.ctx, chromedp.Evaluate[bool](`document.getElementById('bearer').checked`))
		if checked != bearer {
			acts = append(acts, chromedp.Click(chromedp.CSS(`#bearer`)))
		}
		acts = append(acts, chromedp.Click(chromedp.CSS(`#connect`)))
		if err := chromedp.Do(b.ctx, acts...); err != nil {
			t.Fatal(err)
		}
		var got []ev
		err := waitFor(15*time.Second, func() error {
			got = events()[n:]
			if len(got) > 0 && got[0].Type == "closed" {
				got = got[1:] // the previous client, closed by Connect
			}
			if s := seq(got); s != want {
				return fmt.Errorf("events %q, want %q", s, want)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		return got
	}

	got := try("uuid", false, "connecting open disconnect legacyblocked")
	if got[2].Code != 4003 {
		t.Errorf("uuid: closed with %d, want 4003", got[2].Code)
	}
	got = try("expired", false, "connecting open disconnect retrying connecting open message")
	if got[2].Code != 4002 || got[3].Kind != "expired" {
		t.Errorf("expired: %+v", got)
	}
	got = try("jwt", true, "connecting open message")
	if got[1].Protocol != "bearer" {
		t.Errorf("bearer: the socket's protocol is %q", got[1].Protocol)
	}
	text, err := chromedp.Run(b.ctx, chromedp.Text(chromedp.CSS("#log")))
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"legacyblocked", "stopped for good: this app build must update", "reconnecting in 0 ms (expired after 4002)", "subprotocol bearer"} {
		if !strings.Contains(text, w) {
			t.Errorf("the page's log lacks %q:\n%s", w, text)
		}
	}

	console, _ := b.drain()
	for _, c := range console {
		t.Errorf("the demo page reported: %s", c)
	}

	// Ctrl-C: authgate closes the open socket with 1012 and the client
	// schedules its reconnect within the restart window.
	n := len(events())
	cmd.Process.Signal(syscall.SIGTERM)
	err = waitFor(15*time.Second, func() error {
		if s := seq(events()[n:]); !strings.HasPrefix(s, "disconnect retrying") {
			return fmt.Errorf("events after SIGTERM: %q", s)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if after := events()[n:]; after[0].Code != 1012 || after[1].Kind != "restart" {
		t.Errorf("after SIGTERM: %+v; want 1012 and a restart delay", after)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("demo exited with %v\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("demo did not exit after SIGTERM")
	}
	// After SIGTERM the reconnect finds nothing listening, nor does the
	// page's token endpoint (the demo's backend): the browser reports those
	// failed requests; an exception would still count.
	console, _ = b.drain()
	for _, c := range console {
		if strings.HasPrefix(c, "exception") {
			t.Errorf("the demo page threw: %s", c)
		}
	}
}
