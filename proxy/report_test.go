package proxy

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"authgate/report"
)

// TestLogsFeedTheReport drives real requests through the proxy and reads
// the log lines it wrote with the report package: the writer and the
// reader agree on the contract (issue 5).
func TestLogsFeedTheReport(t *testing.T) {
	be := opsBackend(t)
	path := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, path, opsConfig(be.URL, "rewrite", ""))
	h := startRun(t, path)

	other := "0b9f7a52-3c1d-4e8f-9a6b-5d4c3b2a1f0e"
	for range 3 {
		httpStatus(t, h.addr, opsUUID)
	}
	httpStatus(t, h.addr, strings.ToUpper(other)) // normalised to lower case
	httpStatus(t, h.addr, opsJWT(t, "jwt-user", time.Now().Add(time.Hour)))
	httpStatus(t, h.addr, opsJWT(t, "jwt-user", time.Now().Add(-time.Hour)))
	httpStatus(t, h.addr, "garbage")
	c := opsDial(t, h.addr, opsUUID)
	c.Close()
	h.stop(t) // the log is complete once Run has returned

	agg := report.NewAggregator(report.Query{To: time.Now().Add(time.Minute), QuietFor: time.Hour})
	if err := agg.ReadFrom("authgate.log", strings.NewReader(h.logs.String())); err != nil {
		t.Fatal(err)
	}
	r := agg.Report()
	checks := []struct {
		name      string
		got, want int64
	}{
		{"requests", r.Totals.Requests, 8},
		{"uuid", r.Totals.ByClass["uuid"], 5},
		{"jwt", r.Totals.ByClass["jwt"], 1},
		{"jwt_expired", r.Totals.ByClass["jwt_expired"], 1},
		{"malformed", r.Totals.ByClass["malformed"], 1},
		{"rewrite", r.Totals.ByAction["rewrite"], 5},
		{"reject", r.Totals.ByAction["reject"], 2},
		{"legacy requests", r.Legacy.Requests, 5},
		{"legacy users", int64(r.Legacy.Users), 2},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %d, want %d", c.name, c.got, c.want)
		}
	}
	if r.Verdict.Status != "not_safe" {
		t.Errorf("verdict: got %s, want not_safe", r.Verdict.Status)
	}
	users := map[string]int64{}
	for _, u := range r.Users {
		users[u.User] = u.Requests
	}
	if users[opsUUID] != 4 || users[other] != 1 {
		t.Errorf("legacy users: got %v, want %s: 4, %s: 1", users, opsUUID, other)
	}
}
