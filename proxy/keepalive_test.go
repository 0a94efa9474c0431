package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// socketTimer is ss's line (iproute2) for authgate's established socket
// at listen to the client whose port is clientPort, timers included.
func socketTimer(t *testing.T, listen, clientPort string) string {
	t.Helper()
	_, port, _ := net.SplitHostPort(listen)
	out, err := exec.Command("ss", "-tnoH", "state", "established", "( sport = :"+port+" and dport = :"+clientPort+" )").CombinedOutput()
	if err != nil {
		t.Fatalf("ss (iproute2): %v: %s", err, out)
	}
	line := strings.TrimSpace(string(out))
	if line == "" {
		t.Fatalf("ss: no socket from %s to client port %s", listen, clientPort)
	}
	return line
}

// TestKeepAliveOnRelaysOnly: Run's listener sets no TCP keep-alive on
// accept (three socket options a rejection or a plain HTTP exchange does
// not need); a relayed WebSocket gets it, idle a minute, when it starts.
func TestKeepAliveOnRelaysOnly(t *testing.T) {
	be := opsBackend(t)
	path := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, path, opsConfig(be.URL, "rewrite", ""))
	h := startRun(t, path)

	c := opsDial(t, h.addr, opsJWT(t, "user-1", time.Now().Add(time.Hour)))
	defer c.Close()
	_, wsPort, _ := net.SplitHostPort(c.LocalAddr().String())
	got := socketTimer(t, h.addr, wsPort)
	_, timer, _ := strings.Cut(got, "timer:(keepalive,")
	timer, _, _ = strings.Cut(timer, ",")
	if sec, err := strconv.Atoi(strings.TrimSuffix(timer, "sec")); timer != "1min" && (err != nil || sec < 30) {
		t.Errorf("relayed WebSocket: want a keep-alive timer of about a minute, ss says %q", got)
	}

	// A plain HTTP connection kept open by the client: no keep-alive.
	conn, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	_, httpPort, _ := net.SplitHostPort(conn.LocalAddr().String())
	if got := socketTimer(t, h.addr, httpPort); strings.Contains(got, "keepalive") {
		t.Errorf("plain HTTP connection: want no keep-alive timer, ss says %q", got)
	}
}
