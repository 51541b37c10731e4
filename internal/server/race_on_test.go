//go:build race

package server_test

// raceEnabled: the race detector allows at most 8128 live goroutines, so
// floods are scaled down under it.
const raceEnabled = true
