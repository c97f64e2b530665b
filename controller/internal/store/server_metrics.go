package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/berthhq/berth/gen/dbsqlc"
)

// MetricSample is one agent sample. A nil metric was not measured in this
// sample (the first sample after a start has no rates).
type MetricSample struct {
	ServerID     ID
	RecordedAt   time.Time
	CPUPercent   *float64
	Load1        *float64
	Load5        *float64
	Load15       *float64
	MemUsed      *int64 // bytes
	MemTotal     *int64
	SwapUsed     *int64
	SwapTotal    *int64
	DiskUsed     *int64 // bytes, root filesystem (or the aggregate)
	DiskTotal    *int64
	DiskReadBps  *float64 // bytes per second over the sample interval
	DiskWriteBps *float64
	NetRxBps     *float64
	NetTxBps     *float64
	// Disks is [{"mount":"/","used":123,"total":456,"avail":78,
	// "inodes_total":9,"inodes_free":8}, ...] (the last three keys absent
	// from older agents); nil for none.
	Disks json.RawMessage
	// DiskAvail is what ordinary processes can still allocate on the
	// filesystem of DiskUsed (reserved blocks are neither used nor
	// available); InodesTotal/InodesFree its inodes. nil from older agents.
	DiskAvail   *int64
	InodesTotal *int64
	InodesFree  *int64
}

// DiskPercent is how full the disk is as df computes it, used / (used +
// avail) in percent (unrounded; df rounds up), or used / total for a
// sample without avail (from an agent that predates it). ok is false when
// the sample has no disk figures.
func (m *MetricSample) DiskPercent() (pct float64, ok bool) {
	if m.DiskUsed == nil {
		return 0, false
	}
	return DiskUsePercent(*m.DiskUsed, m.DiskAvail, m.DiskTotal)
}

// InodesPercent is the share of inodes in use; ok is false when the
// sample has no inode figures or the filesystem no inode count.
func (m *MetricSample) InodesPercent() (pct float64, ok bool) {
	if m.InodesTotal == nil || m.InodesFree == nil {
		return 0, false
	}
	return InodesUsePercent(*m.InodesTotal, *m.InodesFree)
}

// DiskUsePercent is df's use %: used / (used + avail) when avail is known,
// else used / total; ok is false when the denominator is 0. Every reader
// (charts, CLI, API, alerts) uses this figure, not used / total: reserved
// blocks make used / total read 6% on a disk that is 18% full for
// ordinary processes, and never reach 100% on one that is full for them.
func DiskUsePercent(used int64, avail, total *int64) (pct float64, ok bool) {
	switch {
	case avail != nil:
		return usePercent(float64(used), float64(*avail), true, 0)
	case total != nil:
		return usePercent(float64(used), 0, false, float64(*total))
	}
	return 0, false
}

// InodesUsePercent is (total - free) / total in percent; ok is false for
// a filesystem without an inode count (total 0).
func InodesUsePercent(total, free int64) (pct float64, ok bool) {
	return inodesPercent(float64(total), float64(free))
}

func metricSampleFromRow(r dbsqlc.ServerMetric) MetricSample {
	return MetricSample{
		ServerID: fromPG(r.ServerID), RecordedAt: r.RecordedAt,
		CPUPercent: r.CpuPercent, Load1: r.Load1, Load5: r.Load5, Load15: r.Load15,
		MemUsed: r.MemUsed, MemTotal: r.MemTotal, SwapUsed: r.SwapUsed, SwapTotal: r.SwapTotal,
		DiskUsed: r.DiskUsed, DiskTotal: r.DiskTotal, DiskReadBps: r.DiskReadBps, DiskWriteBps: r.DiskWriteBps,
		NetRxBps: r.NetRxBps, NetTxBps: r.NetTxBps, Disks: json.RawMessage(r.Disks),
		DiskAvail: r.DiskAvail, InodesTotal: r.InodesTotal, InodesFree: r.InodesFree,
	}
}

// InsertMetrics writes samples with COPY and reports how many. A sample
// outside every daily partition fails the whole COPY (there is no default
// partition). It does not dedupe: agents' batches go through
// IngestMetricsBatch.
func (s *Store) InsertMetrics(ctx context.Context, samples []MetricSample) (int64, error) {
	var n int64
	err := s.InTx(ctx, func(tx *Store) error {
		var err error
		n, err = tx.copyMetrics(ctx, []MetricsBatch{{Samples: samples}}, true)
		return err
	})
	return n, mapErr("insert metrics", err)
}

// IngestMetricsBatch stores one agent's batch exactly once: a group of
// one for IngestMetricsBatches. A replayed batch (seq <= the server's
// metrics_seq) stores nothing and returns false; the caller acknowledges
// it all the same. The samples are attributed to serverID whatever their
// own ServerID. ErrNotFound when the server is gone; seq must be positive.
func (s *Store) IngestMetricsBatch(ctx context.Context, serverID ID, seq int64, samples []MetricSample) (bool, error) {
	res, err := s.IngestMetricsBatches(ctx, []MetricsBatch{{ServerID: serverID, Seq: seq, Samples: samples}})
	if err != nil {
		return false, err
	}
	switch res[serverID] {
	case IngestStored:
		return true, nil
	case IngestDuplicate:
		return false, nil
	default:
		return false, fmt.Errorf("ingest metrics: server %s: %w", serverID, ErrNotFound)
	}
}

// CountMetrics counts a server's samples in [since, until).
func (s *Store) CountMetrics(ctx context.Context, serverID ID, since, until time.Time) (int64, error) {
	n, err := s.q.CountServerMetrics(ctx, dbsqlc.CountServerMetricsParams{ServerID: pgID(serverID), Since: since, Until: until})
	return n, mapErr("count metrics", err)
}

// LatestMetrics returns the newest sample since a time for each of the
// given servers; servers without one are absent from the map.
func (s *Store) LatestMetrics(ctx context.Context, serverIDs []ID, since time.Time) (map[ID]MetricSample, error) {
	rows, err := s.q.LatestMetrics(ctx, dbsqlc.LatestMetricsParams{ServerIds: pgIDs(serverIDs), Since: since})
	if err != nil {
		return nil, mapErr("latest metrics", err)
	}
	out := make(map[ID]MetricSample, len(rows))
	for _, r := range rows {
		m := metricSampleFromRow(r)
		out[m.ServerID] = m
	}
	return out, nil
}

// MetricPoint is one downsampled bucket: the average of each metric over the
// bucket's samples, except CPUPercentMax and the totals, which are maxima.
// A nil value was measured by no sample in the bucket.
type MetricPoint struct {
	ServerID      ID
	T             time.Time // the bucket's start
	Samples       int64
	CPUPercent    *float64
	CPUPercentMax *float64
	Load1         *float64
	Load5         *float64
	Load15        *float64
	MemUsed       *float64
	MemTotal      *float64
	SwapUsed      *float64
	SwapTotal     *float64
	DiskUsed      *float64
	DiskTotal     *float64
	DiskReadBps   *float64
	DiskWriteBps  *float64
	NetRxBps      *float64
	NetTxBps      *float64
	// DiskAvail (average), InodesTotal (maximum) and InodesFree (average)
	// go with DiskUsed; nil for buckets of samples from older agents.
	DiskAvail   *float64
	InodesTotal *float64
	InodesFree  *float64
	// DiskPercent is the bucket's average of each sample's DiskUsePercent
	// (df's figure); InodesPercent that of InodesUsePercent.
	DiskPercent   *float64
	InodesPercent *float64
}

func metricPointFromRow(r dbsqlc.MetricsSeriesRow) MetricPoint {
	return MetricPoint{
		ServerID: fromPG(r.ServerID), T: r.Bucket, Samples: r.Samples,
		CPUPercent: nanToNil(r.CpuPercent), CPUPercentMax: nanToNil(r.CpuPercentMax),
		Load1: nanToNil(r.Load1), Load5: nanToNil(r.Load5), Load15: nanToNil(r.Load15),
		MemUsed: nanToNil(r.MemUsed), MemTotal: nanToNil(r.MemTotal),
		SwapUsed: nanToNil(r.SwapUsed), SwapTotal: nanToNil(r.SwapTotal),
		DiskUsed: nanToNil(r.DiskUsed), DiskTotal: nanToNil(r.DiskTotal),
		DiskReadBps: nanToNil(r.DiskReadBps), DiskWriteBps: nanToNil(r.DiskWriteBps),
		NetRxBps: nanToNil(r.NetRxBps), NetTxBps: nanToNil(r.NetTxBps),
		DiskAvail: nanToNil(r.DiskAvail), InodesTotal: nanToNil(r.InodesTotal), InodesFree: nanToNil(r.InodesFree),
		DiskPercent: nanToNil(r.DiskPercent), InodesPercent: nanToNil(r.InodesPercent),
	}
}

// seriesOrigin aligns buckets on multiples of the step since the Unix epoch
// (so whole minutes, hours, UTC days): the same bucket boundaries whatever
// the window, and a chart that does not shift as it refreshes.
var seriesOrigin = time.Unix(0, 0).UTC()

// MetricsSeries downsamples a server's samples in [since, until) to one
// point per step, oldest first; buckets without samples are absent. The
// first bucket starts at or before since (buckets are aligned, see
// seriesOrigin) but holds only samples from since on.
func (s *Store) MetricsSeries(ctx context.Context, serverID ID, since, until time.Time, step time.Duration) ([]MetricPoint, error) {
	return s.metricsSeries(ctx, []ID{serverID}, since, until, step)
}

// MetricsSeriesForServers is MetricsSeries for several servers in one query
// (the dashboard's sparklines), by server.
func (s *Store) MetricsSeriesForServers(ctx context.Context, serverIDs []ID, since, until time.Time, step time.Duration) (map[ID][]MetricPoint, error) {
	points, err := s.metricsSeries(ctx, serverIDs, since, until, step)
	if err != nil {
		return nil, err
	}
	out := make(map[ID][]MetricPoint, len(serverIDs))
	for _, p := range points {
		out[p.ServerID] = append(out[p.ServerID], p)
	}
	return out, nil
}

func (s *Store) metricsSeries(ctx context.Context, serverIDs []ID, since, until time.Time, step time.Duration) ([]MetricPoint, error) {
	if step < time.Second || !until.After(since) {
		return nil, fmt.Errorf("metrics series: step %s over [%s, %s): %w", step, since, until, ErrInvalid)
	}
	rows, err := s.q.MetricsSeries(ctx, dbsqlc.MetricsSeriesParams{
		Step:      pgtype.Interval{Microseconds: step.Microseconds(), Valid: true},
		Origin:    seriesOrigin,
		ServerIds: pgIDs(serverIDs),
		Since:     since,
		Until:     until,
	})
	if err != nil {
		return nil, mapErr("metrics series", err)
	}
	out := make([]MetricPoint, len(rows))
	for i, r := range rows {
		out[i] = metricPointFromRow(r)
	}
	return out, nil
}

// MetricsBatch is one agent batch for IngestMetricsBatches: its samples
// as Samples or, in the agents' wire form, as Columns (then Samples is
// ignored).
type MetricsBatch struct {
	ServerID ID
	Seq      int64
	Samples  []MetricSample
	Columns  *MetricColumns
}

// Len is the number of samples in the batch.
func (b *MetricsBatch) Len() int {
	if b.Columns != nil {
		return len(b.Columns.RecordedAt)
	}
	return len(b.Samples)
}

// IngestOutcome is what became of one batch of a group.
type IngestOutcome uint8

// Outcomes of IngestMetricsBatches, per batch.
const (
	// IngestStored: committed now.
	IngestStored IngestOutcome = iota + 1
	// IngestDuplicate: committed before (a re-sent batch); acknowledge it.
	IngestDuplicate
)

// IngestMetricsBatches is group commit for many agents' batches: one
// transaction locks the servers in id order, keeps the batches whose
// sequence is new, advances those sequences in one statement and COPYs
// every kept sample at once. Exactly-once holds per batch as in
// IngestMetricsBatch. The servers must be distinct. The result maps each
// server to IngestStored or IngestDuplicate; a server that no longer
// exists is absent (its batch is dropped). When the group fails as a whole
// (one bad row fails the COPY), the caller retries the batches one by one
// with IngestMetricsBatch, so one bad batch never blocks the others.
func (s *Store) IngestMetricsBatches(ctx context.Context, batches []MetricsBatch) (map[ID]IngestOutcome, error) {
	ids := make([]pgtype.UUID, len(batches))
	want := make(map[ID]*MetricsBatch, len(batches))
	for i := range batches {
		b := &batches[i]
		if b.Seq <= 0 {
			return nil, fmt.Errorf("ingest metrics: sequence %d: %w", b.Seq, ErrInvalid)
		}
		if b.Columns != nil {
			if err := b.Columns.Validate(); err != nil {
				return nil, fmt.Errorf("ingest metrics: %w: %w", ErrInvalid, err)
			}
		}
		if _, dup := want[b.ServerID]; dup {
			return nil, fmt.Errorf("ingest metrics: server %s twice in one group: %w", b.ServerID, ErrInvalid)
		}
		want[b.ServerID] = b
		ids[i] = pgID(b.ServerID)
	}
	out := make(map[ID]IngestOutcome, len(batches))
	err := s.InTx(ctx, func(tx *Store) error {
		clear(out)
		locked, err := tx.q.LockServersForIngest(ctx, ids)
		if err != nil {
			return mapErr("ingest metrics", err)
		}
		var advIDs []pgtype.UUID
		var advSeqs []int64
		var kept []MetricsBatch
		rows := 0
		for _, l := range locked {
			id := fromPG(l.ID)
			b := want[id]
			if b.Seq <= l.MetricsSeq {
				out[id] = IngestDuplicate
				continue
			}
			out[id] = IngestStored
			advIDs, advSeqs = append(advIDs, l.ID), append(advSeqs, b.Seq)
			kept = append(kept, *b)
			rows += b.Len()
		}
		if len(advIDs) == 0 {
			return nil
		}
		if err := tx.q.SetServersMetricsSeq(ctx, dbsqlc.SetServersMetricsSeqParams{Ids: advIDs, Seqs: advSeqs}); err != nil {
			return mapErr("ingest metrics", err)
		}
		if rows > 0 {
			if _, err := tx.copyMetrics(ctx, kept, false); err != nil {
				return mapErr("ingest metrics", err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
