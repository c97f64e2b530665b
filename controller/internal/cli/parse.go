package cli

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// parseMemory reads a memory limit: bytes, or a number with K, M, G or T
// (optionally followed by i, and B: 512M, 512Mi, 512MiB). Every suffix is
// binary (1M = 1048576), as systemd's MemoryMax= and cgroup tools read them,
// so "512M" means the same here as on the server.
func parseMemory(s string) (uint64, error) {
	in := strings.TrimSpace(s)
	if in == "" {
		return 0, errors.New("empty size (want a number of bytes or K/M/G/T, like 512M)")
	}
	i := 0
	for i < len(in) && in[i] >= '0' && in[i] <= '9' {
		i++
	}
	num, unit := in[:i], strings.ToUpper(in[i:])
	// K, Ki, KiB and KB all mean 1024, as the server reads them.
	unit = strings.TrimSuffix(strings.TrimSuffix(unit, "B"), "I")
	mult, ok := map[string]uint64{"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[unit]
	if !ok || (unit == "" && len(in) > i && strings.ToUpper(in[i:]) != "B") {
		return 0, fmt.Errorf("size %q: want a whole number with an optional unit K, M, G or T (like 512M)", s)
	}
	n, err := strconv.ParseUint(num, 10, 64)
	if err != nil {
		var ne *strconv.NumError
		if errors.As(err, &ne) && errors.Is(ne.Err, strconv.ErrRange) {
			return 0, fmt.Errorf("size %q is too large", s)
		}
		return 0, fmt.Errorf("size %q: want a whole number with an optional unit K, M, G or T (like 512M)", s)
	}
	if n == 0 {
		return 0, fmt.Errorf("size %q must be more than zero (leave the flag out for no limit)", s)
	}
	if n > math.MaxUint64/mult {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return n * mult, nil
}

// maxCPUPercent bounds --cpu-max: 1000 cores' worth is far beyond any host,
// so a larger value is a typo.
const maxCPUPercent = 100000

// parseCPU reads a CPU limit in percent of one core: "150%" (or "150") is
// one and a half cores.
func parseCPU(s string) (uint32, error) {
	in := strings.TrimSuffix(strings.TrimSpace(s), "%")
	n, err := strconv.ParseUint(in, 10, 32)
	if err != nil || in == "" {
		return 0, fmt.Errorf("CPU limit %q: want a whole percentage of one core, like 150%%", s)
	}
	if n == 0 {
		return 0, fmt.Errorf("CPU limit %q must be more than 0%% (leave the flag out for no limit)", s)
	}
	if n > maxCPUPercent {
		return 0, fmt.Errorf("CPU limit %q is more than %d%%", s, maxCPUPercent)
	}
	return uint32(n), nil
}

// parseSeconds reads a Go duration (30s, 1m30s) that must be a positive
// whole number of seconds: the server counts the grace period in seconds,
// and silently rounding 1500ms would change what the user asked for.
func parseSeconds(what, s string) (uint32, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("%s %q: want a duration like 30s or 2m", what, s)
	}
	if d <= 0 {
		return 0, fmt.Errorf("%s %q must be positive", what, s)
	}
	if d%time.Second != 0 {
		return 0, fmt.Errorf("%s %q: want whole seconds", what, s)
	}
	if d/time.Second > math.MaxUint32 {
		return 0, fmt.Errorf("%s %q is too long", what, s)
	}
	return uint32(d / time.Second), nil
}

// parseSince reads --since: a positive Go duration (10m, 2h).
func parseSince(s string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("--since %q: want a duration like 10m or 2h", s)
	}
	if d <= 0 {
		return 0, fmt.Errorf("--since %q must be positive", s)
	}
	return d, nil
}
