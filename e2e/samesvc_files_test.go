package e2e

// The same-service example's files (deploy/render/same-service) and the
// release workflow, as far as the files themselves say. No build tag, as
// render_blueprint_test.go: a typo fails the plain `go test ./...`. The
// e2e tests (samesvc_deploy_test.go) then run what these describe.

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"authgate/policy"
)

const sameServiceDir = "deploy/render/same-service"

// ssBlueprint is the part of Render's Blueprint spec the same-service
// render.yaml uses; decoding refuses any other field.
type ssBlueprint struct {
	Services []ssService `yaml:"services"`
}

type ssService struct {
	Type            string     `yaml:"type"`
	Name            string     `yaml:"name"`
	Runtime         string     `yaml:"runtime"`
	DockerfilePath  string     `yaml:"dockerfilePath"`
	DockerContext   string     `yaml:"dockerContext"`
	RootDir         string     `yaml:"rootDir"`
	BuildCommand    string     `yaml:"buildCommand"`
	StartCommand    string     `yaml:"startCommand"`
	HealthCheckPath string     `yaml:"healthCheckPath"`
	AutoDeploy      *bool      `yaml:"autoDeploy"`
	EnvVars         []ssEnvVar `yaml:"envVars"`
}

type ssEnvVar struct {
	Key   string `yaml:"key"`
	Sync  *bool  `yaml:"sync"`
	Value string `yaml:"value"`
}

func ssLoadBlueprint(t testing.TB, root string) (docker, native ssService) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, sameServiceDir, "render.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var bp ssBlueprint
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&bp); err != nil {
		t.Fatalf("%s/render.yaml: %v", sameServiceDir, err)
	}
	for _, s := range bp.Services {
		switch s.Runtime {
		case "docker":
			docker = s
		case "python":
			native = s
		}
	}
	if len(bp.Services) != 2 || docker.Name == "" || native.Name == "" {
		t.Fatalf("%s/render.yaml: want two services, one docker and one python; got %+v", sameServiceDir, bp.Services)
	}
	return docker, native
}

// workflow is the part of a GitHub Actions workflow release.yml uses.
type workflow struct {
	Name string `yaml:"name"`
	On   struct {
		Push struct {
			Tags []string `yaml:"tags"`
		} `yaml:"push"`
	} `yaml:"on"`
	Permissions map[string]string `yaml:"permissions"`
	Jobs        map[string]struct {
		RunsOn string `yaml:"runs-on"`
		Steps  []struct {
			Name string            `yaml:"name"`
			Uses string            `yaml:"uses"`
			With map[string]string `yaml:"with"`
			Env  map[string]string `yaml:"env"`
			Run  string            `yaml:"run"`
		} `yaml:"steps"`
	} `yaml:"jobs"`
}

// releaseBuild returns the release workflow's build step: its env and the
// script it runs, and the publish step's script.
func releaseBuild(t testing.TB, root string) (env map[string]string, script, publish string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, ".github/workflows/release.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var w workflow
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&w); err != nil {
		t.Fatalf("release.yml: %v", err)
	}
	if !slices.Equal(w.On.Push.Tags, []string{"v*"}) || w.Permissions["contents"] != "write" {
		t.Errorf("release.yml: runs on tags %q with permissions %v; want v* and contents: write", w.On.Push.Tags, w.Permissions)
	}
	job, ok := w.Jobs["release"]
	if !ok {
		t.Fatalf("release.yml: no release job")
	}
	for _, s := range job.Steps {
		switch s.Name {
		case "build":
			env, script = s.Env, s.Run
		case "publish":
			publish = s.Run
		}
	}
	if script == "" || publish == "" {
		t.Fatalf("release.yml: want a build and a publish step")
	}
	if env["VERSION"] != "${{ github.ref_name }}" || env["DIST"] == "" {
		t.Errorf("release.yml build env %v: want VERSION from the tag and a DIST directory", env)
	}
	if !strings.Contains(publish, env["DIST"]+"/*") {
		t.Errorf("release.yml publish %q: does not upload %s/*", publish, env["DIST"])
	}
	return env, script, publish
}

// nativeVersion is the release the native build command downloads.
var nativeVersion = regexp.MustCompile(`(?:^|&& )V=(v[0-9][^ ]*) &&`)

// TestSameServiceFiles checks the example's files against one another:
// the Dockerfile's ENTRYPOINT and CMD, render.yaml's two services, the
// config (strict load; loopback upstream on the port both start commands
// give the backend; a shutdown that fits Render's 30 s), and that the
// native build downloads archive names the release workflow makes and
// verifies them.
func TestSameServiceFiles(t *testing.T) {
	root := renderRepoRoot(t)
	dir := filepath.Join(root, sameServiceDir)
	dfText, err := os.ReadFile(filepath.Join(dir, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	df, err := parseDockerfile(string(dfText))
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	if want := []string{"authgate", "serve", "--config", "/etc/authgate/config.yaml", "--"}; !slices.Equal(df.entrypoint, want) {
		t.Errorf("Dockerfile ENTRYPOINT %q, want %q", df.entrypoint, want)
	}
	if !slices.Contains(df.copies, [2]string{sameServiceDir + "/config.yaml", "/etc/authgate/config.yaml"}) {
		t.Errorf("Dockerfile: the example's config.yaml is not copied to /etc/authgate/config.yaml: %q", df.copies)
	}
	if len(df.cmd) == 0 || df.cmd[0] != "uvicorn" || !slices.Contains(df.cmd, "127.0.0.1") {
		t.Errorf("Dockerfile CMD %q: want the backend (uvicorn) on 127.0.0.1", df.cmd)
	}
	if u, _, _ := strings.Cut(df.user, ":"); u == "" || u == "0" || u == "root" {
		t.Errorf("Dockerfile USER %q: want non-root", df.user)
	}

	docker, native := ssLoadBlueprint(t, root)
	if docker.DockerfilePath != "./"+sameServiceDir+"/Dockerfile" || docker.DockerContext != "." {
		t.Errorf("render.yaml docker service: dockerfilePath %q, dockerContext %q", docker.DockerfilePath, docker.DockerContext)
	}
	if native.RootDir != sameServiceDir {
		t.Errorf("render.yaml python service: rootDir %q, want %s", native.RootDir, sameServiceDir)
	}

	lookup := func(k string) (string, bool) {
		switch k {
		case "SUPABASE_JWT_SECRET":
			return "same-service-files-test-secret-0123456789", true
		}
		return "", false
	}
	snap, err := policy.Load(filepath.Join(dir, "config.yaml"), policy.Options{LookupEnv: lookup})
	if err != nil {
		t.Fatalf("config.yaml: %v", err)
	}
	for _, s := range []ssService{docker, native} {
		if s.HealthCheckPath != snap.HealthPath {
			t.Errorf("render.yaml %s: healthCheckPath %q, config's health_path %q", s.Name, s.HealthCheckPath, snap.HealthPath)
		}
	}
	if snap.Upstream.URL.Hostname() != "127.0.0.1" {
		t.Errorf("config.yaml upstream.url %s: want 127.0.0.1", snap.Upstream.URL)
	}
	port := snap.Upstream.URL.Port()
	if i := slices.Index(df.cmd, "--port"); i < 0 || i+1 >= len(df.cmd) || df.cmd[i+1] != port {
		t.Errorf("Dockerfile CMD %q: the backend's port is not upstream.url's %s", df.cmd, port)
	}
	if !strings.Contains(native.StartCommand, "--port "+port) || !strings.HasPrefix(native.StartCommand, "./bin/authgate serve --config config.yaml -- ") {
		t.Errorf("render.yaml python startCommand %q: want ./bin/authgate serve --config config.yaml -- ... --port %s", native.StartCommand, port)
	}
	if total := snap.ShutdownTimeout + snap.Upstream.StopTimeout; total > 30*time.Second {
		t.Errorf("config.yaml: shutdown_timeout + stop_timeout = %s, more than Render's 30 s", total)
	}

	env, script, _ := releaseBuild(t, root)
	if !strings.Contains(script, `"$DIST/authgate_${VERSION}_linux_${arch}.tar.gz"`) || !strings.Contains(script, "sha256sum authgate_*.tar.gz > SHA256SUMS") {
		t.Errorf("release.yml build (env %v): archive or checksum names changed; the native build command downloads authgate_V_linux_amd64.tar.gz and SHA256SUMS:\n%s", env, script)
	}
	m := nativeVersion.FindStringSubmatch(native.BuildCommand)
	if m == nil {
		t.Fatalf("render.yaml python buildCommand %q: no V=vX.Y.Z", native.BuildCommand)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"buildCommand: " + native.BuildCommand + "\n", "startCommand: " + native.StartCommand + "\n",
		`ENTRYPOINT ["authgate","serve","--config","/etc/authgate/config.yaml","--"]`} {
		if !bytes.Contains(readme, []byte(want)) {
			t.Errorf("README's Render section does not show %q as render.yaml and the Dockerfile have it", want)
		}
	}
	for _, want := range []string{"A=authgate_${V}_linux_amd64.tar.gz", "$U/$A", "$U/SHA256SUMS", `grep " $A\$" SHA256SUMS | sha256sum -c -`, "tar -xzf $A -C bin authgate"} {
		if !strings.Contains(native.BuildCommand, want) {
			t.Errorf("render.yaml python buildCommand lacks %q:\n%s", want, native.BuildCommand)
		}
	}
}
