// Package buildinfo says which build of pgchaos is running: its version,
// commit, build date and Go version, for `pgchaos version`, reports and the
// pgchaos_build_info metric.
//
// A release build stamps the first three with the linker:
//
//	go build -ldflags "-X github.com/pgchaos/pgchaos/internal/buildinfo.Version=v0.1.0
//	  -X github.com/pgchaos/pgchaos/internal/buildinfo.Commit=$(git rev-parse HEAD)
//	  -X github.com/pgchaos/pgchaos/internal/buildinfo.Date=2026-12-01T00:00:00Z" ./cmd/pgchaos
//
// Whatever is not stamped comes from the build information the Go toolchain
// embeds (runtime/debug.ReadBuildInfo): the module version of `go install
// ...@v0.1.0`, and the commit and commit time of a `go build` in a git
// checkout.
package buildinfo

import (
	"cmp"
	"fmt"
	"runtime"
	"runtime/debug"
)

// Set with -ldflags -X; empty when not stamped.
var (
	Version string
	Commit  string
	Date    string
)

// Unknown stands for a fact the build did not record.
const Unknown = "unknown"

// Info is what a build knows about itself.
type Info struct {
	Version   string `json:"version"`    // v0.1.0, a Go pseudo-version, or "dev"
	Commit    string `json:"commit"`     // full git commit, "+dirty" when the tree had changes; or "unknown"
	Date      string `json:"date"`       // RFC 3339 build (or commit) time; or "unknown"
	GoVersion string `json:"go_version"` // go1.26.8
	Platform  string `json:"platform"`   // linux/amd64
}

// Get returns the stamped values, filled in from the embedded build
// information where they were not stamped.
func Get() Info {
	bi, _ := debug.ReadBuildInfo()
	return get(bi)
}

func get(bi *debug.BuildInfo) Info {
	var modVersion, revision, vcsTime string
	var modified bool
	goVersion := runtime.Version()
	if bi != nil {
		if bi.Main.Version != "(devel)" {
			modVersion = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				revision = s.Value
			case "vcs.time":
				vcsTime = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		goVersion = cmp.Or(bi.GoVersion, goVersion)
	}
	if revision != "" && modified {
		revision += "+dirty"
	}
	return Info{
		Version:   cmp.Or(Version, modVersion, "dev"),
		Commit:    cmp.Or(Commit, revision, Unknown),
		Date:      cmp.Or(Date, vcsTime, Unknown),
		GoVersion: goVersion,
		Platform:  runtime.GOOS + "/" + runtime.GOARCH,
	}
}

// String is the multi-line form `pgchaos version` prints.
func (i Info) String() string {
	return fmt.Sprintf("pgchaos %s\ncommit:  %s\nbuilt:   %s\ngo:      %s %s\n", i.Version, i.Commit, i.Date, i.GoVersion, i.Platform)
}
