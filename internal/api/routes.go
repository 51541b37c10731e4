package api

import (
	"net/http"
	"slices"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/mutexd/mutexd/internal/auth"
)

// tier is who may call a route when tokens are configured. Every route is
// declared once, with its tier, in routeTable.
type tier uint8

const (
	tierPublic tier = iota // anyone: health, readiness, the console's files
	tierClient             // a client or admin token
	tierAdmin              // an admin token
	// tierAdminForMany is a client token for one key's events (?key=)
	// and an admin token for every key's or a prefix's, which amount to a
	// listing (keys may carry user ids).
	tierAdminForMany
	tierMetrics // as configured: public, or a client token (metrics.require_auth)
)

// route is one row of the route table: what the server answers at a path
// and method, who may call it, and with which status codes.
type route struct {
	method, path string
	tier         tier
	h            echo.HandlerFunc
	// codes are the statuses the handler, the parameter parsing and the
	// error mapping can answer; Server.codes adds those of the frame and
	// of the tier.
	codes []int
}

type routeKey struct{ path, method string }

// routeInfo is what frame needs of the route a request matched.
type routeInfo struct {
	tier tier
	obs  RouteObserver // nil without an Observer
}

// The route families every mutexd serves or may serve; ReservedPath keeps
// metrics.path off them.
var reservedPrefixes = []string{"/v1", "/healthz", "/readyz", "/ui", DebugPrefix}

// ReservedPath reports whether p is a path the API uses or may use, so that
// no other handler (metrics.path) may be put there.
func ReservedPath(p string) bool {
	if p == "/" {
		return true
	}
	for _, r := range reservedPrefixes {
		if p == strings.TrimSuffix(r, "/") || strings.HasPrefix(p, r) {
			return true
		}
	}
	return false
}

// routeTable lists every route the options call for.
func (s *Server) routeTable(o Options) []route {
	routes := []route{
		{http.MethodPost, "/v1/locks/:key/acquire", tierClient, s.acquire, answers(200, 400, 409, 413, 423, 429, statusClientClosed, 503)},
		{http.MethodPost, "/v1/locks/:key/release", tierClient, s.release, s.clustered(200, 400, 409, 413)},
		{http.MethodPost, "/v1/locks/:key/renew", tierClient, s.renew, s.clustered(200, 400, 409, 413)},
		{http.MethodGet, "/v1/locks/:key", tierClient, s.inspect, s.clustered(200, 400, 413)},
		{http.MethodDelete, "/v1/locks/:key", tierAdmin, s.forceRelease, s.clustered(200, 400, 404, 413)},
		{http.MethodGet, "/v1/locks", tierAdmin, s.list, s.clustered(200, 400, 413)},
		{http.MethodGet, "/v1/locks/:key/fences/:fence", tierClient, s.checkFence, s.clustered(200, 400, 409, 413)},
		// The operators' tools. The static /v1/locks/pause, /resume and
		// /waiters win over /v1/locks/:key for their own methods only, so
		// a key named "pause" is inspected as before.
		{http.MethodPost, "/v1/locks/:key/pause", tierAdmin, s.pause, s.clustered(200, 400, 413)},
		{http.MethodPost, "/v1/locks/:key/resume", tierAdmin, s.resume, s.clustered(200, 400, 413)},
		{http.MethodDelete, "/v1/locks/:key/waiters", tierAdmin, s.drain, s.clustered(200, 400, 413)},
		{http.MethodPost, "/v1/locks/pause", tierAdmin, s.pausePrefix, s.clustered(200, 400, 413)},
		{http.MethodPost, "/v1/locks/resume", tierAdmin, s.resumePrefix, s.clustered(200, 400, 413)},
		{http.MethodDelete, "/v1/locks/waiters", tierAdmin, s.drainPrefix, s.clustered(200, 400, 413)},
		{http.MethodGet, "/healthz", tierPublic, s.healthz, answers(200)},
		{http.MethodGet, "/readyz", tierPublic, s.readyz, answers(200, 503)},
	}
	if o.Cluster != nil || o.Forward != nil {
		routes = append(routes,
			route{http.MethodGet, "/v1/cluster", tierClient, s.clusterStatus, answers(200, 400, 413)},
			route{http.MethodGet, "/v1/cluster/digest", tierAdmin, s.clusterDigest, answers(200, 400, 413, statusClientClosed, 503)},
			route{http.MethodPost, InternalApplyPath, tierAdmin, s.internalApply, answers(200, 400, 413, 421, statusClientClosed, 503)},
			route{http.MethodGet, InternalReadIndexPath, tierAdmin, s.internalReadIndex, answers(200, 400, 413, 421, statusClientClosed, 503)})
		if o.ClusterAdmin != nil || o.Forward != nil {
			routes = append(routes, s.clusterAdminRoutes()...)
		}
	}
	if o.Events != nil || o.Forward != nil {
		routes = append(routes, route{http.MethodGet, "/v1/events", tierAdminForMany, s.events, answers(200, 400, 413, 429, 503)},
			// Counts only: no key, no owner.
			route{http.MethodGet, "/v1/stats", tierClient, s.stats, s.clustered(200, 400, 413)})
	}
	if o.UI != nil {
		ui := consoleRoute(o.UI)
		routes = append(routes,
			route{http.MethodGet, "/ui", tierPublic, func(c echo.Context) error { return c.Redirect(http.StatusMovedPermanently, "/ui/") }, answers(301)},
			// 302, not 301: a browser must not remember it once the console is off.
			route{http.MethodGet, "/", tierPublic, func(c echo.Context) error { return c.Redirect(http.StatusFound, "/ui/") }, answers(302)},
			route{http.MethodGet, "/ui/*", tierPublic, ui, answers(200, 404)})
	}
	if o.Metrics != nil && o.MetricsPath != "" {
		routes = append(routes, route{http.MethodGet, o.MetricsPath, tierMetrics, echo.WrapHandler(o.Metrics), answers(200)})
	}
	if o.Debug != nil {
		// Profiles reveal keys and owners.
		h := echo.WrapHandler(o.Debug)
		codes := answers(200, 400, 404) // net/http/pprof's own errors
		routes = append(routes, route{http.MethodGet, DebugPrefix + "*", tierAdmin, h, codes}, route{http.MethodPost, DebugPrefix + "*", tierAdmin, h, codes})
	}
	return routes
}

// clustered adds to a route's codes what a cluster may answer besides:
// 499 when the caller leaves during a read barrier or a forward, 503
// while there is no leader.
func (s *Server) clustered(codes ...int) []int {
	if s.cluster != nil || s.forward != nil {
		codes = append(codes, statusClientClosed, http.StatusServiceUnavailable)
		slices.Sort(codes)
		codes = slices.Compact(codes)
	}
	return codes
}

// levelOf is the auth.Level c's request needs (see level).
func (s *Server) levelOf(c echo.Context) auth.Level {
	r, routed := s.routes[routeKey{c.Path(), c.Request().Method}]
	return s.level(c, r, routed)
}

// level is the auth.Level a request needs: its route's tier, or for a
// request no route matched, a client token under /v1 (so routes cannot be
// probed) and an admin token under DebugPrefix.
func (s *Server) level(c echo.Context, r routeInfo, routed bool) auth.Level {
	req := c.Request()
	if !routed {
		switch p := req.URL.Path; {
		case p == "/v1" || strings.HasPrefix(p, "/v1/"):
			return auth.Client
		case strings.HasPrefix(p, DebugPrefix):
			return auth.Admin
		}
		return auth.Public
	}
	switch r.tier {
	case tierClient:
		return auth.Client
	case tierAdmin:
		return auth.Admin
	case tierAdminForMany:
		if req.URL.Query().Get("key") == "" {
			return auth.Admin
		}
		return auth.Client
	case tierMetrics:
		return s.metricsLevel
	}
	return auth.Public
}

// consoleRoute serves the console's files from h, which sees paths without
// the /ui prefix. An error h answers (a file it does not have) is not
// written as h wrote it but goes through the one error mapping, like any
// unknown route.
func consoleRoute(h http.Handler) echo.HandlerFunc {
	h = http.StripPrefix("/ui", h)
	return func(c echo.Context) error {
		w := &errorCatcher{ResponseWriter: c.Response()}
		h.ServeHTTP(w, c.Request())
		if w.status != 0 {
			return echo.NewHTTPError(w.status)
		}
		return nil
	}
}

// errorCatcher passes a response through unless its status is an error,
// which it keeps, with its body, from the client.
type errorCatcher struct {
	http.ResponseWriter
	status int // the error status caught; 0 if none
}

func (w *errorCatcher) WriteHeader(code int) {
	if code >= http.StatusBadRequest {
		w.status = code
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *errorCatcher) Write(b []byte) (int, error) {
	if w.status != 0 {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}
