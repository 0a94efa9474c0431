package proxy

import (
	"bufio"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// logFlushDelay bounds how long a log line may sit in the buffer.
const logFlushDelay = 50 * time.Millisecond

// bufferedWriter batches log lines: a write(2) per line was a measurable
// share of an upgrade's system calls (two lines each: auth, ws_close).
// Lines are written whole (zerolog writes one line per Write, and Write
// holds the lock), at most logFlushDelay late, and all of them on Close.
// Nothing runs while no line is pending.
type bufferedWriter struct {
	mu    sync.Mutex
	w     *bufio.Writer
	timer *time.Timer
	armed bool
	lines atomic.Int64 // Write calls: lines, as zerolog writes one per call
}

func newBufferedWriter(w io.Writer) *bufferedWriter {
	b := &bufferedWriter{w: bufio.NewWriterSize(w, 64<<10)}
	b.timer = time.AfterFunc(time.Hour, b.flush)
	b.timer.Stop()
	return b
}

func (b *bufferedWriter) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.w.Write(p)
	b.lines.Add(1)
	if !b.armed && b.w.Buffered() > 0 {
		b.armed = true
		b.timer.Reset(logFlushDelay)
	}
	return n, err
}

func (b *bufferedWriter) flush() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.armed = false
	b.w.Flush()
}

// Close writes out what is buffered.
func (b *bufferedWriter) Close() error {
	b.timer.Stop()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.armed = false
	return b.w.Flush()
}
