//go:build race

package proxy

// raceEnabled: the race detector allocates on its own.
const raceEnabled = true
