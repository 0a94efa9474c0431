//go:build e2e

package e2e

import (
	"debug/elf"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// distrolessUsers are the users of gcr.io/distroless/static's /etc/passwd.
var distrolessUsers = map[string]uint32{"root": 0, "nonroot": 65532}

func imageID(s string) (uint32, error) {
	if id, ok := distrolessUsers[s]; ok {
		return id, nil
	}
	n, err := strconv.ParseUint(s, 10, 32)
	return uint32(n), err
}

// imageRoot is a directory standing in for the image's file system: the
// Dockerfile's absolute paths are placed under it.
type imageRoot string

func (r imageRoot) path(p string) string { return filepath.Join(string(r), filepath.FromSlash(p)) }

func renderCopyFile(dst, src string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// TestRenderImage runs authgate the way the Docker image does on Render,
// without Docker (issue 13, item 4): the binary built with the
// Dockerfile's own `go build` line (CGO_ENABLED=0 -trimpath: static),
// placed where the Dockerfile puts it next to the repository's
// config.yaml, started with the image's ENTRYPOINT and CMD as the image's
// USER (uid 65532 when the test runs as root), in a working directory it
// cannot write to, with exactly the environment the image has on Render:
// the Dockerfile's ENV, the envVars render.yaml declares, and PORT.
// Render's health check answers 200, a PyJWT token passes, a legacy UUID
// is rewritten, and SIGTERM closes an open WebSocket with 1012 and exits 0
// within shutdown_timeout, which is under the 30 s Render waits before
// SIGKILL.
func TestRenderImage(t *testing.T) {
	root := renderRepoRoot(t)
	dfText, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	df, err := parseDockerfile(string(dfText))
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	if len(df.finalRuns) > 0 {
		t.Fatalf("Dockerfile: RUN %q in the final stage: TestRenderImage does not follow it", df.finalRuns)
	}
	bp := renderLoadBlueprint(t, root)
	config, err := os.ReadFile(filepath.Join(root, "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}

	// The image is static and small because of these; they are the flags
	// this test claims to test.
	if !slices.Contains(df.buildEnv, "CGO_ENABLED=0") {
		t.Errorf("Dockerfile: go build without CGO_ENABLED=0 (env %q): the binary would need a libc distroless/static does not have", df.buildEnv)
	}
	if !slices.Contains(df.buildArgs, "-trimpath") {
		t.Errorf("Dockerfile: go build without -trimpath (%q)", df.buildArgs)
	}

	// The image's file system: a root-owned 0755 tree, readable by the
	// image's user, writable only by root.
	tmp := imageTempDir(t, "authgate-render-image-")
	if err := os.Chmod(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	stage := filepath.Join(tmp, "build") // the build stage's absolute paths
	img := imageRoot(filepath.Join(tmp, "image"))

	// Build with the Dockerfile's line, in the repository (the build
	// stage's `COPY . .` into its WORKDIR).
	out := filepath.Join(stage, filepath.FromSlash(df.buildOut))
	t.Logf("building: %q go build %q", df.buildEnv, df.buildArgs)
	start := time.Now()
	buildAsDockerfile(t, root, df, out)
	t.Logf("built in %v", time.Since(start).Round(time.Millisecond))
	for _, step := range df.afterward {
		if step[0] != df.buildOut {
			t.Fatalf("Dockerfile: build step %q: TestRenderImage does not follow it yet", step)
		}
		if b, err := exec.Command(out, step[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("build step %q: %v\n%s", step, err, b)
		} else {
			t.Logf("build step %q: %s", step, strings.TrimSpace(string(b)))
		}
	}
	renderAssertStatic(t, out)

	for _, c := range df.copies {
		src, dst := c[0], c[1]
		if strings.HasSuffix(dst, "/") {
			dst += filepath.Base(src)
		}
		var from string
		mode := os.FileMode(0o644)
		if s, ok := strings.CutPrefix(src, "build:"); ok {
			if s != df.buildOut {
				t.Fatalf("Dockerfile: COPY --from=build %s: only the binary (%s) is followed", s, df.buildOut)
			}
			from, mode = out, 0o755
		} else {
			from = filepath.Join(root, filepath.FromSlash(src))
		}
		if fi, err := os.Stat(from); err != nil || !fi.Mode().IsRegular() {
			t.Fatalf("Dockerfile: COPY %s %s: only files are followed (%v)", c[0], c[1], err)
		}
		if err := renderCopyFile(img.path(dst), from, mode); err != nil {
			t.Fatal(err)
		}
	}

	// Who runs it.
	var cred *syscall.Credential
	uid := uint32(os.Getuid())
	if df.user == "" {
		t.Fatalf("Dockerfile: no USER in the final stage: the image would run as root")
	}
	userS, groupS, _ := strings.Cut(df.user, ":")
	imgUID, err := imageID(userS)
	if err != nil {
		t.Fatalf("Dockerfile: USER %s: %v", df.user, err)
	}
	imgGID := imgUID
	if groupS != "" {
		if imgGID, err = imageID(groupS); err != nil {
			t.Fatalf("Dockerfile: USER %s: %v", df.user, err)
		}
	}
	if imgUID == 0 {
		t.Errorf("Dockerfile: USER %s is root; the image must run as non-root", df.user)
	}
	if uid == 0 {
		cred = &syscall.Credential{Uid: imgUID, Gid: imgGID, Groups: []uint32{}}
		uid = imgUID
	} else {
		t.Logf("not root: running as uid %d instead of the image's %d", uid, imgUID)
	}

	// Where it runs: the image's WORKDIR (distroless has none: /), made
	// read-only for everyone but root.
	workdir := img.path(renderOr(df.workdir, "/"))
	if err := os.MkdirAll(workdir, 0o755); err != nil {
		t.Fatal(err)
	}
	filepath.Walk(string(img), func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.IsDir() {
			err = os.Chmod(p, 0o555)
		}
		return err
	})
	before, _ := os.ReadDir(workdir)
	if fi, err := os.Stat(workdir); err != nil {
		t.Fatal(err)
	} else if st := fi.Sys().(*syscall.Stat_t); (st.Uid == uid && fi.Mode().Perm()&0o200 != 0) || fi.Mode().Perm()&0o022 != 0 {
		t.Fatalf("working directory %s (mode %v, owner %d) is writable by uid %d", workdir, fi.Mode().Perm(), st.Uid, uid)
	}

	// The environment: the Dockerfile's ENV (absolute paths into the image
	// root), render.yaml's envVars, PORT. Nothing else: no HOME, no PATH.
	be := startBackend(t)
	port := freePort(t)
	values := map[string]string{"UPSTREAM_URL": be.URL(), "SUPABASE_JWT_SECRET": secret}
	var env []string
	for _, kv := range df.env {
		k, v, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(v, "/") {
			v = img.path(v)
		}
		env = append(env, k+"="+v)
	}
	if len(bp.Services) != 1 {
		t.Fatalf("render.yaml: %d services, want 1", len(bp.Services))
	}
	for _, v := range bp.Services[0].EnvVars {
		val, ok := values[v.Key]
		if !ok {
			t.Fatalf("render.yaml declares %s; TestRenderImage does not know what a deploy sets it to", v.Key)
		}
		env = append(env, v.Key+"="+val)
	}
	env = append(env, "PORT="+strconv.Itoa(port))

	// The shipped config's admin listener is a fixed loopback port.
	admin := renderConfigScalar(t, config, "admin_listen")
	if admin != "" {
		ln, err := net.Listen("tcp", admin)
		if err != nil {
			t.Fatalf("config.yaml's admin_listen %s is in use by another process (%v); this test runs the shipped config unchanged and needs it free", admin, err)
		}
		ln.Close()
	}

	argv := append(slices.Clone(df.entrypoint), df.cmd...)
	if len(argv) == 0 {
		t.Fatalf("Dockerfile: no ENTRYPOINT or CMD")
	}
	argv[0] = img.path(argv[0])
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir, cmd.Env = workdir, env
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	logs := t.TempDir()
	t.Logf("running %q as uid %d in %s with %q", argv, uid, workdir, env)
	p := startRenderProc(t, "authgate", cmd, filepath.Join(logs, "authgate.log"), 30*time.Second)

	// Render's health check, on the public port.
	svc := bp.Services[0]
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	err = renderPoll(p, 20*time.Second, func() error { return get200(base + svc.HealthCheckPath) })
	if err != nil {
		t.Fatalf("render.yaml's healthCheckPath %s never answered 200: %v\nstderr:\n%s\nlog:\n%s", svc.HealthCheckPath, err, p.stderr.String(), p.logText())
	}
	if admin != "" {
		resp, err := noKeepAlive.Get("http://" + admin + "/readyz")
		if err != nil || resp.StatusCode != 200 {
			t.Errorf("admin %s/readyz: %v %v", admin, resp, err)
		}
		if resp != nil {
			resp.Body.Close()
		}
	}

	// It runs as the image's user, with exactly that environment.
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	gid := uint32(os.Getgid())
	if cred != nil {
		gid = cred.Gid
	}
	for _, want := range []string{
		fmt.Sprintf("Uid:\t%d\t%d\t%d\t%d", uid, uid, uid, uid),
		fmt.Sprintf("Gid:\t%d\t%d\t%d\t%d", gid, gid, gid, gid),
	} {
		field, _, _ := strings.Cut(want, ":")
		var got string
		for _, l := range strings.Split(string(status), "\n") {
			if strings.HasPrefix(l, field+":") {
				got = l
			}
		}
		if got != want {
			t.Errorf("authgate runs with %q, want %q", got, want)
		}
	}
	if raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", p.cmd.Process.Pid)); err != nil {
		t.Error(err)
	} else if got := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00"); !slices.Equal(renderSorted(got), renderSorted(env)) {
		t.Errorf("environment: got %q, want %q", got, env)
	}
	if cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", p.cmd.Process.Pid)); err != nil || cwd != workdir {
		t.Errorf("working directory: got %q %v, want %q", cwd, err, workdir)
	}

	ws := fmt.Sprintf("ws://127.0.0.1:%d/api/v1/pam/ws?token=", port)
	jwt := mint(t, time.Hour, "render-image-jwt-user")[0]
	h, open := expectHello(t, ws+jwt, nil)
	if h.Sub != "render-image-jwt-user" || h.Legacy || h.TokenSHA256 != sha256hex(jwt) || h.XAuthgateClass != "jwt" {
		t.Errorf("JWT: the backend saw %+v; want the client's own token", h)
	}
	// The shipped schedule rewrites this user in every stage (it is outside
	// the 25% share of the second): `authgate explain --at` shows it.
	h, legacy := expectHello(t, ws+legacyUser, nil)
	if want := strings.ToLower(legacyUser); h.Sub != want || !h.Legacy || h.Iss != "authgate" || h.XAuthgateLegacy != "1" {
		t.Errorf("legacy UUID: the backend saw %+v; want a minted JWT for sub %s", h, want)
	}
	legacy.closeWith(1000, "", 5*time.Second)
	// The client has the close frame back before authgate has finished the
	// relay (the backend's TCP close, then the ws_close line): wait for
	// that line, so that SIGTERM finds only the JWT connection open.
	if err := waitFor(5*time.Second, func() error {
		b, err := os.ReadFile(p.logPath)
		if err != nil {
			return err
		}
		if !strings.Contains(string(b), `"event":"ws_close"`) {
			return fmt.Errorf("no ws_close line in %s", p.logPath)
		}
		return nil
	}); err != nil {
		t.Fatalf("the legacy connection, closed by the client: %v", err)
	}

	// SIGTERM with the JWT connection open: 1012, then exit 0 within
	// shutdown_timeout, which must be under Render's 30 s.
	grace, err := time.ParseDuration(renderConfigScalar(t, config, "shutdown_timeout"))
	if err != nil {
		t.Fatalf("config.yaml shutdown_timeout: %v", err)
	}
	if grace >= 30*time.Second {
		t.Errorf("config.yaml shutdown_timeout %v: Render sends SIGKILL 30 s after SIGTERM; want less", grace)
	}
	sent := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	_, err = open.next(grace)
	if closeCode(err) != 1012 {
		t.Errorf("open WebSocket on SIGTERM: want close 1012, got %v", err)
	} else {
		t.Logf("1012 after %v", time.Since(sent).Round(time.Millisecond))
	}
	exitErr, ok := p.wait(time.Until(sent.Add(grace)))
	if !ok {
		t.Fatalf("authgate still running %v after SIGTERM (shutdown_timeout)", grace)
	}
	t.Logf("exited %v after SIGTERM: %v", time.Since(sent).Round(time.Millisecond), exitErr)
	if exitErr != nil {
		t.Errorf("authgate exited with %v\nstderr:\n%s", exitErr, p.stderr.String())
	}

	if after, _ := os.ReadDir(workdir); len(after) != len(before) {
		t.Errorf("the working directory changed: %d entries, was %d", len(after), len(before))
	}
	if s := p.stderr.String(); s != "" {
		t.Logf("stderr:\n%s", s)
	}
	auth := renderLogEvents(t, p.logPath, "auth")
	var classes []string
	for _, e := range auth {
		classes = append(classes, fmt.Sprint(e["class"], "/", e["action"]))
	}
	if !slices.Contains(classes, "jwt/pass") || !slices.Contains(classes, "uuid/rewrite") {
		t.Errorf("auth events %q: want jwt/pass and uuid/rewrite", classes)
	}
	if stops := renderLogEvents(t, p.logPath, "stop"); len(stops) != 1 || stops[0]["websockets_closed"] != 1.0 {
		t.Errorf("stop events %v: want one, with websockets_closed 1", stops)
	}
}

// renderAssertStatic fails unless bin is a static ELF executable: no program
// interpreter, no shared libraries (distroless/static has no libc).
func renderAssertStatic(t *testing.T, bin string) {
	t.Helper()
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s has a program interpreter: not static", bin)
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
		t.Errorf("%s needs shared libraries %q (%v): not static", bin, libs, err)
	}
}

func renderSorted(s []string) []string { return slices.Sorted(slices.Values(s)) }

func renderOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// imageTempDir is a directory for an image's file system, removed at the
// end of the test even where the test made parts of it read-only.
func imageTempDir(t *testing.T, prefix string) string {
	t.Helper()
	tmp, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		filepath.Walk(tmp, func(p string, fi os.FileInfo, err error) error {
			if err == nil && fi.IsDir() {
				os.Chmod(p, 0o755)
			}
			return nil
		})
		os.RemoveAll(tmp)
	})
	return tmp
}

// buildAsDockerfile runs the Dockerfile's go build line in the repository
// root (the build stage's COPY . .), with its environment, writing the
// binary to out instead of the line's -o path.
func buildAsDockerfile(t *testing.T, root string, df *dockerfile, out string) {
	t.Helper()
	args := slices.Clone(df.buildArgs)
	for i := range args {
		if i > 0 && args[i-1] == "-o" {
			args[i] = out
		}
	}
	build := exec.Command("go", append([]string{"build"}, args...)...)
	build.Dir = root
	build.Env = append(os.Environ(), df.buildEnv...)
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
}
