package store

import (
	"context"

	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// MetricColumns is a batch of samples column by column, as agents send it
// (agent.proto's MetricColumns): sample i is entry i of every per-sample
// column. COPY reads it as it stands, so a batch is stored without a
// struct, pointer or boxed value per sample; a reconnecting fleet replays
// millions of samples at once and each of those showed.
type MetricColumns struct {
	RecordedAt                       []int64 // unix microseconds
	CPUPercent, Load1, Load5, Load15 []float64
	// Byte counts; stored clamped to 2^62 (the columns are bigint).
	MemUsed, MemTotal, SwapUsed, SwapTotal, DiskUsed, DiskTotal []uint64
	// HasRates[i] false stores sample i's four rates as NULL.
	HasRates                                      []bool
	DiskReadBps, DiskWriteBps, NetRxBps, NetTxBps []float64
	// DiskCount[i] filesystems belong to sample i, following those of the
	// samples before it in FSMount, FSUsed and FSTotal. At most
	// MaxSampleDisks of a sample's filesystems are stored.
	DiskCount       []uint32
	FSMount         []uint32 // index into Mounts
	FSUsed, FSTotal []uint64
	Mounts          [][]byte // each mount point as a JSON string
	// Samples recorded before NotBefore or after NotAfter are skipped (a
	// zero bound does not apply): they would fall outside every partition.
	NotBefore, NotAfter time.Time
}

// MaxSampleDisks bounds the filesystems stored per sample.
const MaxSampleDisks = 64

// Validate checks that the columns agree with each other, so that COPY can
// index them blindly.
func (c *MetricColumns) Validate() error {
	n := len(c.RecordedAt)
	for _, l := range []int{len(c.CPUPercent), len(c.Load1), len(c.Load5), len(c.Load15), len(c.MemUsed), len(c.MemTotal),
		len(c.SwapUsed), len(c.SwapTotal), len(c.DiskUsed), len(c.DiskTotal), len(c.HasRates), len(c.DiskReadBps),
		len(c.DiskWriteBps), len(c.NetRxBps), len(c.NetTxBps), len(c.DiskCount)} {
		if l != n {
			return fmt.Errorf("a metrics column has %d entries for %d samples", l, n)
		}
	}
	fs := 0
	for _, k := range c.DiskCount {
		fs += int(k)
	}
	if len(c.FSMount) != fs || len(c.FSUsed) != fs || len(c.FSTotal) != fs {
		return fmt.Errorf("the filesystem columns do not match the disk counts (%d filesystems)", fs)
	}
	for _, k := range c.FSMount {
		if int(k) >= len(c.Mounts) {
			return fmt.Errorf("filesystem mount index %d of %d", k, len(c.Mounts))
		}
	}
	return nil
}

// metricColumns are server_metrics' columns in the order metricRows gives
// them (the same as the InsertServerMetrics query's).
var metricColumns = []string{"server_id", "recorded_at", "cpu_percent", "load1", "load5", "load15", "mem_used", "mem_total",
	"swap_used", "swap_total", "disk_used", "disk_total", "disk_read_bps", "disk_write_bps", "net_rx_bps", "net_tx_bps", "disks"}

// copyMetrics COPYs the batches' samples, each attributed to its batch's
// server, or to the sample's own ServerID when ownID is set (Samples only).
func (s *Store) copyMetrics(ctx context.Context, batches []MetricsBatch, ownID bool) (int64, error) {
	return s.db.CopyFrom(ctx, pgx.Identifier{"server_metrics"}, metricColumns, &metricRows{batches: batches, ownID: ownID, i: -1})
}

// metricRows feeds batches to COPY without copying them: the generated
// iterator wants every row as a parameter struct and boxes three values
// per row into fresh interfaces. This one reuses one row of pointers (pgx
// encodes each row before asking for the next).
type metricRows struct {
	batches []MetricsBatch
	ownID   bool
	b, i    int // the current batch and sample
	fs      int // Columns: the current sample's first filesystem
	nextFS  int // Columns: the next sample's first filesystem

	id    pgtype.UUID
	t     time.Time
	ints  [6]int64
	raw   []byte // Samples: the sample's own disks JSON
	disks []byte // Columns: disks JSON built here, reused
	row   [17]any
}

func (r *metricRows) Next() bool {
	for r.b < len(r.batches) {
		b := &r.batches[r.b]
		r.i++
		if r.i >= b.Len() {
			r.b, r.i, r.nextFS = r.b+1, -1, 0
			continue
		}
		c := b.Columns
		if c == nil {
			return true
		}
		r.fs = r.nextFS
		r.nextFS += int(c.DiskCount[r.i])
		t := time.UnixMicro(c.RecordedAt[r.i])
		if (!c.NotBefore.IsZero() && t.Before(c.NotBefore)) || (!c.NotAfter.IsZero() && t.After(c.NotAfter)) {
			continue
		}
		return true
	}
	return false
}

func (r *metricRows) Values() ([]any, error) {
	b := &r.batches[r.b]
	if b.Columns != nil {
		return r.columnValues(b.ServerID, b.Columns), nil
	}
	m := &b.Samples[r.i]
	id := b.ServerID
	if r.ownID {
		id = m.ServerID
	}
	r.id = pgID(id)
	r.raw = m.Disks
	r.row = [17]any{&r.id, &m.RecordedAt, m.CPUPercent, m.Load1, m.Load5, m.Load15, m.MemUsed, m.MemTotal,
		m.SwapUsed, m.SwapTotal, m.DiskUsed, m.DiskTotal, m.DiskReadBps, m.DiskWriteBps, m.NetRxBps, m.NetTxBps, nil}
	if m.Disks != nil {
		r.row[16] = &r.raw
	}
	return r.row[:], nil
}

func (r *metricRows) columnValues(server ID, c *MetricColumns) []any {
	i := r.i
	r.id = pgID(server)
	r.t = time.UnixMicro(c.RecordedAt[i])
	r.ints = [6]int64{clampI64(c.MemUsed[i]), clampI64(c.MemTotal[i]), clampI64(c.SwapUsed[i]),
		clampI64(c.SwapTotal[i]), clampI64(c.DiskUsed[i]), clampI64(c.DiskTotal[i])}
	r.row = [17]any{&r.id, &r.t, &c.CPUPercent[i], &c.Load1[i], &c.Load5[i], &c.Load15[i],
		&r.ints[0], &r.ints[1], &r.ints[2], &r.ints[3], &r.ints[4], &r.ints[5], nil, nil, nil, nil, nil}
	if c.HasRates[i] {
		r.row[12], r.row[13], r.row[14], r.row[15] = &c.DiskReadBps[i], &c.DiskWriteBps[i], &c.NetRxBps[i], &c.NetTxBps[i]
	}
	if nd := int(c.DiskCount[i]); nd > 0 {
		// [{"mount":"/","used":1,"total":2},...], hand-encoded into a
		// reused buffer (encoding/json's reflection per row showed too).
		d := append(r.disks[:0], '[')
		for j := r.fs; j < r.fs+min(nd, MaxSampleDisks); j++ {
			if j > r.fs {
				d = append(d, ',')
			}
			d = append(d, `{"mount":`...)
			d = append(d, c.Mounts[c.FSMount[j]]...)
			d = append(d, `,"used":`...)
			d = strconv.AppendUint(d, c.FSUsed[j], 10)
			d = append(d, `,"total":`...)
			d = strconv.AppendUint(d, c.FSTotal[j], 10)
			d = append(d, '}')
		}
		r.disks = append(d, ']')
		r.row[16] = &r.disks
	}
	return r.row[:]
}

func (r *metricRows) Err() error { return nil }

func clampI64(v uint64) int64 { return int64(min(v, 1<<62)) }
