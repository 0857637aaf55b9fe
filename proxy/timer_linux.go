package proxy

import (
	"os"
	"syscall"
	"time"
	"unsafe"
)

// preciseTimer waits on a timerfd watched by Go's network poller. Go's own
// timers wake up to a millisecond late on a busy machine (median ~0.3 ms
// here); a timerfd's readiness wakes the poller at once (median ~0.1 ms).
// A delay rule promises ±1 ms.
type preciseTimer struct {
	f  *os.File
	fd uintptr
}

type itimerspec struct{ interval, value syscall.Timespec }

func newPreciseTimer() *preciseTimer {
	fd, _, errno := syscall.Syscall(syscall.SYS_TIMERFD_CREATE, 1 /* CLOCK_MONOTONIC */, syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if errno != 0 {
		return nil
	}
	return &preciseTimer{f: os.NewFile(fd, "pgchaos-delay"), fd: fd}
}

// sleep waits for d; it returns early if the timer is closed or made to
// expire now. A nil timer (timerfd unavailable) falls back to Go's timers.
func (t *preciseTimer) sleep(d time.Duration, killed, released <-chan struct{}) {
	if t == nil {
		tm := time.NewTimer(d)
		defer tm.Stop()
		select {
		case <-tm.C:
		case <-killed:
		case <-released:
		}
		return
	}
	if !t.set(d) {
		(*preciseTimer)(nil).sleep(d, killed, released)
		return
	}
	var buf [8]byte
	t.f.Read(buf[:])
}

func (t *preciseTimer) set(d time.Duration) bool {
	spec := itimerspec{value: syscall.NsecToTimespec(max(int64(d), 1))}
	_, _, errno := syscall.Syscall6(syscall.SYS_TIMERFD_SETTIME, t.fd, 0, uintptr(unsafe.Pointer(&spec)), 0, 0, 0)
	return errno == 0
}

// expireNow ends a sleep in progress.
func (t *preciseTimer) expireNow() {
	if t != nil {
		t.set(1)
	}
}

func (t *preciseTimer) close() {
	if t != nil {
		t.f.Close()
	}
}
