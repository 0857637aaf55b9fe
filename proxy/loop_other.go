//go:build !linux

package proxy

import (
	"errors"
	"net"
)

// EventLoops are Linux-only; elsewhere every session uses goroutine pumps.
type EventLoops struct{}

type loopSession struct {
	done                 chan struct{}
	clientErr, serverErr error
	upstreamAddr         string
	released             bool
	pumps                [2]*pump
}

func (ls *loopSession) conns() (client, upstream net.Conn, err error) {
	return nil, nil, errors.New("event loops need Linux")
}

func NewEventLoops(n int) (*EventLoops, error) {
	return nil, errors.New("event loops need Linux")
}

func (el *EventLoops) Close() {}

func (el *EventLoops) adopt(s *Session, client, upstream net.Conn, c2s, s2c *pump) (*loopSession, bool) {
	return nil, false
}
