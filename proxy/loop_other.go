//go:build !linux

package proxy

import (
	"errors"
	"net"
)

// EventLoops are Linux-only; elsewhere every session uses goroutine pumps.
type EventLoops struct{}

func NewEventLoops(n int) (*EventLoops, error) {
	return nil, errors.New("event loops need Linux")
}

func (el *EventLoops) Close() {}

func (el *EventLoops) adopt(r *sessionRelay, client, upstream net.Conn) bool { return false }
