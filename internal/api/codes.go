package api

import (
	"net/http"
	"slices"

	"github.com/mutexd/mutexd/internal/auth"
)

// UnmatchedRoute and UnmatchedMethod are the route and method the
// Observer is given for requests that match no route: unknown paths, and
// known paths with a method they do not take.
const (
	UnmatchedRoute  = "unmatched"
	UnmatchedMethod = "any"
)

// answers lists a route's codes.
func answers(codes ...int) []int { return codes }

// codes completes a route's own codes with those of the frame: 500 for a
// handler that panics (the one status the dashboard's error ratio must see
// from its first occurrence), 503 too_many_requests with MaxRequests, and
// what its tier may answer before the handler runs: 401, and 403 for an
// admin route, with tokens; 403 (forbidden_origin, forbidden_host) on a
// guarded route without them when browsers are checked.
func (s *Server) codes(r route) []int {
	codes := append([]int{http.StatusInternalServerError}, r.codes...)
	if s.maxRequests > 0 {
		codes = append(codes, http.StatusServiceUnavailable)
	}
	guarded := r.tier != tierPublic && (r.tier != tierMetrics || s.metricsLevel != auth.Public)
	switch {
	case !guarded:
	case s.auth.Tokens().Enabled():
		codes = append(codes, http.StatusUnauthorized)
		if r.tier == tierAdmin || r.tier == tierAdminForMany {
			codes = append(codes, http.StatusForbidden)
		}
	case s.hosts != nil:
		codes = append(codes, http.StatusForbidden)
	}
	slices.Sort(codes)
	return slices.Compact(codes)
}
