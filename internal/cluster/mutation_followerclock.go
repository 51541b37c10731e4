//go:build mutate_followerclock

package cluster

// mutation: see mutation.go. This build is broken on purpose.
const mutation = "followerclock"
