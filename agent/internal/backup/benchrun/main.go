// Command benchrun runs the agent's backup pipeline (backup.Run,
// backup.Restore) once, for scripts/backup-bench.sh: the same code the
// agent's backup jobs call, without the controller around it. It prints one
// JSON line with the result, the wall time and the process's peak RSS
// (VmHWM), which covers the pipeline's buffers (the dump program is a child
// process with its own).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/berthhq/berth/agent/internal/backup"
)

func main() {
	mode := flag.String("mode", "backup", "backup | restore")
	kind := flag.String("kind", "postgres", "source kind")
	name := flag.String("name", "", "database name or directory (restore: the target)")
	dir := flag.String("dest", "", "local destination directory")
	key := flag.String("key", "", "object key")
	recipient := flag.String("recipient", "", "age recipient (backup)")
	identityFile := flag.String("identity-file", "", "file with the age identity (restore)")
	size := flag.Int64("size", 0, "stored size (restore)")
	sum := flag.String("sha256", "", "stored SHA-256 (restore)")
	force := flag.Bool("force", false, "restore over a non-empty target")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the run to this file")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}

	ctx := context.Background()
	dest := backup.Destination{Kind: "local", Path: *dir}
	src := backup.Source{Kind: *kind, Name: *name}
	start := time.Now()
	out := map[string]any{"mode": *mode}
	var err error
	switch *mode {
	case "backup":
		var res backup.Result
		res, err = backup.Run(ctx, backup.Spec{Source: src, Dest: dest, Key: *key, Recipient: *recipient, Log: os.Stderr})
		out["size"], out["sha256"] = res.Size, res.SHA256
	case "restore":
		var id []byte
		if id, err = os.ReadFile(*identityFile); err == nil {
			o := backup.Object{Dest: dest, Key: *key, Size: *size, SHA256: *sum, Kind: *kind}
			err = backup.Restore(ctx, o, identityLine(string(id)), backup.RestoreTarget{Source: src, Force: *force}, os.Stderr)
		}
	default:
		err = fmt.Errorf("unknown mode %q", *mode)
	}
	out["seconds"] = time.Since(start).Seconds()
	out["peak_rss_kib"] = vmHWM()
	if err != nil {
		out["error"] = err.Error()
	}
	json.NewEncoder(os.Stdout).Encode(out)
	if err != nil {
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

// identityLine is the key line of an age-keygen file (which has comments).
func identityLine(s string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "AGE-SECRET-KEY-") {
			return strings.TrimSpace(l)
		}
	}
	return strings.TrimSpace(s)
}

// vmHWM is the process's peak resident set size in KiB.
func vmHWM() int64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			var n int64
			fmt.Sscanf(strings.TrimSpace(v), "%d", &n)
			return n
		}
	}
	return 0
}
