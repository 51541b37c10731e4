//go:build mutate_grantlocal

package cluster

// mutation: see mutation.go. This build is broken on purpose.
const mutation = "grantlocal"
