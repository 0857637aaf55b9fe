package pgtest

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
)

// Every server's temp dir is named tempDirPrefix+kind+"-*" and holds a lock
// file that its creator keeps flock()ed until Stop. When the creator dies
// without Stop (panic, test timeout, SIGKILL) Pdeathsig takes the server
// down but the directory stays; the kernel drops the lock, which is how a
// later start can tell the directory is abandoned. A lock, unlike a pid,
// cannot be fooled by pid reuse or by another pid namespace sharing /tmp.
const (
	tempDirPrefix = "pgtest-"
	lockName      = ".pgtest.lock"
)

type tempDir struct {
	path string
	lock *os.File
}

// makeTempDir creates a locked per-server directory owned by r. It fails
// early, with a clear message, when r could not reach it: otherwise initdb
// fails later with a confusing "permission denied" on a parent directory.
func (r runAs) makeTempDir(kind string) (*tempDir, error) {
	sweepOnce.Do(sweepAbandoned)
	path, err := os.MkdirTemp("", tempDirPrefix+kind+"-")
	if err != nil {
		return nil, fmt.Errorf("creating temp dir: %w", err)
	}
	// TMPDIR may be relative, but the servers run in another working
	// directory and Postgres compares data_directory against this path.
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	d := &tempDir{path: path}
	if err := d.takeLock(); err != nil {
		d.remove()
		return nil, err
	}
	if err := r.chown(path); err != nil {
		d.remove()
		return nil, err
	}
	if r.cred != nil {
		if err := r.checkReachable(filepath.Dir(path)); err != nil {
			d.remove()
			return nil, fmt.Errorf("temp dir %s is unusable (set TMPDIR to a world-searchable directory such as /tmp): %w", path, err)
		}
	}
	return d, nil
}

// takeLock locks a file under a temporary name and only then renames it into
// place, so a sweeper never finds the lock file before it is locked.
func (d *tempDir) takeLock() error {
	tmp := filepath.Join(d.path, lockName+".new")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("creating lock file in %s: %w", d.path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return fmt.Errorf("locking %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, filepath.Join(d.path, lockName)); err != nil {
		f.Close()
		return fmt.Errorf("publishing lock file in %s: %w", d.path, err)
	}
	d.lock = f
	return nil
}

// remove deletes the directory, then releases the lock, so that no sweeper
// can see an unlocked directory that is still being deleted by its owner.
func (d *tempDir) remove() error {
	err := os.RemoveAll(d.path)
	if d.lock != nil {
		d.lock.Close()
	}
	if err != nil {
		return fmt.Errorf("removing temp dir %s: %w", d.path, err)
	}
	return nil
}

var sweepOnce sync.Once

// sweepAbandoned removes temp dirs left behind by dead processes. Once per
// process is enough: it is housekeeping, not correctness. Errors are
// ignored, since a directory we cannot lock or delete (another user's, for
// instance) is simply not ours to clean.
func sweepAbandoned() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), tempDirPrefix+"*"))
	for _, dir := range dirs {
		sweepDir(dir)
	}
}

func sweepDir(dir string) {
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR, 0)
	if err != nil {
		// No lock file: not ours, or still being created.
		return
	}
	defer f.Close()
	// EWOULDBLOCK: its owner is alive.
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return
	}
	os.RemoveAll(dir)
}
