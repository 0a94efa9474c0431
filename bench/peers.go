package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// peer is one path under test: direct (the load talks to the echo
// backend), nginx, or authgate. pid is the process whose CPU and memory
// are measured (nginx's worker, authgate's only process; 0 for direct).
type peer struct {
	name string
	base string // ws://127.0.0.1:PORT
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
	dir      string // temp dir for configs, logs, pid files
	backend  string // echo backend host:port
	authgate string // built binary
	self     string // this executable (for -profile's in-process authgate)
	nginx    string // nginx binary, "" when not installed
	taskset  string // taskset binary, "" when not installed
	secret   string
	profile  bool
	seq      int   // instances started, for unique file names
	loadPIDs []int // the load side's processes, for meter
}

// pinned returns argv run on core cpu when taskset is available.
func (e *env) pinned(cpu string, argv ...string) []string {
	if e.taskset == "" {
		return argv
	}
	return append([]string{e.taskset, "-c", cpu}, argv...)
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

// authgateConfig is a realistic config (modelled on config.yaml): the
// PAM WebSocket route verifying HS256 JWTs from ?token=, UUID rewrite
// stages, every decision logged as JSON (to the process's stdout, which
// is a file on disk). Differences from config.yaml: loopback listener,
// no admin listener, rate limiting off.
const authgateConfig = `listen: "127.0.0.1:%d"
admin_listen: ""
health_path: /healthz
shutdown_timeout: 5s
trusted_proxies: []
upstream:
  url: "http://%s"
  host_header: upstream
  dial_timeout: 5s
verify:
  hs256_secret: "${BENCH_JWT_SECRET}"
  algorithms: [HS256]
  audience: authenticated
  leeway: 30s
mint:
  hs256_secret: "${BENCH_JWT_SECRET}"
  ttl: 5m
  issuer: authgate
  audience: authenticated
  claims: {role: authenticated}
log:
  level: info
  format: json
  user_ids: plain
routes:
  - name: pam-ws
    match: {path: /api/v1/pam/ws, websocket: true}
    token:
      from: [query:token, header:authorization, protocol, cookie:sb-access-token]
      forward: same
    reject_with: close
    policy:
      jwt: pass
      jwt_expired: reject
      jwt_invalid: reject
      malformed: reject
      missing: reject
      uuid:
        - {until: 2099-12-15, action: rewrite}
        - {action: reject, dry_run: true, otherwise: rewrite}
    close_on_expiry: true
    revoke_open: true
  - name: api
    match: {prefix: /api/, websocket: false}
    token:
      from: [header:authorization]
      forward: same
    policy:
      jwt: pass
      jwt_expired: reject
      jwt_invalid: reject
      malformed: reject
      missing: pass
      uuid: [{action: reject}]
unmatched: pass
rate_limit:
  per_minute: 0
`

// startAuthgate runs `authgate serve` pinned to core 1 with GOMAXPROCS=1,
// its JSON log going to a file; with e.profile, the same proxy.Run in a
// re-executed bench process (role "inproc") that CPU-profiles on request.
// The baseline peer is the -baseline binary, run the same way (never
// in-process).
func (e *env) startAuthgate() (*peer, error) {
	if e.profile {
		return e.runAuthgate("authgate", e.self, true)
	}
	return e.runAuthgate("authgate", e.authgate, false)
}

// runAuthgate starts the authgate binary bin (or, inproc, the bench itself
// in role "inproc") as peer name.
func (e *env) runAuthgate(name, bin string, inproc bool) (*peer, error) {
	e.seq++
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(e.dir, fmt.Sprintf("authgate-%d.yaml", e.seq))
	if err := os.WriteFile(cfg, fmt.Appendf(nil, authgateConfig, port, e.backend), 0o600); err != nil {
		return nil, err
	}
	logPath := filepath.Join(e.dir, fmt.Sprintf("authgate-%d.log", e.seq))
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	var argv []string
	if inproc {
		argv = e.pinned("1", bin, cfg)
	} else {
		argv = e.pinned("1", bin, "serve", "--config", cfg)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1", "BENCH_JWT_SECRET="+e.secret)
	if inproc {
		cmd.Env = append(cmd.Env, roleEnv+"=inproc", "BENCH_LOG="+logPath)
	}
	cmd.Stdout = logf
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var ctl io.WriteCloser
	if inproc {
		if ctl, err = cmd.StdinPipe(); err != nil {
			return nil, err
		}
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	logf.Close()
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	stop := func() {
		if ctl != nil {
			ctl.Close()
		}
		terminate(cmd, exited)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if err := waitListening(addr, 15*time.Second, exited); err != nil {
		stop()
		return nil, fmt.Errorf("%s: %w\n%s", name, err, stderr.String())
	}
	p := &peer{name: name, base: "ws://" + addr, pid: cmd.Process.Pid, stop: stop}
	if ctl != nil {
		p.ctl = ctl
	}
	return p, nil
}

// nginxConfig: Debian's nginx, one worker, proxy_http_version 1.1, the
// Upgrade/Connection headers, default buffers, a long read timeout.
// access_log off (authgate logs every decision; nginx logs nothing per
// request here, which favours nginx). worker_connections is raised for
// the 5,000-connection idle test (two sockets per proxied connection).
const nginxConfig = `worker_processes 1;
worker_rlimit_nofile 20000;
error_log %[1]s/error.log warn;
pid %[1]s/nginx.pid;
events { worker_connections 16384; }
http {
    access_log off;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    server {
        listen 127.0.0.1:%[2]d;
        location / {
            proxy_pass http://%[3]s;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 3600s;
        }
    }
}
`

// startNginx runs nginx in the foreground (daemon off; master and one
// worker) with a generated config in its own directory, pinned to core 1.
func (e *env) startNginx() (*peer, error) {
	e.seq++
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(e.dir, fmt.Sprintf("nginx-%d", e.seq))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	os.Chmod(dir, 0o755)
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, nginxConfig, dir, port, e.backend), 0o644); err != nil {
		return nil, err
	}
	argv := e.pinned("1", e.nginx, "-p", dir, "-c", conf, "-e", filepath.Join(dir, "error.log"), "-g", "daemon off;")
	cmd := exec.Command(argv[0], argv[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	stop := func() { terminate(cmd, exited) } // SIGTERM: nginx's fast shutdown, workers too
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if err := waitListening(addr, 10*time.Second, exited); err != nil {
		stop()
		log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
		return nil, fmt.Errorf("nginx: %w\n%s%s", err, out.String(), log)
	}
	worker, err := childPID(cmd.Process.Pid, 5*time.Second)
	if err != nil {
		stop()
		return nil, fmt.Errorf("nginx worker: %w", err)
	}
	return &peer{name: "nginx", base: "ws://" + addr, pid: worker, stop: stop}, nil
}

// childPID waits for pid's one child (nginx's worker) to appear.
func childPID(pid int, d time.Duration) (int, error) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
		if err != nil {
			return 0, err
		}
		if f := strings.Fields(string(b)); len(f) > 0 {
			return strconv.Atoi(f[0])
		}
		time.Sleep(20 * time.Millisecond)
	}
	return 0, errors.New("no worker process")
}

// startEcho runs the echo backend: this executable in role "echo",
// inheriting the bench process's pinning to core 0.
func startEcho(self string) (addr string, pid int, stop func(), err error) {
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), roleEnv+"=echo")
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", 0, nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", 0, nil, err
	}
	stop = func() { cmd.Process.Kill(); cmd.Wait() }
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		stop()
		return "", 0, nil, fmt.Errorf("echo backend: %w", err)
	}
	return strings.TrimSpace(line), cmd.Process.Pid, stop, nil
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

// meter samples the CPU of the proxy under test and of the load side: the
// load generator (this process) and the echo backend, which share the
// other core. The load side's CPU per operation shows what a proxy costs
// the processes around it (for example, cross-core wake-ups and cache
// misses on payloads another core wrote), which the proxy's own CPU does
// not show.
type meter struct {
	proxy int   // 0: none (the direct path)
	load  []int // empty: not measured (-profile runs authgate in-process)
}

type cpuSample struct {
	proxy cpuTimes
	load  time.Duration
}

func (m meter) sample() cpuSample {
	s := cpuSample{proxy: procCPU(m.proxy)}
	for _, pid := range m.load {
		s.load += procCPU(pid).total()
	}
	return s
}

// procRSS is VmRSS of pid in KiB, from /proc/PID/status.
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
