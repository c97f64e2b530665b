package store

import (
	"io"
	"testing"
	"time"
)

// BenchmarkEncodeCopyRows is the controller's CPU cost of laying out one
// agent batch (360 samples, one filesystem each) as COPY rows, without
// and with the available-bytes and inode columns: the database is left
// out so the figure is not lost in this shared machine's noise.
func BenchmarkEncodeCopyRows(b *testing.B) {
	for _, withAvail := range []bool{false, true} {
		name := "without"
		if withAvail {
			name = "with"
		}
		b.Run(name, func(b *testing.B) {
			c := encodeColumns(time.Now(), 360, withAvail)
			buf := make([]byte, 64<<10)
			var bytes int64
			for b.Loop() {
				mc := &metricCopy{rows: metricRows{batches: []MetricsBatch{{Seq: 1, Columns: c}}, i: -1}}
				for {
					n, err := mc.Read(buf)
					bytes += int64(n)
					if err == io.EOF {
						break
					}
				}
			}
			b.ReportMetric(float64(bytes)/float64(b.N)/360, "bytes/row")
		})
	}
}

func encodeColumns(start time.Time, n int, withAvail bool) *MetricColumns {
	c := &MetricColumns{Mounts: [][]byte{[]byte(`"/"`)}}
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
