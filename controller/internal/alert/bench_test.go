package alert

import (
	"log/slog"
	"testing"
	"time"

	"github.com/berthhq/berth/controller/internal/store"
)

// BenchmarkObserveMetrics is the in-memory evaluation of one agent's batch
// (one sample, one mount) against five fleet-wide rules, across a fleet of
// 10,000 servers, as the fleet's ingest calls it: what alerting adds to
// each batch. cpu crosses its threshold on a tenth of the samples, so
// pending conditions open and close as in the fleet benchmark.
func BenchmarkObserveMetrics(b *testing.B) {
	eng, err := NewEngine(Config{Store: &store.Store{}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	rules := []store.AlertRule{
		{ID: store.NewID(), Name: "cpu-hot", Metric: MetricCPU, Above: f(90), ResolveBelow: f(85), For: 5 * time.Minute},
		{ID: store.NewID(), Name: "mem-full", Metric: MetricMemory, Above: f(95), ResolveBelow: f(90), For: 10 * time.Minute},
		{ID: store.NewID(), Name: "disk-full", Metric: MetricDisk, Above: f(90), ResolveBelow: f(85), For: 5 * time.Minute},
		{ID: store.NewID(), Name: "load-high", Metric: MetricLoad, Above: f(4), ResolveBelow: f(3.6), For: 5 * time.Minute},
		{ID: store.NewID(), Name: "net-busy", Metric: MetricNetRx, Above: f(1e9), ResolveBelow: f(9e8), For: 5 * time.Minute},
	}
	const servers = 10000
	snap := &snapshot{version: 1, rules: map[store.ID]*store.AlertRule{}, targets: map[store.ID]*store.AlertTarget{}}
	for i := range rules {
		snap.rules[rules[i].ID] = &rules[i]
		snap.ordered = append(snap.ordered, &rules[i])
		snap.metricRules++
	}
	ids := make([]store.ID, servers)
	for i := range ids {
		ids[i] = store.NewID()
		snap.targets[ids[i]] = &store.AlertTarget{ID: ids[i], Name: "sim", CPUs: 2}
	}
	eng.snap.Store(snap)
	t0 := time.Now()
	batches := make([]*store.MetricColumns, 16)
	for i := range batches {
		batches[i] = sample(t0, float64(i*100/len(batches)), 30, "/")
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		c := batches[i%len(batches)]
		c.RecordedAt[0] = t0.Add(time.Duration(i) * time.Microsecond).UnixMicro()
		eng.ObserveMetrics(ids[i%servers], c)
	}
	if len(eng.work) != 0 {
		b.Fatalf("%d transitions: the benchmark's rules must not fire", len(eng.work))
	}
}
