package e2e

// The Dockerfile as TestRenderImage follows it. No build tag: the plain
// `go test ./...` checks that the Dockerfile still parses the way the
// end-to-end test expects, and the image's static contract.

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// dockerfile is what TestRenderImage takes from the Dockerfile: how the
// build stage builds the binary and how the final stage runs it.
type dockerfile struct {
	// Build stage.
	buildEnv  []string // VAR=value before `go build` on its RUN line
	buildArgs []string // go build's arguments, ARGs substituted
	buildOut  string   // the -o path
	afterward [][]string
	// Final stage.
	finalRuns  []string    // RUN lines of the final stage, as written (the same-service image installs its backend's packages)
	copies     [][2]string // [source, destination]; a source from the build stage starts with "build:"
	env        []string    // ENV, in order
	user       string
	workdir    string
	entrypoint []string
	cmd        []string
	expose     []string
}

var envAssignment = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`)

// parseDockerfile reads the instructions TestRenderImage follows; one it
// does not know in the final stage is an error, so the test cannot drift
// from the image without saying so.
func parseDockerfile(text string) (*dockerfile, error) {
	text = strings.ReplaceAll(text, "\\\n", " ")
	var (
		d      dockerfile
		stages []string
		args   = map[string]string{}
		final  bool
	)
	lines := strings.Split(text, "\n")
	// The final stage is the last FROM.
	lastFrom := -1
	for i, l := range lines {
		if f := strings.Fields(l); len(f) > 0 && strings.EqualFold(f[0], "FROM") {
			lastFrom = i
		}
	}
	for i, l := range lines {
		l = strings.TrimSpace(l)
		if l == "" || l[0] == '#' {
			continue
		}
		instr, rest, _ := strings.Cut(l, " ")
		instr, rest = strings.ToUpper(instr), strings.TrimSpace(rest)
		if instr == "FROM" {
			f := strings.Fields(rest)
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				stages = append(stages, f[2])
			}
			final = i == lastFrom
			args = map[string]string{}
			continue
		}
		if !final {
			switch instr {
			case "ARG":
				k, v, _ := strings.Cut(rest, "=")
				args[k] = v
			case "RUN":
				if !strings.Contains(rest, "go build") {
					continue
				}
				for _, part := range strings.Split(rest, "&&") {
					words, err := renderShellWords(part, args)
					if err != nil {
						return nil, fmt.Errorf("RUN %s: %w", rest, err)
					}
					j := 0
					for j < len(words) && envAssignment.MatchString(words[j]) {
						j++
					}
					if len(words) > j+1 && words[j] == "go" && words[j+1] == "build" {
						d.buildEnv, d.buildArgs = words[:j], words[j+2:]
						for k, a := range d.buildArgs {
							if a == "-o" && k+1 < len(d.buildArgs) {
								d.buildOut = d.buildArgs[k+1]
							}
						}
					} else if len(words) > 0 {
						d.afterward = append(d.afterward, words)
					}
				}
			}
			continue
		}
		switch instr {
		case "COPY":
			f := strings.Fields(rest)
			from := ""
			if len(f) > 0 && strings.HasPrefix(f[0], "--from=") {
				from, f = strings.TrimPrefix(f[0], "--from=")+":", f[1:]
			}
			if len(f) != 2 || strings.HasPrefix(f[0], "--") {
				return nil, fmt.Errorf("COPY %s: only COPY [--from=STAGE] SRC DST is followed", rest)
			}
			if from != "" && !slices.Contains(stages, strings.TrimSuffix(from, ":")) {
				return nil, fmt.Errorf("COPY %s: stage %s is not a build stage", rest, from)
			}
			d.copies = append(d.copies, [2]string{from + f[0], f[1]})
		case "ENV":
			words, err := renderShellWords(rest, nil)
			if err != nil {
				return nil, fmt.Errorf("ENV %s: %w", rest, err)
			}
			for _, w := range words {
				if !strings.Contains(w, "=") {
					return nil, fmt.Errorf("ENV %s: only ENV KEY=VALUE is followed", rest)
				}
				d.env = append(d.env, w)
			}
		case "USER":
			d.user = rest
		case "WORKDIR":
			d.workdir = rest
		case "ENTRYPOINT", "CMD":
			var v []string
			if err := json.Unmarshal([]byte(rest), &v); err != nil {
				return nil, fmt.Errorf("%s %s: only the exec (JSON) form is followed: %w", instr, rest, err)
			}
			if instr == "CMD" {
				d.cmd = v
			} else {
				d.entrypoint = v
			}
		case "EXPOSE":
			d.expose = append(d.expose, strings.Fields(rest)...)
		case "RUN":
			d.finalRuns = append(d.finalRuns, rest)
		case "ARG", "LABEL":
		default:
			return nil, fmt.Errorf("%s in the final stage: TestRenderImage does not follow it yet", instr)
		}
	}
	if d.buildArgs == nil || d.buildOut == "" {
		return nil, fmt.Errorf("no `go build ... -o PATH` RUN line in a build stage")
	}
	return &d, nil
}

// renderShellWords splits a command line the way sh does for the simple
// commands a Dockerfile's RUN holds: blanks separate words; '...' is
// literal; "..." and bare words expand ${VAR} and $VAR from vars (nil: no
// expansion). Anything fancier is an error.
func renderShellWords(s string, vars map[string]string) ([]string, error) {
	var (
		words []string
		cur   strings.Builder
		in    bool // a word is open
		quote byte
	)
	expand := func(i int) (int, error) {
		j := i + 1
		var name string
		if j < len(s) && s[j] == '{' {
			end := strings.IndexByte(s[j:], '}')
			if end < 0 {
				return 0, fmt.Errorf("unterminated ${")
			}
			name, j = s[j+1:j+end], j+end+1
		} else {
			k := j
			for k < len(s) && (s[k] == '_' || s[k] >= 'A' && s[k] <= 'Z' || s[k] >= 'a' && s[k] <= 'z' || s[k] >= '0' && s[k] <= '9') {
				k++
			}
			name, j = s[j:k], k
		}
		v, ok := vars[name]
		if !ok {
			return 0, fmt.Errorf("$%s: not an ARG with a default", name)
		}
		cur.WriteString(v)
		return j, nil
	}
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case quote == '\'':
			if c == '\'' {
				quote = 0
			} else {
				cur.WriteByte(c)
			}
			i++
		case c == '$' && vars != nil:
			j, err := expand(i)
			if err != nil {
				return nil, err
			}
			in, i = true, j
		case quote == '"':
			if c == '"' {
				quote = 0
			} else {
				cur.WriteByte(c)
			}
			i++
		case c == '\'' || c == '"':
			quote, in = c, true
			i++
		case c == ' ' || c == '\t':
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
			i++
		case strings.IndexByte("|;<>`\\(){}*?", c) >= 0:
			return nil, fmt.Errorf("%q: shell syntax TestRenderImage does not follow", c)
		default:
			cur.WriteByte(c)
			in = true
			i++
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated quote")
	}
	if in {
		words = append(words, cur.String())
	}
	return words, nil
}

// TestRenderDockerfile checks the image's contract as far as the files
// say it: a static build (CGO_ENABLED=0, -trimpath), a non-root USER,
// AUTHGATE_CONFIG naming the path config.yaml is copied to, `serve` as the
// command, and EXPOSE matching config.yaml's listen default. TestRenderImage
// (tag e2e) then runs what this describes.
func TestRenderDockerfile(t *testing.T) {
	root := renderRepoRoot(t)
	b, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	df, err := parseDockerfile(string(b))
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	if !slices.Contains(df.buildEnv, "CGO_ENABLED=0") {
		t.Errorf("go build env %q: want CGO_ENABLED=0 (distroless/static has no libc)", df.buildEnv)
	}
	if !slices.Contains(df.buildArgs, "-trimpath") {
		t.Errorf("go build %q: want -trimpath", df.buildArgs)
	}
	if pkg := df.buildArgs[len(df.buildArgs)-1]; pkg != "./cmd/authgate" {
		t.Errorf("go build builds %q, want ./cmd/authgate", pkg)
	}
	user, _, _ := strings.Cut(df.user, ":")
	if user == "" || user == "root" || user == "0" {
		t.Errorf("USER %q: want a non-root user", df.user)
	}
	dests := map[string]string{} // source -> destination
	for _, c := range df.copies {
		dests[c[0]] = c[1]
	}
	bin, ok := dests["build:"+df.buildOut]
	if !ok {
		t.Errorf("no COPY --from=build %s: the built binary is not in the image (copies %q)", df.buildOut, df.copies)
	}
	var cfg string
	for _, kv := range df.env {
		if v, ok := strings.CutPrefix(kv, "AUTHGATE_CONFIG="); ok {
			cfg = v
		}
	}
	if cfg == "" || dests["config.yaml"] != cfg {
		t.Errorf("ENV AUTHGATE_CONFIG=%q, COPY config.yaml to %q: want the same path", cfg, dests["config.yaml"])
	}
	if argv := append(slices.Clone(df.entrypoint), df.cmd...); len(argv) != 2 || argv[0] != bin || argv[1] != "serve" {
		t.Errorf("ENTRYPOINT + CMD %q: want [%q serve]", argv, bin)
	}
	config, err := os.ReadFile(filepath.Join(root, "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	listen := renderConfigScalar(t, config, "listen")
	m := regexp.MustCompile(`:\$\{PORT:-(\d+)\}$`).FindStringSubmatch(listen)
	if m == nil {
		t.Errorf("config.yaml listen %q: want \":${PORT:-N}\" (Render sets PORT)", listen)
	} else if !slices.Contains(df.expose, m[1]) {
		t.Errorf("EXPOSE %q: want %s, config.yaml's listen default", df.expose, m[1])
	}
}

// TestRenderDockerfileParse pins the parser on the forms it follows and
// the ones it refuses.
func TestRenderDockerfileParse(t *testing.T) {
	const good = "FROM golang:1.26 AS build\nARG V=dev\n" +
		"RUN CGO_ENABLED=0 go build -trimpath -ldflags \"-s -w -X main.version=${V}\" -o /out/x ./cmd/x \\\n && /out/x version\n" +
		"FROM scratch\nCOPY --from=build /out/x /bin/x\nCOPY config.yaml /etc/x.yaml\nENV A=/etc/x.yaml B=2\nUSER nonroot:nonroot\nEXPOSE 8080\nENTRYPOINT [\"/bin/x\"]\nCMD [\"serve\"]\n"
	df, err := parseDockerfile(good)
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprintf("%q %q %s %q %q %q %s %q %q", df.buildEnv, df.buildArgs, df.buildOut, df.afterward, df.copies, df.env, df.user, df.entrypoint, df.cmd)
	want := `["CGO_ENABLED=0"] ["-trimpath" "-ldflags" "-s -w -X main.version=dev" "-o" "/out/x" "./cmd/x"] /out/x [["/out/x" "version"]] [["build:/out/x" "/bin/x"] ["config.yaml" "/etc/x.yaml"]] ["A=/etc/x.yaml" "B=2"] nonroot:nonroot ["/bin/x"] ["serve"]`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	for _, tc := range []struct{ name, text, want string }{
		{"no go build", "FROM scratch\nCMD [\"serve\"]\n", "no `go build"},
		{"shell form", "FROM golang AS build\nRUN go build -o /o .\nFROM scratch\nCMD serve\n", "exec (JSON) form"},
		{"unknown instruction", "FROM golang AS build\nRUN go build -o /o .\nFROM scratch\nVOLUME /data\n", "VOLUME in the final stage"},
		{"unknown ARG", "FROM golang AS build\nRUN go build -ldflags \"-X v=${NOPE}\" -o /o .\nFROM scratch\n", "$NOPE: not an ARG"},
		{"pipe", "FROM golang AS build\nRUN go build -o /o . | tee log\nFROM scratch\n", "shell syntax"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseDockerfile(tc.text)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
