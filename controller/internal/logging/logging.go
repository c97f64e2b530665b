// Package logging builds the controller's slog logger: JSON lines when
// stdout is not a terminal (journald, files, log shippers), human-readable
// text when a person is watching.
package logging

import (
	"io"
	"log/slog"
	"os"
)

// New returns a logger writing to w at level.
func New(w io.Writer, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if isTerminal(w) {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
