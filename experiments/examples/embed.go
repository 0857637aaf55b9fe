// Package examples holds the experiments pgchaos ships, embedded so that
// `pgchaos demo` runs without the source tree.
package examples

import "embed"

// Files are the shipped experiment files, by name (e.g. "2pc-mid-prepare.yaml"),
// and the runbook scripts their exec steps run (runbooks/*.sh).
//
//go:embed *.yaml runbooks/*.sh
var Files embed.FS
