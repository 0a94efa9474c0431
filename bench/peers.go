package main

import (
	"bytes"
	"embed"
	"errors"
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
	"text/template"
	"time"
)

// peerDef is a benchmark peer as data (STYLE 9): its config template under
// bench/peers/, the one line that starts it, and the tests it takes. The
// harness treats every peer alike: it renders the template into the
// instance's own directory, runs the line pinned to core 1 (taskset) with
// stdout and stderr going to a file there, waits for the port, measures
// the process and its descendants from /proc, and stops it with SIGTERM
// (SIGKILL after 10 s, and Pdeathsig if the bench dies).
//
// Fields of the line, the environment and the template: {bin} {conf}
// {dir} {listen} {port} {upstream} {secret} {root} (the module root);
// the template sees the instance struct.
type peerDef struct {
	name    string
	bin     string // on PATH or in /usr/sbin; "./pkg" is built from the module with go build
	conf    string // template file in bench/peers/, "" for none
	run     string // the line that starts it ('...' quotes a word)
	env     string // extra environment, space-separated
	probe   string // a line that must succeed for the peer to count as installed
	tests   string // the tests it takes
	note    string // why it skips the others
	install string // what to run when it is missing
}

var peerDefs = []peerDef{
	{name: "nginx", bin: "nginx", conf: "nginx.conf", run: "{bin} -p {dir} -c {conf} -e {dir}/error.log", tests: "upgrade,tls,echo64,echo64k,idle,storm", install: "apt-get install -y nginx"},
	{name: "haproxy", bin: "haproxy", conf: "haproxy.cfg", run: "{bin} -db -f {conf}", tests: "upgrade,tls,echo64,echo64k,idle", install: "apt-get install -y haproxy"},
	{name: "caddy", bin: "caddy", conf: "Caddyfile", run: "{bin} run --adapter caddyfile --config {conf}", env: "GOMAXPROCS=1 HOME={dir} XDG_CONFIG_HOME={dir} XDG_DATA_HOME={dir}", tests: "upgrade,tls,echo64,echo64k,idle", install: "apt-get install -y caddy"},
	{name: "copier", bin: "./bench/copier", run: "{bin} -listen {listen} -upstream {upstream}", env: "GOMAXPROCS=1", tests: "upgrade,echo64,echo64k", note: "plain TCP upstreams only; no idle test: Go's splice holds a pipe per waiting direction, six descriptors per idle connection"},
	{name: "authgate", bin: "./cmd/authgate", conf: "authgate.yaml", run: "{bin} serve --config {conf}", env: "GOMAXPROCS=1 BENCH_JWT_SECRET={secret}", tests: "upgrade,tls,echo64,echo64k,idle,storm"},
	// The reconnect storm's status quo: the e2e FastAPI backend with the
	// seed's UUID shim, rejecting (uvicorn, one process, Debian's Python).
	{name: "backend", bin: "/usr/bin/python3", run: "{bin} -m uvicorn app:app --app-dir {root}/e2e/backend --host 127.0.0.1 --port {port} --no-access-log --log-level warning", env: "JWT_SECRET={secret} LEGACY_UUID=reject", probe: "{bin} -c 'import fastapi, uvicorn, jwt, websockets'", tests: "storm", install: "apt-get install -y python3-fastapi python3-uvicorn python3-websockets python3-jwt"},
}

// stormUpstream is what the storm's proxies forward the JWT clients to:
// the same FastAPI backend without the shim (what it becomes behind
// authgate), pinned to core 0 with the load.
var stormUpstream = peerDef{name: "fastapi", bin: "/usr/bin/python3", run: "{bin} -m uvicorn app:app --app-dir {root}/e2e/backend --host 127.0.0.1 --port {port} --no-access-log --log-level warning", env: "JWT_SECRET={secret}", probe: "{bin} -c 'import fastapi, uvicorn, jwt, websockets'"}

//go:embed peers
var peerFiles embed.FS

func findPeerDef(name string) (peerDef, bool) {
	i := slices.IndexFunc(peerDefs, func(d peerDef) bool { return d.name == name })
	if i < 0 {
		return peerDef{}, false
	}
	return peerDefs[i], true
}

func (d peerDef) takes(test string) bool { return slices.Contains(strings.Split(d.tests, ","), test) }

// instance is what a peer's template and line are filled with.
type instance struct {
	Port     int
	Listen   string // 127.0.0.1:Port
	Dir      string // the instance's own directory
	Upstream string // host:port of the backend it forwards to
	TLS      bool   // the upstream speaks TLS (CA: the test CA to verify it with)
	CA       string
	Storm    bool // turn legacy UUID tokens away (the reconnect storm)
	MaxConn  int  // connections within RLIMIT_NOFILE (two descriptors each)
	Nofile   int  // RLIMIT_NOFILE
}

// peer is one running instance. pid is the process started; its CPU and
// memory are measured with its descendants' (nginx's worker). base is
// ws://127.0.0.1:PORT; for direct, the echo backend and pid 0.
type peer struct {
	name string
	base string
	pid  int
	stop func()
	// profile control of the in-process authgate (-profile), or nil.
	ctl io.Writer
}

func (p *peer) hooks(path func() string) windowHooks {
	if p.ctl == nil {
		return noHooks()
	}
	return windowHooks{
		begin: func() { fmt.Fprintf(p.ctl, "start %s\n", path()) },
		end: func() {
			fmt.Fprintf(p.ctl, "stop\n")
			time.Sleep(100 * time.Millisecond) // let the profile be written
		},
	}
}

// env is what every peer needs.
type env struct {
	root     string            // module root
	dir      string            // temp dir for configs, logs, pid files
	backend  string            // echo backend host:port (plain)
	tlsAddr  map[string]string // TLS echo listeners: "tls", "tls-nores" -> host:port
	pki      testPKI
	echoCtl  *echoControl
	bins     map[string]string // peer -> binary (resolved or built)
	self     string            // this executable
	taskset  string            // taskset binary, "" when not installed
	secret   string
	profile  bool
	seq      int   // instances started, for unique directories
	loadPIDs []int // the load side's processes, for meter
	nofile   int
}

// pinned returns argv run on core cpu when taskset is available.
func (e *env) pinned(cpu string, argv ...string) []string {
	if e.taskset == "" {
		return argv
	}
	return append([]string{e.taskset, "-c", cpu}, argv...)
}

// resolve finds or builds the binaries of the peers asked for; a peer
// that is not installed is dropped with a message saying how to install
// it.
func (e *env) resolve(defs []peerDef, w io.Writer) ([]peerDef, error) {
	var ok []peerDef
	for _, d := range defs {
		bin, err := e.binary(d)
		if err != nil {
			return nil, err
		}
		if bin == "" {
			fmt.Fprintf(w, "NOTE: %s not found: the %s peer is skipped.", d.bin, d.name)
			if d.install != "" {
				fmt.Fprintf(w, " Install it with: apt-get update && %s", d.install)
			}
			fmt.Fprintln(w)
			continue
		}
		e.bins[d.name] = bin
		ok = append(ok, d)
	}
	return ok, nil
}

func (e *env) binary(d peerDef) (string, error) {
	if b, ok := e.bins[d.name]; ok {
		return b, nil
	}
	if strings.HasPrefix(d.bin, "./") {
		out := filepath.Join(e.dir, filepath.Base(d.bin))
		if _, err := os.Stat(out); err == nil {
			return out, nil
		}
		build := exec.Command("go", "build", "-o", out, d.bin)
		build.Dir = e.root
		if b, err := build.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go build %s: %w\n%s", d.bin, err, b)
		}
		return out, nil
	}
	bin := d.bin
	if !filepath.IsAbs(bin) {
		if p, err := exec.LookPath(bin); err == nil {
			bin = p
		} else if _, err := os.Stat("/usr/sbin/" + bin); err == nil {
			bin = "/usr/sbin/" + bin
		} else {
			return "", nil
		}
	} else if _, err := os.Stat(bin); err != nil {
		return "", nil
	}
	if d.probe != "" {
		argv := splitLine(expand(d.probe, map[string]string{"bin": bin}))
		if err := exec.Command(argv[0], argv[1:]...).Run(); err != nil {
			return "", nil
		}
	}
	return bin, nil
}

// version is the first line a peer's program prints about itself, for the
// header.
func version(name, bin string) string {
	var args []string
	switch name {
	case "nginx":
		args = []string{"-v"}
	case "haproxy":
		args = []string{"-v"}
	case "caddy":
		args = []string{"version"}
	case "backend":
		args = []string{"-c", "import fastapi, uvicorn, sys; print('FastAPI', fastapi.__version__, 'uvicorn', uvicorn.__version__, 'Python', sys.version.split()[0])"}
	default:
		return ""
	}
	out, _ := exec.Command(bin, args...).CombinedOutput()
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

// start runs one instance of d pinned to cpu.
func (e *env) start(d peerDef, inst instance, cpu string) (*peer, error) {
	e.seq++
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	inst.Port, inst.Listen = port, fmt.Sprintf("127.0.0.1:%d", port)
	inst.Dir = filepath.Join(e.dir, fmt.Sprintf("%s-%d", d.name, e.seq))
	inst.Nofile, inst.MaxConn = e.nofile, (e.nofile-1000)/2
	if err := os.MkdirAll(inst.Dir, 0o755); err != nil {
		return nil, err
	}
	os.Chmod(inst.Dir, 0o755) // nginx's workers run as another user
	bin := e.bins[d.name]
	if bin == "" {
		if bin, err = e.binary(d); err != nil || bin == "" {
			return nil, fmt.Errorf("%s: no binary (%v)", d.name, err)
		}
	}
	fields := map[string]string{"bin": bin, "dir": inst.Dir, "listen": inst.Listen, "port": strconv.Itoa(port),
		"upstream": inst.Upstream, "secret": e.secret, "root": e.root}
	if d.conf != "" {
		conf, err := e.render(d.conf, inst)
		if err != nil {
			return nil, err
		}
		fields["conf"] = conf
	}
	run, envs := d.run, d.env
	if d.name == "authgate" && e.profile {
		// -profile: the same proxy.Run in this program, role "inproc",
		// which CPU-profiles the windows it is told about on stdin.
		fields["bin"] = e.self
		run, envs = "{bin} {conf}", envs+" "+roleEnv+"=inproc"
	}
	argv := e.pinned(cpu, splitLine(expand(run, fields))...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = inst.Dir
	cmd.Env = os.Environ()
	for _, kv := range strings.Fields(envs) {
		cmd.Env = append(cmd.Env, expand(kv, fields))
	}
	logPath := filepath.Join(inst.Dir, "stdout.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var ctl io.WriteCloser
	if d.name == "authgate" && e.profile {
		if ctl, err = cmd.StdinPipe(); err != nil {
			logf.Close()
			return nil, err
		}
	}
	err = cmd.Start()
	logf.Close()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d.name, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	stop := func() {
		if ctl != nil {
			ctl.Close()
		}
		terminate(cmd, exited)
	}
	if err := waitListening(inst.Listen, 20*time.Second, exited); err != nil {
		stop()
		out, _ := os.ReadFile(logPath)
		elog, _ := os.ReadFile(filepath.Join(inst.Dir, "error.log"))
		return nil, fmt.Errorf("%s (%s): %w\n%s%s", d.name, strings.Join(argv, " "), err, out, elog)
	}
	p := &peer{name: d.name, base: "ws://" + inst.Listen, pid: cmd.Process.Pid, stop: stop}
	if ctl != nil {
		p.ctl = ctl
	}
	return p, nil
}

// render fills a template from bench/peers/ into the instance's directory.
func (e *env) render(name string, inst instance) (string, error) {
	src, err := peerFiles.ReadFile("peers/" + name)
	if err != nil {
		return "", err
	}
	t, err := template.New(name).Option("missingkey=error").Parse(string(src))
	if err != nil {
		return "", fmt.Errorf("bench/peers/%s: %w", name, err)
	}
	var b bytes.Buffer
	if err := t.Execute(&b, inst); err != nil {
		return "", fmt.Errorf("bench/peers/%s: %w", name, err)
	}
	path := filepath.Join(inst.Dir, name)
	return path, os.WriteFile(path, b.Bytes(), 0o644)
}

// expand replaces {field} in s.
func expand(s string, fields map[string]string) string {
	for k, v := range fields {
		s = strings.ReplaceAll(s, "{"+k+"}", v)
	}
	return s
}

// splitLine splits a command line at spaces; '...' quotes a word.
func splitLine(s string) []string {
	var out []string
	var cur strings.Builder
	in, have := false, false
	for _, r := range s {
		switch {
		case r == '\'':
			in, have = !in, true
		case r == ' ' && !in:
			if have {
				out = append(out, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if have {
		out = append(out, cur.String())
	}
	return out
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func waitListening(addr string, d time.Duration, exited <-chan struct{}) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return errors.New("exited during start")
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s not listening after %s", addr, d)
}

// tree is pid and its descendants now (nginx's master and worker).
func tree(pid int) []int {
	if pid == 0 {
		return nil
	}
	out := []int{pid}
	for i := 0; i < len(out) && i < 64; i++ {
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", out[i]))
		for _, t := range tasks {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", out[i], t.Name()))
			for _, f := range strings.Fields(string(b)) {
				if c, err := strconv.Atoi(f); err == nil {
					out = append(out, c)
				}
			}
		}
	}
	return out
}

// cpuTimes is a process's CPU time: utime and stime from /proc/PID/stat
// (all threads, dead ones included), at the kernel's 10 ms tick (USER_HZ
// 100).
type cpuTimes struct{ user, sys time.Duration }

func (c cpuTimes) total() time.Duration { return c.user + c.sys }

func (c cpuTimes) sub(d cpuTimes) cpuTimes { return cpuTimes{c.user - d.user, c.sys - d.sys} }

func procCPU(pid int) cpuTimes {
	if pid == 0 {
		return cpuTimes{}
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return cpuTimes{}
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return cpuTimes{}
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return cpuTimes{time.Duration(ut) * 10 * time.Millisecond, time.Duration(st) * 10 * time.Millisecond}
}

// treeCPU is the CPU time of pid and its descendants.
func treeCPU(pid int) cpuTimes {
	var c cpuTimes
	for _, p := range tree(pid) {
		t := procCPU(p)
		c.user += t.user
		c.sys += t.sys
	}
	return c
}

// meter samples the CPU of the proxy under test (with its descendants)
// and of the load side: the load generator (this process) and the echo
// backend, which share the other core. The load side's CPU per operation
// shows what a proxy costs the processes around it (for example,
// cross-core wake-ups and cache misses on payloads another core wrote),
// which the proxy's own CPU does not show.
type meter struct {
	proxy int   // 0: none (the direct path)
	load  []int // empty: not measured (-profile runs authgate in-process)
}

type cpuSample struct {
	proxy cpuTimes
	load  time.Duration
	cores [2]coreStat
}

func (m meter) sample() cpuSample {
	s := cpuSample{proxy: treeCPU(m.proxy), cores: coreTimes()}
	for _, pid := range m.load {
		s.load += procCPU(pid).total()
	}
	return s
}

// treeRSS is VmRSS of pid and its descendants in KiB, from /proc/PID/status.
func treeRSS(pid int) (int64, error) {
	var sum int64
	for i, p := range tree(pid) {
		v, err := procRSS(p)
		if err != nil && i == 0 {
			return 0, err
		}
		sum += v
	}
	return sum, nil
}

func procRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			v = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB"))
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, errors.New("no VmRSS")
}

// terminate sends SIGTERM and waits for the process to exit (closed
// exited), killing it after 10 s.
func terminate(cmd *exec.Cmd, exited <-chan struct{}) {
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-exited
	}
}
