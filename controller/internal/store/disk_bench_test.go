package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/berthhq/berth/controller/internal/store"
	"github.com/berthhq/berth/controller/internal/testdb"
)

// BenchmarkIngestColumnsDiskAvail is the agents' column ingest path (a
// batch of 360 samples with one filesystem each, as berth-fleetsim sends)
// without and with the available bytes and inode columns an agent now
// sends, in one run: the cost of storing df's figures.
func BenchmarkIngestColumnsDiskAvail(b *testing.B) {
	for _, withAvail := range []bool{false, true} {
		name := "without"
		if withAvail {
			name = "with"
		}
		b.Run(name, func(b *testing.B) {
			db := testdb.New(b)
			st := store.New(db.Pool, nil)
			ids := benchFleet(b, db, 50)
			start := time.Now().Add(-2 * time.Hour)
			const per = 360
			for i := 0; b.Loop(); i++ {
				c := fleetsimColumns(start, per, withAvail)
				srv := ids[i%len(ids)]
				if _, err := st.IngestMetricsBatches(context.Background(), []store.MetricsBatch{{ServerID: srv, Seq: int64(i + 1), Columns: c}}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(per*b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

func fleetsimColumns(start time.Time, n int, withAvail bool) *store.MetricColumns {
	c := &store.MetricColumns{Mounts: [][]byte{[]byte(`"/"`)}}
	for i := range n {
		r := float64(i%100) / 100
		c.RecordedAt = append(c.RecordedAt, start.Add(time.Duration(i)*10*time.Second).UnixMicro())
		c.CPUPercent, c.Load1, c.Load5, c.Load15 = append(c.CPUPercent, 100*r), append(c.Load1, 2*r), append(c.Load5, r), append(c.Load15, r)
		c.MemUsed, c.MemTotal = append(c.MemUsed, 1<<30+uint64(r*(1<<30))), append(c.MemTotal, 4<<30)
		c.SwapUsed, c.SwapTotal = append(c.SwapUsed, 0), append(c.SwapTotal, 1<<30)
		used := 10<<30 + uint64(r*(1<<30))
		c.DiskUsed, c.DiskTotal = append(c.DiskUsed, used), append(c.DiskTotal, 40<<30)
		c.HasRates = append(c.HasRates, true)
		c.DiskReadBps, c.DiskWriteBps = append(c.DiskReadBps, 1e4*r), append(c.DiskWriteBps, 5e4*r)
		c.NetRxBps, c.NetTxBps = append(c.NetRxBps, 1e5*r), append(c.NetTxBps, 2e4*r)
		c.DiskCount, c.FSMount = append(c.DiskCount, 1), append(c.FSMount, 0)
		c.FSUsed, c.FSTotal = append(c.FSUsed, used), append(c.FSTotal, 40<<30)
		if withAvail {
			avail, ifree := 28<<30-uint64(r*(1<<30)), 2500000-uint64(r*1000)
			c.DiskAvail, c.InodesTotal, c.InodesFree = append(c.DiskAvail, avail), append(c.InodesTotal, 2621440), append(c.InodesFree, ifree)
			c.FSAvail, c.FSInodesTotal, c.FSInodesFree = append(c.FSAvail, avail), append(c.FSInodesTotal, 2621440), append(c.FSInodesFree, ifree)
		}
	}
	return c
}
