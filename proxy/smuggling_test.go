package proxy_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestTransferEncodingClosesConnection pins issue 14: a request with
// Transfer-Encoding and Content-Length, followed in the same write by a
// second request, is answered and then the connection is closed; the
// bytes after its chunked body never reach the backend as a request.
func TestTransferEncodingClosesConnection(t *testing.T) {
	b := newBackend(t)
	h := startProxy(t, testConfig{Upstream: b.url, Unmatched: "pass"})
	cases := []struct{ name, first string }{
		{"TE and CL", "POST /submit HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
		{"TE alone", "POST /submit HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := len(b.requests())
			conn, err := net.DialTimeout("tcp", h.addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			smuggled := "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
			if _, err := io.WriteString(conn, tc.first+smuggled); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("first response: %v", err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !resp.Close {
				t.Errorf("first response: got %d, Connection close %v; want 200 and close", resp.StatusCode, resp.Close)
			}
			if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
				t.Errorf("after the first response: got %q, %v; want EOF (connection closed)", rest, err)
			}
			reqs := b.requests()[before:]
			if len(reqs) != 1 || reqs[0].RequestURI != "/submit" {
				var uris []string
				for _, r := range reqs {
					uris = append(uris, r.RequestURI)
				}
				t.Errorf("backend received %q, want only /submit", uris)
			}
		})
	}
	t.Run("no Transfer-Encoding keeps the connection", func(t *testing.T) {
		conn, err := net.DialTimeout("tcp", h.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(conn, "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
		br := bufio.NewReader(conn)
		for _, want := range []string{"/a", "/b"} {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("response for %s: %v", want, err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || resp.Close {
				t.Errorf("%s: got %d close=%v, want 200 keep-alive", want, resp.StatusCode, resp.Close)
			}
		}
	})
}
