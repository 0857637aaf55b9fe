//go:build !linux

package proxy

import "time"

// preciseTimer is Go's timer where timerfd does not exist.
type preciseTimer struct{}

func newPreciseTimer() *preciseTimer { return nil }

func (t *preciseTimer) sleep(d time.Duration, killed, released <-chan struct{}) {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
	case <-killed:
	case <-released:
	}
}

func (t *preciseTimer) expireNow() {}

func (t *preciseTimer) close() {}
