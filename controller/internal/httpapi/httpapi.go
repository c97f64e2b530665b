// Package httpapi serves the controller's plain HTTP endpoints: health and
// version. The web UI mounts beside them.
package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"runtime"
	"time"

	"github.com/berthhq/berth/controller/internal/buildinfo"
)

// Pinger is the part of the database pool the health check needs.
type Pinger interface {
	Ping(ctx context.Context) error
}

// Deps are what the handlers need.
type Deps struct {
	DB            Pinger
	SchemaVersion uint
}

// Register adds /healthz and /version to mux.
func Register(mux *http.ServeMux, d Deps) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if err := d.DB.Ping(ctx); err != nil {
			// No error detail: it could name hosts or users; the log has it.
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("database unavailable\n"))
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"version":        buildinfo.Version,
			"commit":         buildinfo.Commit(),
			"go":             runtime.Version(),
			"schema_version": d.SchemaVersion,
		})
	})
}
