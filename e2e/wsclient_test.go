//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gobwas/ws"
)

// wsClient is a minimal RFC 6455 client on github.com/gobwas/ws frames. It
// is used instead of gorilla/websocket because it reports every close
// code as sent, 1014 included (gorilla fails a close frame with 1014 as
// "bad close code"), and because it answers pings from the same frame
// loop the test reads, so nothing is hidden.
type wsClient struct {
	conn      net.Conn
	r         io.Reader
	br        *bufio.Reader
	wmu       sync.Mutex
	Protocol  string
	closed    bool // a close frame was received
	sentClose bool // a close frame was sent (under wmu)
}

// closeErr is what next returns when the server sent a close frame.
type closeErr struct {
	Code   int // 1005 for a close frame without a code
	Reason string
}

func (e *closeErr) Error() string { return fmt.Sprintf("closed %d %q", e.Code, e.Reason) }

// closeCode returns the close code in err, or 0 when err is not a close.
func closeCode(err error) int {
	var ce *closeErr
	if errors.As(err, &ce) {
		return ce.Code
	}
	return 0
}

func dialWS(ctx context.Context, url string, header http.Header, protocols ...string) (*wsClient, error) {
	d := ws.Dialer{Timeout: 10 * time.Second, Protocols: protocols}
	if header != nil {
		d.Header = ws.HandshakeHeaderHTTP(header)
	}
	var status int
	d.OnStatusError = func(s int, _ []byte, _ io.Reader) { status = s }
	conn, br, hs, err := d.Dial(ctx, url)
	if err != nil {
		if status != 0 {
			return nil, &refusedError{status, err}
		}
		return nil, err
	}
	c := &wsClient{conn: conn, r: conn, br: br, Protocol: hs.Protocol}
	if br != nil {
		c.r = br
	}
	return c, nil
}

// refusedError is a handshake answered with a status instead of 101.
type refusedError struct {
	status int
	err    error
}

func (e *refusedError) Error() string {
	return fmt.Sprintf("handshake refused with HTTP %d: %v", e.status, e.err)
}
func (e *refusedError) Unwrap() error { return e.err }

func (c *wsClient) write(f ws.Frame) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return ws.WriteFrame(c.conn, ws.MaskFrameInPlace(f))
}

// pong answers a ping the way gorilla's default ping handler does: not
// once a close frame has gone out, and a failed write does not end the
// read loop (the next read reports a broken connection). Backends ping on
// their own schedule (uvicorn every 20 s), so a ping can cross the client's
// close frame, and authgate, its closing handshake done, may already have
// closed the connection when the pong is written.
func (c *wsClient) pong(payload []byte) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.sentClose {
		return
	}
	c.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	ws.WriteFrame(c.conn, ws.MaskFrameInPlace(ws.NewPongFrame(payload)))
}

// sendClose sends a close frame with code (none for 1005) unless one was
// sent already.
func (c *wsClient) sendClose(code int, reason string) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.sentClose {
		return nil
	}
	c.sentClose = true
	var body []byte
	if code != 1005 {
		body = ws.NewCloseFrameBody(ws.StatusCode(code), reason)
	}
	c.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return ws.WriteFrame(c.conn, ws.MaskFrameInPlace(ws.NewCloseFrame(body)))
}

func (c *wsClient) sendText(s string) error { return c.write(ws.NewTextFrame([]byte(s))) }

// next returns the next data message (text or binary), answering pings.
// A close frame from the server is answered and returned as *closeErr.
func (c *wsClient) next(timeout time.Duration) (string, error) {
	if timeout > 0 {
		c.conn.SetReadDeadline(time.Now().Add(timeout))
		defer c.conn.SetReadDeadline(time.Time{})
	}
	var msg []byte
	for {
		f, err := ws.ReadFrame(c.r)
		if err != nil {
			return "", err
		}
		if f.Header.Masked {
			return "", errors.New("server frame is masked")
		}
		switch f.Header.OpCode {
		case ws.OpPing:
			c.pong(f.Payload)
		case ws.OpPong:
		case ws.OpClose:
			c.closed = true
			code, reason := 1005, ""
			if len(f.Payload) >= 2 {
				sc, r := ws.ParseCloseFrameData(f.Payload)
				code, reason = int(sc), r
			}
			// Answer with the same code (RFC 6455 §5.5.1); 1005 is never sent.
			c.sendClose(code, "")
			return "", &closeErr{Code: code, Reason: reason}
		default: // text, binary, continuation
			msg = append(msg, f.Payload...)
			if f.Header.Fin {
				return string(msg), nil
			}
		}
	}
}

// closeWith starts the closing handshake with code and waits (up to
// timeout) for the server's close frame; it returns the code the server
// answered with.
func (c *wsClient) closeWith(code int, reason string, timeout time.Duration) (int, error) {
	defer c.conn.Close()
	if err := c.sendClose(code, reason); err != nil {
		return 0, err
	}
	deadline := time.Now().Add(timeout)
	for {
		_, err := c.next(time.Until(deadline))
		if cc := closeCode(err); cc != 0 {
			return cc, nil
		}
		if err != nil {
			return 0, err
		}
	}
}

func (c *wsClient) Close() error { return c.conn.Close() }

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }
