//go:build !linux

package relay

const pollerSupported = false

// poller is Linux's epoll parking; elsewhere nothing is parked and an idle
// direction keeps its goroutine.
type poller struct{}

var idlePoller poller

func (poller) park(*pump) bool { return false }
func (poller) unpark(*pump)    {}
