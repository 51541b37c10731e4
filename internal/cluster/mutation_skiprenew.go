//go:build mutate_skiprenew

package cluster

// mutation: see mutation.go. This build is broken on purpose.
const mutation = "skiprenew"
