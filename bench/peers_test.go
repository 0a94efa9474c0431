package main

import (
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"authgate/policy"
)

// TestPeerConfigs renders every peer's template in each variant the bench
// uses (plain, TLS upstream, storm) and has the program itself check the
// result where it is installed (nginx -t, haproxy -c, caddy adapt), and
// authgate's config through policy.Load: a template that no longer parses
// fails here rather than in the middle of a benchmark.
func TestPeerConfigs(t *testing.T) {
	dir := t.TempDir()
	pki, err := makeTestPKI(dir)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{dir: dir, nofile: 20000, bins: map[string]string{}}
	variants := []struct {
		name string
		inst instance
	}{
		{"plain", instance{Upstream: "127.0.0.1:9"}},
		{"tls", instance{Upstream: "127.0.0.1:9", TLS: true, CA: pki.ca}},
		{"storm", instance{Upstream: "127.0.0.1:9", Storm: true}},
	}
	for _, d := range peerDefs {
		if d.conf == "" {
			continue
		}
		for _, v := range variants {
			if v.name == "tls" && !d.takes("tls") || v.name == "storm" && !d.takes("storm") {
				continue
			}
			t.Run(d.name+"/"+v.name, func(t *testing.T) {
				inst := v.inst
				inst.Port, inst.Listen, inst.Nofile, inst.MaxConn = 1, "127.0.0.1:1", 20000, 9500
				inst.Dir = filepath.Join(dir, d.name+"-"+v.name)
				if err := os.MkdirAll(inst.Dir, 0o755); err != nil {
					t.Fatal(err)
				}
				conf, err := e.render(d.conf, inst)
				if err != nil {
					t.Fatal(err)
				}
				var check []string
				switch d.name {
				case "authgate":
					_, err := policy.Load(conf, policy.Options{LookupEnv: func(string) (string, bool) { return "secret-secret-secret-secret", true }})
					if err != nil {
						t.Fatalf("policy.Load: %v", err)
					}
					return
				case "nginx":
					check = []string{"-t", "-p", inst.Dir, "-c", conf, "-e", filepath.Join(inst.Dir, "error.log")}
				case "haproxy":
					check = []string{"-c", "-f", conf}
				case "caddy":
					check = []string{"adapt", "--adapter", "caddyfile", "--config", conf}
				}
				bin, err := e.binary(d)
				if err != nil || bin == "" {
					t.Skipf("%s not installed", d.bin)
				}
				cmd := exec.Command(bin, check...)
				cmd.Env = append(os.Environ(), "HOME="+inst.Dir, "XDG_CONFIG_HOME="+inst.Dir, "XDG_DATA_HOME="+inst.Dir)
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("%s %s: %v\n%s", bin, strings.Join(check, " "), err, out)
				}
			})
		}
	}
}

func TestSplitLine(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []string
	}{
		{"a b  c", []string{"a", "b", "c"}},
		{"py -c 'import a, b'", []string{"py", "-c", "import a, b"}},
		{"x -g 'daemon off;' y", []string{"x", "-g", "daemon off;", "y"}},
		{"''", []string{""}},
	} {
		if got := splitLine(c.in); !slices.Equal(got, c.want) {
			t.Errorf("splitLine(%q): got %q, want %q", c.in, got, c.want)
		}
	}
}

// TestBestPeer: the best reference peer is the highest for a rate, the
// lowest for a cost, never the copier or authgate, and the bars read
// against it.
func TestBestPeer(t *testing.T) {
	rate := row{v: map[string]float64{"nginx": 100, "haproxy": 120, "caddy": 90, "copier": 200, "authgate": 118}, better: +1}
	if name, v, _ := rate.best(); name != "haproxy" || v != 120 {
		t.Errorf("rate: got best %s %v, want haproxy 120", name, v)
	}
	if got, want := rate.barAgainst("best", ">=", 0.95), ">=0.95x best (haproxy): met (0.98x)"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	cost := row{v: map[string]float64{"nginx": 10, "haproxy": 12, "caddy": 9, "authgate": 11}, better: -1}
	if name, _, _ := cost.best(); name != "caddy" {
		t.Errorf("cost: got best %s, want caddy", name)
	}
	if got, want := cost.barAgainst("best", "<=", 1.1), "<=1.1x best (caddy): NOT met (1.22x)"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	none := row{v: map[string]float64{"authgate": 1}, better: -1}
	if got, want := none.barAgainst("best", "<=", 1.1), "<=1.1x best peer: n/a"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if r := ratio(row{v: map[string]float64{"authgate": 1, "nginx": 2}, better: 0, metric: "  kernel %"}, "best"); r != "-" {
		t.Errorf("kernel %% ratio: got %s, want -", r)
	}
	if m := median([]float64{3, 1, 2}); m != 2 || !math.IsNaN(median(nil)) {
		t.Errorf("median: got %v", m)
	}
}
