package httpapi

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// distFiles are the only files /download serves: the agent binaries, the
// systemd unit and the checksum list. Nothing else in the directory leaks.
var distFiles = []string{"berth-agent-linux-amd64", "berth-agent-linux-arm64", "berth-agent.service"}

// Dist serves the agent install script and binaries from dir, with a
// SHA256SUMS list computed once at start so the install script can check
// what it downloaded.
type Dist struct {
	dir     string
	baseURL string
	sums    []byte
	script  []byte
	agents  map[string]string // GOARCH -> hex SHA-256 of the agent binary
}

// AgentSHA256 returns the hex SHA-256 of each agent binary served, by
// GOARCH (amd64, arm64), as computed at start. The printed install command
// carries them, so the installer checks the binary against a sum that did
// not come from the same download as the binary.
func (d *Dist) AgentSHA256() map[string]string {
	out := make(map[string]string, len(d.agents))
	for k, v := range d.agents {
		out[k] = v
	}
	return out
}

// NewDist reads dir (made by `make build`: .bin/agent-dist). A missing
// directory is not an error: the controller runs, /install.sh says why not.
func NewDist(dir, baseURL string) (*Dist, error) {
	d := &Dist{dir: dir, baseURL: baseURL, agents: map[string]string{}}
	script, err := os.ReadFile(filepath.Join(dir, "install.sh"))
	if err != nil {
		return d, nil
	}
	d.script = bytes.ReplaceAll(script, []byte("@@BASE_URL@@"), []byte(baseURL))
	var lines []string
	for _, name := range distFiles {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			continue
		}
		sum := sha256.Sum256(b)
		lines = append(lines, hex.EncodeToString(sum[:])+"  "+name+"\n")
		if arch, ok := strings.CutPrefix(name, "berth-agent-linux-"); ok {
			d.agents[arch] = hex.EncodeToString(sum[:])
		}
	}
	sort.Strings(lines)
	for _, l := range lines {
		d.sums = append(d.sums, l...)
	}
	return d, nil
}

// Register adds /install.sh and /download/{file}.
func (d *Dist) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /install.sh", func(w http.ResponseWriter, r *http.Request) {
		if d.script == nil {
			http.Error(w, "agent packages are not available on this controller (build them with make build)", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "text/x-shellscript; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(d.script)
	})
	mux.HandleFunc("GET /download/{file}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("file")
		if name == "SHA256SUMS" {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			_, _ = w.Write(d.sums)
			return
		}
		for _, allowed := range distFiles {
			if name == allowed {
				w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", name))
				http.ServeFile(w, r, filepath.Join(d.dir, name))
				return
			}
		}
		http.NotFound(w, r)
	})
}
