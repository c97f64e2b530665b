package alert

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/berthhq/berth/controller/internal/store"
)

// ErrInvalid wraps every refusal of bad input.
var ErrInvalid = errors.New("invalid")

// The metrics a rule may watch.
const (
	MetricCPU     = "cpu"
	MetricMemory  = "memory"
	MetricSwap    = "swap"
	MetricLoad    = "load"
	MetricDisk    = "disk"
	MetricInodes  = "inodes"
	MetricNetRx   = "net_rx"
	MetricNetTx   = "net_tx"
	MetricOffline = "offline"
)

// Metrics lists them in the order the CLI names them.
var Metrics = []string{MetricCPU, MetricMemory, MetricSwap, MetricLoad, MetricDisk, MetricInodes, MetricNetRx, MetricNetTx, MetricOffline}

// The levels.
const (
	LevelWarning  = "warning"
	LevelCritical = "critical"
)

// Bounds on a rule.
const (
	MaxFor         = 24 * time.Hour
	DefaultFor     = 5 * time.Minute
	DefaultOffline = 2 * time.Minute
	// percentMargin is how far below a percent threshold a rule resolves
	// by default; otherwise it is relativeMargin of the threshold.
	percentMargin  = 5.0
	relativeMargin = 0.1
	maxLoad        = 1000.0
	maxRate        = 1e13 // bytes per second: 80 Tbit/s
	maxMount       = 4096
)

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]*$`)

func validName(s string) bool { return len(s) <= 63 && nameRE.MatchString(s) }

func isPercent(metric string) bool {
	switch metric {
	case MetricCPU, MetricMemory, MetricSwap, MetricDisk, MetricInodes:
		return true
	}
	return false
}

func perMount(metric string) bool { return metric == MetricDisk || metric == MetricInodes }

// unit is how a metric's threshold is written.
func unit(metric string) string {
	switch {
	case isPercent(metric):
		return "%"
	case metric == MetricNetRx, metric == MetricNetTx:
		return " B/s"
	}
	return ""
}

// Spec is a rule as an interface asks for it. The selector is Server (a
// name or id) or Label ("key=value"), or neither for every server.
type Spec struct {
	Name         string
	Metric       string
	Above        *float64
	ResolveBelow *float64
	For          *time.Duration // nil: DefaultFor (offline: DefaultOffline)
	Mount        string
	Server       string
	Label        string
	Level        string // default warning
	// Replace changes an existing alert of that name (resolving what it
	// has firing) instead of refusing the name; without one it adds.
	Replace bool
}

// check validates s and returns the rule to store (without the server id,
// which the caller resolves).
func (s Spec) check() (store.AlertRule, error) {
	r := store.AlertRule{Name: strings.TrimSpace(s.Name), Metric: strings.ToLower(strings.TrimSpace(s.Metric)), Mount: s.Mount}
	if !validName(r.Name) {
		return r, fmt.Errorf("%w: alert name must be 1-63 lowercase letters, digits, '.', '_' or '-'", ErrInvalid)
	}
	if !slices.Contains(Metrics, r.Metric) {
		return r, fmt.Errorf("%w: unknown metric %q: one of %s", ErrInvalid, cut(s.Metric, 30), strings.Join(Metrics, ", "))
	}
	r.Level = strings.ToLower(strings.TrimSpace(s.Level))
	if r.Level == "" {
		r.Level = LevelWarning
	}
	if r.Level != LevelWarning && r.Level != LevelCritical {
		return r, fmt.Errorf("%w: level must be warning or critical", ErrInvalid)
	}
	r.For = DefaultFor
	if r.Metric == MetricOffline {
		r.For = DefaultOffline
	}
	if s.For != nil {
		r.For = *s.For
	}
	if r.For < 0 || r.For > MaxFor || r.For%time.Second != 0 {
		return r, fmt.Errorf("%w: --for must be whole seconds from 0s to %s", ErrInvalid, MaxFor)
	}
	if r.Metric == MetricOffline {
		if s.Above != nil || s.ResolveBelow != nil {
			return r, fmt.Errorf("%w: offline takes no threshold (--above, --resolve-below): it fires after --for without a heartbeat", ErrInvalid)
		}
	} else {
		if s.Above == nil {
			return r, fmt.Errorf("%w: --above is required for %s", ErrInvalid, r.Metric)
		}
		above := *s.Above
		if err := checkThreshold(r.Metric, "--above", above); err != nil {
			return r, err
		}
		var below float64
		if s.ResolveBelow != nil {
			below = *s.ResolveBelow
			if err := checkThreshold(r.Metric, "--resolve-below", below); err != nil {
				return r, err
			}
			if below > above {
				return r, fmt.Errorf("%w: --resolve-below (%g) must not be above --above (%g)", ErrInvalid, below, above)
			}
		} else if isPercent(r.Metric) {
			below = max(above-percentMargin, 0)
		} else {
			below = above * (1 - relativeMargin)
		}
		r.Above, r.ResolveBelow = &above, &below
	}
	if r.Mount != "" {
		if !perMount(r.Metric) {
			return r, fmt.Errorf("%w: --mount is for disk and inodes only, not %s", ErrInvalid, r.Metric)
		}
		if !strings.HasPrefix(r.Mount, "/") || len(r.Mount) > maxMount || strings.ContainsRune(r.Mount, 0) {
			return r, fmt.Errorf("%w: --mount must be an absolute path of at most %d bytes", ErrInvalid, maxMount)
		}
	}
	if s.Server != "" && s.Label != "" {
		return r, fmt.Errorf("%w: give --server or --label, not both", ErrInvalid)
	}
	if s.Label != "" {
		k, v, ok := strings.Cut(s.Label, "=")
		if !ok || !validName(k) || len(v) > 255 {
			return r, fmt.Errorf("%w: --label must be KEY=VALUE with a lowercase slug key and a value of at most 255 bytes", ErrInvalid)
		}
		r.LabelKey, r.LabelValue = k, v
	}
	return r, nil
}

func checkThreshold(metric, flag string, v float64) error {
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return fmt.Errorf("%w: %s must be a number of at least 0", ErrInvalid, flag)
	}
	switch {
	case isPercent(metric) && v > 100:
		return fmt.Errorf("%w: %s is a percentage for %s: 0 to 100", ErrInvalid, flag, metric)
	case metric == MetricLoad && v > maxLoad:
		return fmt.Errorf("%w: %s for load (per core) is at most %g", ErrInvalid, flag, maxLoad)
	case (metric == MetricNetRx || metric == MetricNetTx) && v > maxRate:
		return fmt.Errorf("%w: %s for %s (bytes per second) is at most %g", ErrInvalid, flag, metric, maxRate)
	}
	return nil
}

// cut shortens s to at most n bytes for an error message.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// matches reports whether rule r applies to server t.
func matches(r *store.AlertRule, t *store.AlertTarget) bool {
	switch {
	case r.ServerID != nil:
		return *r.ServerID == t.ID
	case r.LabelKey != "":
		v, ok := t.Labels[r.LabelKey]
		return ok && v == r.LabelValue
	}
	return true
}

// fires and resolves are the two comparisons of a rule: above the
// threshold opens the condition, below the lower mark closes it (with no
// margin, "not above" closes it).
func fires(r *store.AlertRule, v float64) bool { return v > *r.Above }

func resolves(r *store.AlertRule, v float64) bool {
	if *r.ResolveBelow >= *r.Above {
		return v <= *r.Above
	}
	return v < *r.ResolveBelow
}
