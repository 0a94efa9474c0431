package e2e

// This file has no build tag: it reads files only (render.yaml, config.yaml,
// the Dockerfile), so it runs in the plain `go test ./...` as well as with
// -tags e2e. A typo in render.yaml fails CI instead of a deploy.

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// blueprint is the part of Render's Blueprint spec (render.yaml) that
// authgate's render.yaml uses, and nothing more: decoding refuses any
// other field, so a misspelt key (healthcheckPath, envvars, dockerFilePath)
// fails here rather than being ignored by Render. A real Blueprint field
// added to render.yaml on purpose is added here too, with a check when it
// matters. https://render.com/docs/blueprint-spec
type blueprint struct {
	Services []blueprintService `yaml:"services"`
}

type blueprintService struct {
	Type            string            `yaml:"type"`
	Name            string            `yaml:"name"`
	Runtime         string            `yaml:"runtime"`
	DockerfilePath  string            `yaml:"dockerfilePath"`
	HealthCheckPath string            `yaml:"healthCheckPath"`
	AutoDeploy      *bool             `yaml:"autoDeploy"`
	EnvVars         []blueprintEnvVar `yaml:"envVars"`
}

type blueprintEnvVar struct {
	Key string `yaml:"key"`
	// Sync false: Render asks for the value when the Blueprint is applied
	// and never stores it in the repository (secrets).
	Sync *bool `yaml:"sync"`
}

// repoRoot is the repository root: go test runs in e2e/.
func renderRepoRoot(t testing.TB) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(wd)
}

// loadBlueprint strictly decodes render.yaml.
func renderLoadBlueprint(t testing.TB, root string) blueprint {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "render.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	bp, err := renderDecodeBlueprint(b)
	if err != nil {
		t.Fatalf("render.yaml: %v\n(a real Blueprint field that render.yaml now uses goes into blueprintService in e2e/render_blueprint_test.go)", err)
	}
	return bp
}

func renderDecodeBlueprint(b []byte) (blueprint, error) {
	var bp blueprint
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&bp); err != nil {
		return bp, err
	}
	return bp, nil
}

var renderEnvRef = regexp.MustCompile(`\$\{([^}]*)\}`)

// requiredEnv returns the variables config.yaml needs from the
// environment: every ${VAR} without a :-default in a YAML scalar (the
// product expands scalars after parsing, so a ${VAR} in a comment does not
// count; $${ is a literal).
func renderRequiredEnv(t testing.TB, config []byte) (required, defaulted []string) {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal(config, &doc); err != nil {
		t.Fatalf("config.yaml: %v", err)
	}
	req, def := map[string]bool{}, map[string]bool{}
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if n.Kind == yaml.ScalarNode {
			s := strings.ReplaceAll(n.Value, "$${", "")
			for _, m := range renderEnvRef.FindAllStringSubmatch(s, -1) {
				name, _, hasDef := strings.Cut(m[1], ":-")
				if hasDef {
					def[name] = true
				} else {
					req[name] = true
				}
			}
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(&doc)
	return slices.Sorted(maps.Keys(req)), slices.Sorted(maps.Keys(def))
}

// configScalar returns a top-level scalar of config.yaml (health_path,
// shutdown_timeout), unexpanded.
func renderConfigScalar(t testing.TB, config []byte, key string) string {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal(config, &m); err != nil {
		t.Fatalf("config.yaml: %v", err)
	}
	s, ok := m[key].(string)
	if !ok {
		t.Fatalf("config.yaml: %s is %v, want a string", key, m[key])
	}
	return s
}

// TestRenderBlueprint checks render.yaml against the Blueprint fields it
// uses (issue 13, item 4): strict decoding, a Docker web service whose
// Dockerfile exists, Render's health check on authgate's own health_path
// (answered on the public listener, never proxied), and every secret
// config.yaml needs declared as an unsynced env var.
func TestRenderBlueprint(t *testing.T) {
	root := renderRepoRoot(t)
	bp := renderLoadBlueprint(t, root)
	config, err := os.ReadFile(filepath.Join(root, "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(bp.Services) != 1 {
		t.Fatalf("render.yaml: %d services, want 1 (authgate)", len(bp.Services))
	}
	s := bp.Services[0]
	if s.Type != "web" {
		t.Errorf("services[0].type: got %q, want web (a public HTTP service with a health check)", s.Type)
	}
	if s.Name == "" {
		t.Errorf("services[0].name: empty")
	}
	if s.Runtime != "docker" {
		t.Errorf("services[0].runtime: got %q, want docker", s.Runtime)
	}
	if s.DockerfilePath == "" {
		t.Errorf("services[0].dockerfilePath: empty")
	} else if fi, err := os.Stat(filepath.Join(root, s.DockerfilePath)); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("services[0].dockerfilePath %q: not a file in the repository (%v)", s.DockerfilePath, err)
	}
	if s.AutoDeploy == nil {
		t.Errorf("services[0].autoDeploy: not set; say whether a push deploys")
	}
	health := renderConfigScalar(t, config, "health_path")
	if s.HealthCheckPath != health {
		t.Errorf("services[0].healthCheckPath: got %q, want config.yaml's health_path %q", s.HealthCheckPath, health)
	}

	declared := map[string]blueprintEnvVar{}
	for i, v := range s.EnvVars {
		switch {
		case v.Key == "":
			t.Errorf("services[0].envVars[%d]: no key", i)
		case declared[v.Key].Key != "":
			t.Errorf("services[0].envVars[%d]: %s declared twice", i, v.Key)
		}
		declared[v.Key] = v
	}
	required, _ := renderRequiredEnv(t, config)
	if len(required) == 0 {
		t.Fatalf("config.yaml needs no ${VAR}; this test expects at least UPSTREAM_URL and SUPABASE_JWT_SECRET")
	}
	for _, name := range required {
		v, ok := declared[name]
		switch {
		case !ok:
			t.Errorf("config.yaml needs ${%s} (no default), render.yaml does not declare it in envVars: the deploy would fail to start", name)
		case v.Sync == nil || *v.Sync:
			t.Errorf("render.yaml: envVars %s: want sync: false (the value is set in Render's dashboard, never committed)", name)
		}
	}
	// The other way round: a declared variable nothing reads is most often
	// the misspelling of one that is read.
	for key := range declared {
		if !slices.Contains(required, key) {
			t.Errorf("render.yaml declares %s, which config.yaml does not read (needs: %s)", key, strings.Join(required, ", "))
		}
	}
	t.Logf("render.yaml: %s service %q, runtime %s, %s, health check %s, env %s", s.Type, s.Name, s.Runtime, s.DockerfilePath, s.HealthCheckPath, strings.Join(required, ", "))
}

// TestRenderBlueprintRefuses shows the strict decoding and the env var
// extraction catch what they are there for, so TestRenderBlueprint
// cannot pass by accepting anything.
func TestRenderBlueprintRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"misspelt field", "services:\n  - type: web\n    healthcheckPath: /healthz\n", "line 3: field healthcheckPath not found"},
		{"misspelt envVars", "services:\n  - type: web\n    envvars: []\n", "line 3: field envvars not found"},
		{"unknown env var field", "services:\n  - type: web\n    envVars:\n      - key: A\n        synch: false\n", "line 5: field synch not found"},
		{"wrong type", "services:\n  - type: web\n    autoDeploy: sometimes\n", "cannot unmarshal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := renderDecodeBlueprint([]byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	cfg := []byte("# ${IN_A_COMMENT}\nlisten: \":${PORT:-8080}\"\nupstream: {url: \"${UPSTREAM_URL}\"}\nx: \"$${LITERAL} ${A}${B:-b}\"\n")
	req, def := renderRequiredEnv(t, cfg)
	if got, want := fmt.Sprint(req), "[A UPSTREAM_URL]"; got != want {
		t.Errorf("required: got %s, want %s", got, want)
	}
	if got, want := fmt.Sprint(def), "[B PORT]"; got != want {
		t.Errorf("defaulted: got %s, want %s", got, want)
	}
}
