// Package examples holds the experiments pgchaos ships, embedded so that
// `pgchaos demo` runs without the source tree.
package examples

import "embed"

// Files are the shipped experiment files, by name (e.g. "2pc-mid-prepare.yaml").
//
//go:embed *.yaml
var Files embed.FS
