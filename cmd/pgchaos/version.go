package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/pgchaos/pgchaos/internal/buildinfo"
)

// version is the older stamp, -ldflags "-X main.version=...", still honoured;
// release builds stamp github.com/pgchaos/pgchaos/internal/buildinfo.Version,
// .Commit and .Date instead.
var version = ""

func init() {
	if version != "" && buildinfo.Version == "" {
		buildinfo.Version = version
	}
}

// versionString is the version reports record.
func versionString() string { return buildinfo.Get().Version }

func runVersion(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("pgchaos version", stderr, "Usage:\n  pgchaos version [--json]\n\nPrints the version, commit, build date and Go version of this pgchaos.\n")
	asJSON := fs.Bool("json", false, "print JSON: version, commit, date, go_version, platform")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return errUsage{errors.New("version: takes no arguments")}
	}
	info := buildinfo.Get()
	if *asJSON {
		return printJSON(stdout, info)
	}
	_, err := fmt.Fprint(stdout, info)
	return err
}
