package api

import (
	"net/http"
	"slices"
	"strings"

	"github.com/labstack/echo/v4"
)

// Forwarder answers API calls by sending them on to a cluster's servers:
// an agent (internal/agent). A server's answer is copied to the caller as
// it is, so an app sees through an agent exactly what a server says.
type Forwarder interface {
	// Forward sends r, a call of the route template route (such as
	// "/v1/locks/:key/acquire"), on and copies an answer to w. It returns
	// an error only when it wrote nothing (no server could answer): the
	// API then answers it through its one error mapping, like any other.
	Forward(w http.ResponseWriter, r *http.Request, route string) error
}

// forwarded turns the route table into an agent's: every /v1 route is
// answered by f, and the servers' internal routes, which only servers
// call on each other, are dropped. A route keeps its tier, so an agent
// with tokens checks them before forwarding (the servers check them
// again), and its codes, so its metrics are the app's view.
func forwarded(routes []route, f Forwarder) []route {
	h := func(c echo.Context) error { return f.Forward(c.Response(), c.Request(), c.Path()) }
	routes = slices.DeleteFunc(routes, func(r route) bool { return strings.HasPrefix(r.path, "/v1/internal/") })
	for i := range routes {
		if strings.HasPrefix(routes[i].path, "/v1/") {
			routes[i].h = h
			routes[i].codes = answers(append(slices.Clone(routes[i].codes), http.StatusBadRequest, statusClientClosed, http.StatusServiceUnavailable)...)
		}
	}
	return routes
}

// ErrorEvent is the Server-Sent Event that ends a stream err cut short, as
// a server ends one: named after the error's code, with its JSON body as
// data. A Forwarder writes it when it cannot go on with a stream it has
// begun.
func ErrorEvent(err error) []byte {
	ae := toError(err)
	b := append([]byte("event: "), ae.Code...)
	b = append(b, "\ndata: "...)
	b = appendErrorBody(b, ae)
	return append(b, '\n')
}
