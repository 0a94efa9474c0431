//go:build e2e

package e2e

// Same-service mode deployed both ways Render offers (issue 20, item 7),
// without Docker and without Render: the release archives built by the
// release workflow's own build step; the native Python service's build
// command run against them (served on loopback) and its start command;
// the Docker image's ENTRYPOINT and CMD run as its user in a read-only
// working directory with exactly its environment. Debian's python3
// packages stand in for what pip installs in a real build: a `pip` that
// checks its arguments and an `uvicorn` that runs /usr/bin/python3 -m
// uvicorn (pip's console script does the same).

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	releaseOnce    sync.Once
	releaseVersion string
	releaseDir     string
	releaseErr     error
	releaseLog     string
)

// buildRelease runs release.yml's build step as GitHub would (bash -e,
// the step's env, VERSION the tag) into a temporary DIST, once per run
// (both callers ask for the same tag).
func buildRelease(t *testing.T, version string) string {
	t.Helper()
	root := renderRepoRoot(t)
	env, script, _ := releaseBuild(t, root)
	releaseOnce.Do(func() {
		releaseVersion = version
		// Under TestMain's temporary directory, removed when the run ends.
		dist, err := os.MkdirTemp(filepath.Dir(authgateBin), "release-")
		if err != nil {
			releaseErr = err
			return
		}
		releaseDir = dist
		cmd := exec.Command("bash", "-e", "-c", script)
		cmd.Dir = root
		cmd.Env = os.Environ()
		for k, v := range env {
			switch k {
			case "VERSION":
				v = version
			case "DIST":
				v = dist
			}
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		start := time.Now()
		out, err := cmd.CombinedOutput()
		releaseLog = fmt.Sprintf("release build step (%s): %s", time.Since(start).Round(time.Millisecond), out)
		releaseErr = err
	})
	if releaseErr != nil {
		t.Fatalf("release.yml build step: %v\n%s", releaseErr, releaseLog)
	}
	if version != releaseVersion {
		t.Fatalf("release built for %s, asked for %s", releaseVersion, version)
	}
	return releaseDir
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// untar extracts an archive's files into dir and returns their names.
func untar(t *testing.T, archive, dir string) []string {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var names []string
	for i := 0; i < 100; i++ {
		h, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if h.Typeflag != tar.TypeReg || strings.Contains(h.Name, "/") {
			t.Fatalf("%s: entry %q (type %c): want plain files at the top", archive, h.Name, h.Typeflag)
		}
		out, err := os.OpenFile(filepath.Join(dir, h.Name), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode)&0o777)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(out, tr); err != nil {
			t.Fatal(err)
		}
		out.Close()
	}
	t.Fatalf("%s: more than 100 entries", archive)
	return nil
}

// TestRelease: release.yml's build step makes exactly the two archives
// and SHA256SUMS, the sums match, each archive holds one static binary
// for its architecture, and linux/amd64's runs `version`.
func TestRelease(t *testing.T) {
	// The tag the native build command downloads, so that
	// TestSameServiceNative installs what this test checked.
	_, svc := ssLoadBlueprint(t, renderRepoRoot(t))
	m := nativeVersion.FindStringSubmatch(svc.BuildCommand)
	if m == nil {
		t.Fatalf("buildCommand %q: no V=", svc.BuildCommand)
	}
	version := m[1]
	dist := buildRelease(t, version)
	t.Log(releaseLog)
	ents, err := os.ReadDir(dist)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	want := []string{"SHA256SUMS", "authgate_" + version + "_linux_amd64.tar.gz", "authgate_" + version + "_linux_arm64.tar.gz"}
	if !slices.Equal(names, want) {
		t.Fatalf("release files %q, want %q", names, want)
	}
	sums, _ := os.ReadFile(filepath.Join(dist, "SHA256SUMS"))
	wantSums := fmt.Sprintf("%s  %s\n%s  %s\n", sha256File(t, filepath.Join(dist, want[1])), want[1], sha256File(t, filepath.Join(dist, want[2])), want[2])
	if string(sums) != wantSums {
		t.Errorf("SHA256SUMS:\n%s\nwant:\n%s", sums, wantSums)
	}
	check := exec.Command("sha256sum", "-c", "SHA256SUMS")
	check.Dir = dist
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("sha256sum -c: %v\n%s", err, out)
	}
	for _, a := range []struct {
		archive string
		machine elf.Machine
	}{{want[1], elf.EM_X86_64}, {want[2], elf.EM_AARCH64}} {
		dir := t.TempDir()
		if got := untar(t, filepath.Join(dist, a.archive), dir); !slices.Equal(got, []string{"authgate"}) {
			t.Fatalf("%s holds %q, want authgate alone", a.archive, got)
		}
		bin := filepath.Join(dir, "authgate")
		renderAssertStatic(t, bin)
		f, err := elf.Open(bin)
		if err != nil {
			t.Fatal(err)
		}
		if f.Machine != a.machine {
			t.Errorf("%s: machine %v, want %v", a.archive, f.Machine, a.machine)
		}
		f.Close()
		if fi, _ := os.Stat(bin); fi.Mode().Perm()&0o111 != 0o111 {
			t.Errorf("%s: mode %v, want executable by all", a.archive, fi.Mode())
		}
		if a.machine == elf.EM_X86_64 {
			out, err := exec.Command(bin, "version").CombinedOutput()
			if err != nil || string(out) != "authgate "+version+"\n" {
				t.Errorf("%s version: got %q %v, want %q", a.archive, out, err, "authgate "+version)
			}
		}
	}
}

// shims writes pip and uvicorn stand-ins into dir: pip accepts only
// `install -r requirements.txt` (with --no-cache-dir), whose packages
// Debian provides here; uvicorn is Debian's.
func shims(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	pip := `#!/bin/sh
# pip's stand-in: the requirements are Debian's python3-fastapi, python3-uvicorn, python3-jwt here.
[ "$1" = install ] || { echo "pip shim: only install: $*" >&2; exit 1; }
shift; [ "$1" = --no-cache-dir ] && shift
[ "$1" = -r ] && [ -f "$2" ] && [ $# -eq 2 ] || { echo "pip shim: want install -r FILE, got $*" >&2; exit 1; }
` + pythonBin + ` -c 'import fastapi, uvicorn, jwt' || exit 1
echo "pip shim: $2 satisfied by Debian's packages"
`
	uv := "#!/bin/sh\nexec " + pythonBin + " -m uvicorn \"$@\"\n"
	for name, body := range map[string]string{"pip": pip, "uvicorn": uv} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// copyTree copies the files under src to dst (directories 0755).
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if fi.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		return renderCopyFile(filepath.Join(dst, rel), p, fi.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
}

// fixedPortFree fails the test when the example's fixed internal port is
// taken: the example runs unchanged.
func fixedPortFree(t *testing.T, port string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		t.Fatalf("the example's backend port 127.0.0.1:%s is in use (%v); this test runs the example unchanged and needs it free", port, err)
	}
	ln.Close()
}

// exampleTraffic: through authgate on port, a JWT passes and a legacy UUID
// is rewritten into a JWT the example backend (JWT-only) accepts. It
// returns an open WebSocket.
func exampleTraffic(t *testing.T, port int) *wsClient {
	t.Helper()
	ws := fmt.Sprintf("ws://127.0.0.1:%d/api/v1/pam/ws?token=", port)
	jwt := mint(t, time.Hour, "example-jwt-user")[0]
	h, open := expectHello(t, ws+jwt, nil)
	if h.Sub != "example-jwt-user" || h.Iss == "authgate" {
		t.Errorf("JWT: the backend saw %+v; want the client's own token", h)
	}
	h, legacy := expectHello(t, ws+legacyUser, nil)
	if h.Sub != strings.ToLower(legacyUser) || h.Iss != "authgate" {
		t.Errorf("legacy UUID: the backend saw %+v; want a JWT minted by authgate", h)
	}
	legacy.closeWith(1000, "", 5*time.Second)
	return open
}

// sigtermAndWait: SIGTERM closes the open WebSocket with 1012, authgate
// stops the child after and exits 0 within shutdown_timeout +
// stop_timeout.
func sigtermAndWait(t *testing.T, p *renderProc, open *wsClient, limit time.Duration) {
	t.Helper()
	sent := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	if _, err := open.next(limit); closeCode(err) != 1012 {
		t.Errorf("open WebSocket on SIGTERM: got %v, want close 1012", err)
	}
	exitErr, ok := p.wait(time.Until(sent.Add(limit)))
	if !ok {
		t.Fatalf("still running %s after SIGTERM", limit)
	}
	if exitErr != nil {
		t.Errorf("exit: %v, want 0\nstderr:\n%s", exitErr, p.stderr.String())
	}
	var seq []string
	for _, e := range renderLogEvents(t, p.logPath, "") {
		switch e["event"] {
		case "upstream_start", "upstream_ready", "upstream_stop", "upstream_exit", "stop":
			seq = append(seq, e["event"].(string))
		}
	}
	if want := []string{"upstream_start", "upstream_ready", "upstream_stop", "upstream_exit", "stop"}; !slices.Equal(seq, want) {
		t.Errorf("events %q, want %q", seq, want)
	}
}

// TestSameServiceNative: render.yaml's python service. Its build command,
// run in a copy of its rootDir, downloads the release archive and
// SHA256SUMS (served on loopback from the release workflow's own build),
// verifies the checksum and installs bin/authgate; a tampered archive
// fails the build. Its start command then serves: health 200 once the
// backend is up, a JWT passes, a legacy UUID is rewritten, SIGTERM ends
// it with 0.
func TestSameServiceNative(t *testing.T) {
	root := renderRepoRoot(t)
	_, svc := ssLoadBlueprint(t, root)
	m := nativeVersion.FindStringSubmatch(svc.BuildCommand)
	if m == nil {
		t.Fatalf("buildCommand %q: no V=", svc.BuildCommand)
	}
	version := m[1]
	dist := buildRelease(t, version)
	files := http.FileServer(http.Dir(dist))
	var tampered bool
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rest, ok := strings.CutPrefix(r.URL.Path, "/"+version+"/")
		if !ok {
			http.NotFound(w, r)
			return
		}
		mu.Lock()
		bad := tampered
		mu.Unlock()
		if bad && strings.HasSuffix(rest, ".tar.gz") {
			w.Write([]byte("not the release"))
			return
		}
		r2 := r.Clone(r.Context())
		r2.URL.Path = "/" + rest
		files.ServeHTTP(w, r2)
	}))
	defer srv.Close()

	tmp := t.TempDir()
	bin := filepath.Join(tmp, "shims")
	shims(t, bin)
	path := bin + ":" + os.Getenv("PATH")
	build := func(dir string) ([]byte, error) {
		cmd := exec.Command("bash", "-c", svc.BuildCommand) // Render runs it in bash
		cmd.Dir = dir
		cmd.Env = []string{"PATH=" + path, "HOME=" + tmp, "AUTHGATE_RELEASES=" + srv.URL}
		return cmd.CombinedOutput()
	}

	// A tampered download must fail the build.
	bad := filepath.Join(tmp, "bad")
	copyTree(t, filepath.Join(root, svc.RootDir), bad)
	mu.Lock()
	tampered = true
	mu.Unlock()
	if out, err := build(bad); err == nil {
		t.Errorf("the build accepted a tampered archive:\n%s", out)
	} else if _, err := os.Stat(filepath.Join(bad, "bin", "authgate")); err == nil {
		t.Errorf("a tampered archive was installed")
	}
	mu.Lock()
	tampered = false
	mu.Unlock()

	svcDir := filepath.Join(tmp, "src")
	copyTree(t, filepath.Join(root, svc.RootDir), svcDir)
	out, err := build(svcDir)
	if err != nil {
		t.Fatalf("buildCommand: %v\n%s", err, out)
	}
	t.Logf("buildCommand:\n%s", out)
	if !strings.Contains(string(out), ": OK") || !strings.Contains(string(out), "authgate "+version) {
		t.Errorf("build output lacks the checksum check or the version:\n%s", out)
	}
	unpacked := t.TempDir()
	untar(t, filepath.Join(dist, "authgate_"+version+"_linux_amd64.tar.gz"), unpacked)
	if got, want := sha256File(t, filepath.Join(svcDir, "bin", "authgate")), sha256File(t, filepath.Join(unpacked, "authgate")); got != want {
		t.Errorf("bin/authgate sha256 %s, want the release's %s", got, want)
	}

	fixedPortFree(t, "8001")
	port := freePort(t)
	env := []string{"PATH=" + path, "PORT=" + strconv.Itoa(port), "PYTHONDONTWRITEBYTECODE=1"}
	for _, v := range svc.EnvVars {
		switch {
		case v.Key == "SUPABASE_JWT_SECRET":
			env = append(env, v.Key+"="+secret)
		case v.Value != "":
			env = append(env, v.Key+"="+v.Value)
		default:
			t.Fatalf("render.yaml declares %s; this test does not know its value", v.Key)
		}
	}
	cmd := exec.Command("bash", "-c", svc.StartCommand)
	cmd.Dir, cmd.Env = svcDir, env
	p := startRenderProc(t, "authgate (native)", cmd, filepath.Join(tmp, "authgate.log"), 30*time.Second)
	waitHealthy(t, p, fmt.Sprintf("http://127.0.0.1:%d%s", port, svc.HealthCheckPath))
	open := exampleTraffic(t, port)
	sigtermAndWait(t, p, open, 25*time.Second)
}

// TestSameServiceImage: the example Dockerfile's image, run as TestRenderImage
// runs the proxy-only one: authgate built with the Dockerfile's go build
// line, every COPY placed under an image root, the final stage's RUN (pip
// install of the requirements) stood in for by Debian's packages,
// ENTRYPOINT + CMD started as USER 65532 in the read-only WORKDIR with
// exactly the Dockerfile's ENV (PATH into the image root), render.yaml's
// envVars and PORT. authgate runs the backend as its child: health 200, a
// JWT passes, a legacy UUID is rewritten, SIGTERM: 1012, exit 0.
func TestSameServiceImage(t *testing.T) {
	root := renderRepoRoot(t)
	dfText, err := os.ReadFile(filepath.Join(root, sameServiceDir, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	df, err := parseDockerfile(string(dfText))
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	docker, _ := ssLoadBlueprint(t, root)
	if want := []string{"pip install --no-cache-dir -r /app/requirements.txt"}; !slices.Equal(df.finalRuns, want) {
		t.Fatalf("Dockerfile final-stage RUN %q: this test stands in for %q only", df.finalRuns, want)
	}

	tmp := imageTempDir(t, "authgate-samesvc-image-")
	os.Chmod(tmp, 0o755)
	img := imageRoot(filepath.Join(tmp, "image"))
	out := filepath.Join(tmp, "build", filepath.FromSlash(df.buildOut))
	buildAsDockerfile(t, root, df, out)
	renderAssertStatic(t, out)
	for _, c := range df.copies {
		src, dst := c[0], c[1]
		from, mode := filepath.Join(root, filepath.FromSlash(src)), os.FileMode(0o644)
		if s, ok := strings.CutPrefix(src, "build:"); ok {
			if s != df.buildOut {
				t.Fatalf("COPY --from=build %s: only the binary is followed", s)
			}
			from, mode = out, 0o755
		}
		if err := renderCopyFile(img.path(dst), from, mode); err != nil {
			t.Fatal(err)
		}
	}
	// What the image's PATH holds besides: pip's uvicorn (here Debian's).
	var imgPath []string
	var env []string
	for _, kv := range df.env {
		k, v, _ := strings.Cut(kv, "=")
		if k == "PATH" {
			for _, d := range strings.Split(v, ":") {
				imgPath = append(imgPath, img.path(d))
			}
			v = strings.Join(imgPath, ":")
		} else if strings.HasPrefix(v, "/") {
			v = img.path(v)
		}
		env = append(env, k+"="+v)
	}
	if len(imgPath) == 0 {
		t.Fatalf("Dockerfile: no ENV PATH")
	}
	shims(t, filepath.Join(tmp, "shims"))
	if err := renderCopyFile(filepath.Join(imgPath[0], "uvicorn"), filepath.Join(tmp, "shims", "uvicorn"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, v := range docker.EnvVars {
		if v.Key != "SUPABASE_JWT_SECRET" {
			t.Fatalf("render.yaml declares %s; this test does not know its value", v.Key)
		}
		env = append(env, v.Key+"="+secret)
	}
	port := freePort(t)
	env = append(env, "PORT="+strconv.Itoa(port))

	uid, gid := uint32(os.Getuid()), uint32(os.Getgid())
	var cred *syscall.Credential
	u, g, _ := strings.Cut(df.user, ":")
	imgUID, err1 := strconv.ParseUint(u, 10, 32)
	imgGID, err2 := strconv.ParseUint(g, 10, 32)
	if err1 != nil || err2 != nil || imgUID == 0 {
		t.Fatalf("Dockerfile USER %q: want numeric uid:gid, not root", df.user)
	}
	if uid == 0 {
		cred = &syscall.Credential{Uid: uint32(imgUID), Gid: uint32(imgGID), Groups: []uint32{}}
		uid, gid = uint32(imgUID), uint32(imgGID)
	} else {
		t.Logf("not root: running as uid %d instead of the image's %d", uid, imgUID)
	}
	workdir := img.path(df.workdir)
	filepath.Walk(string(img), func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.IsDir() {
			err = os.Chmod(p, 0o555)
		}
		return err
	})
	before, _ := os.ReadDir(workdir)

	// ENTRYPOINT's authgate, found on the image's PATH as Docker finds it.
	argv := append(slices.Clone(df.entrypoint), df.cmd...)
	var exe string
	for _, d := range imgPath {
		if fi, err := os.Stat(filepath.Join(d, argv[0])); err == nil && fi.Mode().IsRegular() {
			exe = filepath.Join(d, argv[0])
			break
		}
	}
	if exe == "" {
		t.Fatalf("ENTRYPOINT %q: not on the image's PATH", argv[0])
	}
	argv[slices.Index(argv, "/etc/authgate/config.yaml")] = img.path("/etc/authgate/config.yaml")
	fixedPortFree(t, "8001")
	cmd := exec.Command(exe, argv[1:]...)
	cmd.Dir, cmd.Env = workdir, env
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	t.Logf("running %q as uid %d in %s with %q", argv, uid, workdir, env)
	p := startRenderProc(t, "authgate (image)", cmd, filepath.Join(t.TempDir(), "authgate.log"), 30*time.Second)
	waitHealthy(t, p, fmt.Sprintf("http://127.0.0.1:%d%s", port, docker.HealthCheckPath))
	// authgate and its child run as the image's user, the child with
	// the image's environment plus PORT=8001.
	child := int(renderLogEvents(t, p.logPath, "upstream_start")[0]["pid"].(float64))
	for _, pid := range []int{p.cmd.Process.Pid, child} {
		st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if want := fmt.Sprintf("Uid:\t%d\t%d\t%d\t%d", uid, uid, uid, uid); !strings.Contains(string(st), want+"\n") {
			t.Errorf("process %d: status lacks %q", pid, want)
		}
		if want := fmt.Sprintf("Gid:\t%d\t%d\t%d\t%d", gid, gid, gid, gid); !strings.Contains(string(st), want+"\n") {
			t.Errorf("process %d: status lacks %q", pid, want)
		}
	}
	raw, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", p.cmd.Process.Pid))
	if got := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00"); !slices.Equal(renderSorted(got), renderSorted(env)) {
		t.Errorf("authgate's environment: got %q, want %q", got, env)
	}
	raw, _ = os.ReadFile(fmt.Sprintf("/proc/%d/environ", child))
	wantChild := append(slices.DeleteFunc(slices.Clone(env), func(kv string) bool { return strings.HasPrefix(kv, "PORT=") }), "PORT=8001")
	got := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
	// The uvicorn stand-in is a sh script, and sh exports PWD before it
	// execs python: that one is the stand-in's, not authgate's.
	got = slices.DeleteFunc(got, func(kv string) bool { return strings.HasPrefix(kv, "PWD=") })
	if !slices.Equal(renderSorted(got), renderSorted(wantChild)) {
		t.Errorf("the child's environment: got %q, want %q", got, wantChild)
	}
	open := exampleTraffic(t, port)
	sigtermAndWait(t, p, open, 25*time.Second)
	if after, _ := os.ReadDir(workdir); len(after) != len(before) {
		t.Errorf("the working directory changed: %d entries, was %d", len(after), len(before))
	}
}

// waitHealthy waits up to 30 s for url to answer 200, failing the test
// with p's log and stderr if it does not.
func waitHealthy(t *testing.T, p *renderProc, url string) {
	t.Helper()
	err := renderPoll(p, 30*time.Second, func() error { return get200(url) })
	if err != nil {
		t.Fatalf("%v\nlog:\n%s\nstderr:\n%s", err, p.logText(), p.stderr.String())
	}
}
