package web

import (
	"strings"
	"testing"
	"time"

	"github.com/berthhq/berth/controller/internal/store"
)

func TestSparkline(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	f := func(v float64) *float64 { return &v }
	cpu := func(p store.MetricPoint) *float64 { return p.CPUPercent }
	hundred := func(*store.MetricPoint) float64 { return 100 }

	if pts, last := sparkline(nil, now, cpu, hundred); pts != "" || last != "" {
		t.Fatalf("no data: %q %q", pts, last)
	}
	// One point still draws (a short line at its level).
	pts, last := sparkline([]store.MetricPoint{{T: now.Add(-time.Minute), CPUPercent: f(50)}}, now, cpu, hundred)
	if strings.Count(pts, ",") != 2 || last != "50%" {
		t.Fatalf("one point: %q %q", pts, last)
	}
	// Values are clamped to the box, gaps (nil) skipped, the last value reported.
	series := []store.MetricPoint{
		{T: now.Add(-50 * time.Minute), CPUPercent: f(150)},
		{T: now.Add(-30 * time.Minute)},
		{T: now.Add(-10 * time.Minute), CPUPercent: f(0)},
	}
	pts, last = sparkline(series, now, cpu, hundred)
	if strings.Count(pts, ",") != 2 || last != "0%" || !strings.HasSuffix(pts, ",27.0") || !strings.Contains(pts, ",1.0") {
		t.Fatalf("series: %q %q", pts, last)
	}
}
