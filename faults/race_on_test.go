//go:build race

package faults

// raceEnabled: the race detector makes sync.Pool drop items at random, so
// regexp (which pools its matchers) allocates; alloc counts that go
// through a regexp are only checked without -race.
const raceEnabled = true
