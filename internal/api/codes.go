package api

import (
	"net/http"
	"slices"

	"github.com/labstack/echo/v4"
)

// UnmatchedRoute and UnmatchedMethod are the route and method the
// Observer is given for requests that match no route: unknown paths, and
// known paths with a method they do not take.
const (
	UnmatchedRoute  = "unmatched"
	UnmatchedMethod = "any"
)

// route is one row of the route table: what the server answers at a path
// and method, and with which status codes.
type route struct {
	method, path string
	h            echo.HandlerFunc
	// codes are the statuses the handler, the parameter parsing and the
	// error mapping can answer, plus 401 (and 403) when the route needs a
	// client (an admin) token with auth on. The codes the frame may answer
	// on any route are added by Server.codes.
	codes []int
}

// answers lists a route's codes.
func answers(codes ...int) []int { return codes }

// codes completes a route's own codes with those of the frame: 500 for a
// handler that panics (the one status the dashboard's error ratio must see
// from its first occurrence) and 503 too_many_requests with MaxRequests;
// 401 and 403 stay only when auth is on.
func (s *Server) codes(own []int) []int {
	codes := []int{http.StatusInternalServerError}
	auth := s.auth.Tokens().Enabled()
	for _, c := range own {
		if auth || c != http.StatusUnauthorized && c != http.StatusForbidden {
			codes = append(codes, c)
		}
	}
	if s.maxRequests > 0 {
		codes = append(codes, http.StatusServiceUnavailable)
	}
	slices.Sort(codes)
	return slices.Compact(codes)
}
