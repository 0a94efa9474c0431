package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// The test runs the tunnel as a child process (it never returns), built
// from this test binary: TUNNEL_CONFIG set means "be the tunnel".
func TestMain(m *testing.M) {
	if cfg := os.Getenv("TUNNEL_CONFIG"); cfg != "" {
		if err := run(cfg); err != nil {
			fmt.Fprintln(os.Stderr, "tunnel:", err)
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}

// TestTunnel: bytes go both ways unchanged through the tunnel, small and
// large (more than its 16 KiB buffer, so writes block and resume), and
// a client's close reaches the upstream, which then closes the client.
func TestTunnel(t *testing.T) {
	up, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	upDone := make(chan error, 1)
	go func() {
		c, err := up.Accept()
		if err != nil {
			upDone <- err
			return
		}
		defer c.Close()
		_, err = io.Copy(c, c) // echo until the client's FIN
		upDone <- err
	}()

	port := freePort(t)
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	yaml := fmt.Sprintf("listen: \"127.0.0.1:%d\"\nupstream:\n  url: \"http://%s\"\nroutes: []\n", port, up.Addr())
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "TUNNEL_CONFIG="+cfg)
	errPath := filepath.Join(t.TempDir(), "stderr")
	errFile, err := os.Create(errPath)
	if err != nil {
		t.Fatal(err)
	}
	defer errFile.Close()
	cmd.Stderr = errFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	stderr := func() string { b, _ := os.ReadFile(errPath); return string(b) }

	addr := fmt.Sprintf("127.0.0.1:%d", port)
	var c net.Conn
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err = net.Dial("tcp4", addr); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tunnel not listening: %v\n%s", err, stderr())
		}
		time.Sleep(20 * time.Millisecond)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))

	for _, size := range []int{5, 1 << 20} {
		msg := bytes.Repeat([]byte("0123456789abcdef"), size/16+1)[:size]
		go c.Write(msg)
		got := make([]byte, size)
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatalf("%d bytes: %v", size, err)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("%d bytes came back changed", size)
		}
	}
	c.(*net.TCPConn).CloseWrite()
	if err := <-upDone; err != nil {
		t.Errorf("upstream: %v", err)
	}
	if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("after the upstream closed: read %d, %v; want EOF", n, err)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
