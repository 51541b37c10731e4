package api

import (
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
)

// stats serves GET /v1/stats: the engine's live counts and the events
// counted since start and over the last minute, so that a console opened
// now shows rates and totals it did not watch happen.
func (s *Server) stats(c echo.Context) error {
	if err := s.readBarrier(c); err != nil {
		return err
	}
	now := time.Now()
	return c.JSON(http.StatusOK, newStatsJSON(now, s.locker.Stats(), s.source.Stats(now)))
}
