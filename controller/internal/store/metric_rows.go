package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
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
	// What df needs besides used and total, and the inode counts: per
	// sample with DiskUsed (stored as disk_avail, inodes_total,
	// inodes_free) and per filesystem (the "avail", "inodes_total" and
	// "inodes_free" keys of disks). Agents that predate them send them
	// empty, which stores NULL and leaves the keys out; otherwise a column
	// has an entry per sample (per filesystem for the FS ones).
	DiskAvail, InodesTotal, InodesFree   []uint64
	FSAvail, FSInodesTotal, FSInodesFree []uint64
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
	for _, l := range []int{len(c.DiskAvail), len(c.InodesTotal), len(c.InodesFree)} {
		if l != 0 && l != n {
			return fmt.Errorf("a disk space or inode column has %d entries for %d samples", l, n)
		}
	}
	fs := 0
	for _, k := range c.DiskCount {
		fs += int(k)
	}
	if len(c.FSMount) != fs || len(c.FSUsed) != fs || len(c.FSTotal) != fs {
		return fmt.Errorf("the filesystem columns do not match the disk counts (%d filesystems)", fs)
	}
	for _, l := range []int{len(c.FSAvail), len(c.FSInodesTotal), len(c.FSInodesFree)} {
		if l != 0 && l != fs {
			return fmt.Errorf("a filesystem space or inode column has %d entries for %d filesystems", l, fs)
		}
	}
	for _, k := range c.FSMount {
		if int(k) >= len(c.Mounts) {
			return fmt.Errorf("filesystem mount index %d of %d", k, len(c.Mounts))
		}
	}
	return nil
}

// copyMetricsSQL lists server_metrics' columns in the order appendRow
// encodes them.
const copyMetricsSQL = `COPY server_metrics (server_id, recorded_at, cpu_percent, load1, load5, load15, mem_used, mem_total,
	swap_used, swap_total, disk_used, disk_total, disk_read_bps, disk_write_bps, net_rx_bps, net_tx_bps, disks,
	disk_avail, inodes_total, inodes_free) FROM STDIN BINARY`

// copyMetrics COPYs the batches' samples, each attributed to its batch's
// server, or to the sample's own ServerID when ownID is set (Samples
// only). It must run in a transaction.
//
// The rows are encoded here in COPY's binary format, straight from the
// batches: pgx's generic CopyFrom wants every value as an interface and
// looks up an encode plan for each, which was an eighth of the
// controller's CPU in a backfill of millions of rows, and asks the server
// for the column types first. The types are fixed by the migrations; a
// mismatch fails the COPY (and the tests).
func (s *Store) copyMetrics(ctx context.Context, batches []MetricsBatch, ownID bool) (int64, error) {
	tx, ok := s.db.(pgx.Tx)
	if !ok {
		return 0, errors.New("copy metrics outside a transaction")
	}
	tag, err := tx.Conn().PgConn().CopyFrom(ctx, &metricCopy{rows: metricRows{batches: batches, ownID: ownID, i: -1}}, copyMetricsSQL)
	return tag.RowsAffected(), err
}

// metricRows walks the batches' samples without copying them.
type metricRows struct {
	batches []MetricsBatch
	ownID   bool
	b, i    int // the current batch and sample
	fs      int // Columns: the current sample's first filesystem
	nextFS  int // Columns: the next sample's first filesystem
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

// metricCopy is the COPY stream: header, a tuple per sample, trailer.
type metricCopy struct {
	rows         metricRows
	buf          []byte
	off          int
	began, ended bool
}

func (c *metricCopy) Read(p []byte) (int, error) {
	if c.off > 0 { // keep what is left of the last row at the front
		c.buf = c.buf[:copy(c.buf, c.buf[c.off:])]
		c.off = 0
	}
	for len(c.buf) < len(p) && !c.ended {
		switch {
		case !c.began:
			c.buf = append(c.buf, "PGCOPY\n\xff\r\n\x00"...)
			c.buf = append(c.buf, 0, 0, 0, 0, 0, 0, 0, 0) // flags, header extension length
			c.began = true
		case c.rows.Next():
			c.buf = c.rows.appendRow(c.buf)
		default:
			c.buf = append(c.buf, 0xff, 0xff) // trailer
			c.ended = true
		}
	}
	if len(c.buf) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.buf)
	c.off = n
	return n, nil
}

// pgEpochMicros is 2000-01-01 UTC, PostgreSQL's timestamp zero, in Unix
// microseconds.
const pgEpochMicros = 946684800000000

func (r *metricRows) appendRow(d []byte) []byte {
	b := &r.batches[r.b]
	d = binary.BigEndian.AppendUint16(d, 20)
	if c := b.Columns; c != nil {
		i := r.i
		d = appendUUID(d, b.ServerID)
		d = appendInt8(d, c.RecordedAt[i]-pgEpochMicros)
		for _, v := range [...]float64{c.CPUPercent[i], c.Load1[i], c.Load5[i], c.Load15[i]} {
			d = appendFloat8(d, v)
		}
		for _, v := range [...]uint64{c.MemUsed[i], c.MemTotal[i], c.SwapUsed[i], c.SwapTotal[i], c.DiskUsed[i], c.DiskTotal[i]} {
			d = appendInt8(d, clampI64(v))
		}
		for _, v := range [...]float64{c.DiskReadBps[i], c.DiskWriteBps[i], c.NetRxBps[i], c.NetTxBps[i]} {
			if c.HasRates[i] {
				d = appendFloat8(d, v)
			} else {
				d = appendNull(d)
			}
		}
		nd := int(c.DiskCount[i])
		if nd == 0 {
			d = appendNull(d)
		} else {
			d = r.appendDisks(d, c, nd)
		}
		for _, col := range [...][]uint64{c.DiskAvail, c.InodesTotal, c.InodesFree} {
			if len(col) == 0 {
				d = appendNull(d)
			} else {
				d = appendInt8(d, clampI64(col[i]))
			}
		}
		return d
	}
	m := &b.Samples[r.i]
	id := b.ServerID
	if r.ownID {
		id = m.ServerID
	}
	d = appendUUID(d, id)
	d = appendInt8(d, m.RecordedAt.UnixMicro()-pgEpochMicros)
	for _, v := range [...]*float64{m.CPUPercent, m.Load1, m.Load5, m.Load15} {
		d = appendOptFloat8(d, v)
	}
	for _, v := range [...]*int64{m.MemUsed, m.MemTotal, m.SwapUsed, m.SwapTotal, m.DiskUsed, m.DiskTotal} {
		d = appendOptInt8(d, v)
	}
	for _, v := range [...]*float64{m.DiskReadBps, m.DiskWriteBps, m.NetRxBps, m.NetTxBps} {
		d = appendOptFloat8(d, v)
	}
	if m.Disks == nil {
		d = appendNull(d)
	} else {
		d = binary.BigEndian.AppendUint32(d, uint32(len(m.Disks)+1))
		d = append(d, 1)
		d = append(d, m.Disks...)
	}
	for _, v := range [...]*int64{m.DiskAvail, m.InodesTotal, m.InodesFree} {
		d = appendOptInt8(d, v)
	}
	return d
}

// appendDisks appends the current sample's nd filesystems as the disks
// jsonb: [{"mount":"/","used":1,"total":2,"avail":1,"inodes_total":9,
// "inodes_free":8},...], hand-encoded (encoding/json's reflection per row
// showed); the last three keys only when the agent sent them.
func (r *metricRows) appendDisks(d []byte, c *MetricColumns, nd int) []byte {
	at := len(d)
	d = append(d, 0, 0, 0, 0, 1) // length, filled in below; jsonb version 1
	d = append(d, '[')
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
		if len(c.FSAvail) > 0 {
			d = append(d, `,"avail":`...)
			d = strconv.AppendUint(d, c.FSAvail[j], 10)
		}
		if len(c.FSInodesTotal) > 0 {
			d = append(d, `,"inodes_total":`...)
			d = strconv.AppendUint(d, c.FSInodesTotal[j], 10)
		}
		if len(c.FSInodesFree) > 0 {
			d = append(d, `,"inodes_free":`...)
			d = strconv.AppendUint(d, c.FSInodesFree[j], 10)
		}
		d = append(d, '}')
	}
	d = append(d, ']')
	binary.BigEndian.PutUint32(d[at:], uint32(len(d)-at-4))
	return d
}

// Binary COPY fields: a 4-byte length (-1 for NULL), then the value.
func appendNull(d []byte) []byte { return append(d, 0xff, 0xff, 0xff, 0xff) }

func appendInt8(d []byte, v int64) []byte {
	d = append(d, 0, 0, 0, 8)
	return binary.BigEndian.AppendUint64(d, uint64(v))
}

func appendFloat8(d []byte, v float64) []byte {
	d = append(d, 0, 0, 0, 8)
	return binary.BigEndian.AppendUint64(d, math.Float64bits(v))
}

func appendOptInt8(d []byte, v *int64) []byte {
	if v == nil {
		return appendNull(d)
	}
	return appendInt8(d, *v)
}

func appendOptFloat8(d []byte, v *float64) []byte {
	if v == nil {
		return appendNull(d)
	}
	return appendFloat8(d, *v)
}

func appendUUID(d []byte, id ID) []byte {
	d = append(d, 0, 0, 0, 16)
	return append(d, id[:]...)
}

func clampI64(v uint64) int64 { return int64(min(v, 1<<62)) }
