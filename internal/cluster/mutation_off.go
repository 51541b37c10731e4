//go:build !mutate_followerclock && !mutate_skiprenew && !mutate_grantlocal

package cluster

// mutation names the deliberate bug a build carries (mutation.go), empty
// in every build but the fault suite's mutation runs: with a constant,
// the compiler drops the broken branches from a normal build.
const mutation = ""
