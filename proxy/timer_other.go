//go:build !linux

package proxy

import "time"

// preciseTimer is Go's timer where timerfd does not exist.
type preciseTimer struct{}

func newPreciseTimer() *preciseTimer { return nil }

func (t *preciseTimer) sleep(d time.Duration, killed <-chan struct{}) {
	select {
	case <-time.After(d):
	case <-killed:
	}
}

func (t *preciseTimer) close() {}
