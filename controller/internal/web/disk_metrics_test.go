package web_test

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"testing"
	"time"

	"github.com/berthhq/berth/controller/internal/store"
)

// The chart data's disk percentage is df's, used / (used + avail), not
// used / total: a root filesystem with 100 bytes used, 500 available and
// 1000 in all (400 reserved) is 16.7% full, not 10%. Inode use comes along.
func TestMetricsJSONDiskPercentAsDf(t *testing.T) {
	e := newEnv(t, false)
	e.user("admin@example.com", store.RoleAdmin)
	c := e.client()
	c.login("admin@example.com", adminPassword)
	ctx := context.Background()
	srv, err := e.st.CreateServer(ctx, store.CreateServerParams{Name: "disk-1"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	if _, err := e.st.EnsureMetricsPartitions(ctx, now.Add(-24*time.Hour), 3); err != nil {
		t.Fatal(err)
	}
	i64 := func(v int64) *int64 { return &v }
	if _, err := e.st.InsertMetrics(ctx, []store.MetricSample{{
		ServerID: srv.ID, RecordedAt: now.Add(-5 * time.Minute),
		DiskUsed: i64(100), DiskTotal: i64(1000), DiskAvail: i64(500), InodesTotal: i64(1000), InodesFree: i64(200),
	}}); err != nil {
		t.Fatal(err)
	}

	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/servers/disk-1/metrics.json?range=1h", nil)
	resp, body := c.do(req)
	var data struct {
		T      []int64               `json:"t"`
		Series map[string][]*float64 `json:"series"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &data) != nil || len(data.T) != 1 {
		t.Fatalf("metrics: %d %s", resp.StatusCode, body)
	}
	for name, want := range map[string]float64{
		"disk_percent": 100.0 / 6, "inodes_percent": 80, "disk_used": 100, "disk_total": 1000, "disk_avail": 500,
		"inodes_total": 1000, "inodes_free": 200,
	} {
		if s := data.Series[name]; len(s) != 1 || s[0] == nil || math.Abs(*s[0]-want) > 1e-9 {
			t.Errorf("%s = %v, want %v (%s)", name, s, want, body)
		}
	}
}
