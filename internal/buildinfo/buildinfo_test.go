package buildinfo

import (
	"runtime/debug"
	"testing"
)

func TestFromBuildInfo(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.99.1", Main: debug.Module{Path: "github.com/pgchaos/pgchaos", Version: "v0.2.0"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.time", Value: "2026-12-01T10:00:00Z"}, {Key: "vcs.modified", Value: "true"}}}
	got := get(bi)
	if got.Version != "v0.2.0" || got.Commit != "abc123+dirty" || got.Date != "2026-12-01T10:00:00Z" || got.GoVersion != "go1.99.1" {
		t.Errorf("from build info: %+v", got)
	}
	bi.Settings[2].Value = "false"
	if got := get(bi); got.Commit != "abc123" {
		t.Errorf("a clean tree's commit: %q", got.Commit)
	}
	// A plain go build outside a module version: (devel), no VCS.
	if got := get(&debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}); got.Version != "dev" || got.Commit != Unknown || got.Date != Unknown || got.GoVersion == "" {
		t.Errorf("nothing recorded: %+v", got)
	}
}

func TestStampedWins(t *testing.T) {
	defer func(v, c, d string) { Version, Commit, Date = v, c, d }(Version, Commit, Date)
	Version, Commit, Date = "v1.0.0", "def456", "2027-01-01T00:00:00Z"
	bi := &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261201-abc123+dirty"}, Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.modified", Value: "true"}}}
	if got := get(bi); got.Version != "v1.0.0" || got.Commit != "def456" || got.Date != "2027-01-01T00:00:00Z" {
		t.Errorf("stamped values lost: %+v", got)
	}
}
