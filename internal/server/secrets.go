package server

import (
	"fmt"
	"log/slog"
	"os"
	"runtime"
)

// warnIfShared logs one warning when the secret file at path (the value
// of key) can be read, written or run by users other than its owner:
// anyone who can read auth.tokens_file or the TLS key can impersonate
// clients or the server. It names the path and the mode, never the
// content. A file it cannot stat is left to the read that follows, which
// reports it. Windows has no such mode bits.
func warnIfShared(log *slog.Logger, key, path string) {
	if runtime.GOOS == "windows" {
		return
	}
	fi, err := os.Stat(path) // follows links, as the read does: a mounted secret's mode is its target's
	if err != nil {
		return
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		log.Warn(key+" grants permissions to group or others: make it readable by the daemon's user only (chmod 600)",
			"path", path, "mode", fmt.Sprintf("%#o", perm))
	}
}
