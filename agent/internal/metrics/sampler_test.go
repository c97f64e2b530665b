package metrics

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shirou/gopsutil/v4/common"
)

// TestSamplerRealHost samples this machine twice, 200 ms apart, with the
// CPU kept busy in between.
func TestSamplerRealHost(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, err := NewSampler(SamplerOptions{OnPartial: func(err error) { t.Errorf("part of the sample unreadable: %v", err) }})
	if err != nil {
		t.Fatal(err)
	}

	first, err := s.Sample(ctx)
	if err != nil {
		t.Fatalf("first sample: %v", err)
	}
	if !first.HasRates {
		t.Errorf("first sample: HasRates false although NewSampler took a baseline")
	}

	// Busy-work for 200 ms so the CPU share cannot be zero.
	deadline := time.Now().Add(200 * time.Millisecond)
	x := 0
	for time.Now().Before(deadline) {
		for i := range 10000 {
			x += i * i
		}
	}
	_ = x

	got, err := s.Sample(ctx)
	if err != nil {
		t.Fatalf("second sample: %v", err)
	}
	t.Logf("sample: %+v", got)

	if !got.HasRates {
		t.Error("HasRates is false on the second sample")
	}
	if !(got.CPUPercent > 0 && got.CPUPercent <= 100) {
		t.Errorf("CPUPercent = %v, want in (0, 100]", got.CPUPercent)
	}
	if got.MemTotal == 0 || got.MemUsed > got.MemTotal {
		t.Errorf("memory used/total = %d/%d", got.MemUsed, got.MemTotal)
	}
	if got.SwapUsed > got.SwapTotal {
		t.Errorf("swap used/total = %d/%d", got.SwapUsed, got.SwapTotal)
	}
	for name, v := range map[string]float64{"load1": got.Load1, "load5": got.Load5, "load15": got.Load15} {
		if v < 0 || math.IsNaN(v) {
			t.Errorf("%s = %v", name, v)
		}
	}
	for name, v := range map[string]float64{
		"disk read": got.DiskReadBps, "disk write": got.DiskWriteBps,
		"net rx": got.NetRxBps, "net tx": got.NetTxBps,
	} {
		if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
			t.Errorf("%s rate = %v", name, v)
		}
	}
	var root *Disk
	for i, d := range got.Disks {
		if d.Total == 0 || d.Used > d.Total {
			t.Errorf("disk %+v: bad used/total", d)
		}
		if d.Mount == "/" {
			root = &got.Disks[i]
		}
	}
	if root == nil {
		t.Fatalf("no disk mounted at / in %+v", got.Disks)
	}
	if got.DiskTotal != root.Total || got.DiskUsed != root.Used {
		t.Errorf("DiskUsed/DiskTotal = %d/%d, want those of / %d/%d", got.DiskUsed, got.DiskTotal, root.Used, root.Total)
	}
	if got.RecordedAt.IsZero() || !got.RecordedAt.After(first.RecordedAt) {
		t.Errorf("RecordedAt %v not after %v", got.RecordedAt, first.RecordedAt)
	}
}

func TestCounterDelta(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ cur, prev, want uint64 }{
		{10, 3, 7},
		{5, 5, 0},
		{3, 10, 0},             // reset: never a huge number
		{0, math.MaxUint64, 0}, // wraparound
		{math.MaxUint64, 0, math.MaxUint64},
	} {
		if got := counterDelta(c.cur, c.prev); got != c.want {
			t.Errorf("counterDelta(%d, %d) = %d, want %d", c.cur, c.prev, got, c.want)
		}
	}
}

func TestCPUPercent(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		prev, cur cpuTicks
		want      float64
	}{
		{cpuTicks{100, 80}, cpuTicks{200, 130}, 50},
		{cpuTicks{100, 80}, cpuTicks{100, 80}, 0},   // no time passed
		{cpuTicks{100, 80}, cpuTicks{90, 70}, 0},    // counters went back
		{cpuTicks{100, 80}, cpuTicks{200, 75}, 100}, // iowait went back
		{cpuTicks{100, 80}, cpuTicks{200, 300}, 0},  // idle beyond total
	} {
		if got := cpuPercent(c.prev, c.cur); !approx(got, c.want) {
			t.Errorf("cpuPercent(%v, %v) = %v, want %v", c.prev, c.cur, got, c.want)
		}
	}
}

// fakeHost is a /proc and /sys fixture the Sampler reads through
// Options.Env, so rates can be checked exactly.
type fakeHost struct {
	t    *testing.T
	proc string
	sys  string
	data string // a real directory to mount a fake device on
}

func newFakeHost(t *testing.T) *fakeHost {
	t.Helper()
	root := t.TempDir()
	h := &fakeHost{t: t, proc: filepath.Join(root, "proc"), sys: filepath.Join(root, "sys"), data: filepath.Join(root, "data")}
	for _, dir := range []string{
		filepath.Join(h.proc, "1"), filepath.Join(h.proc, "net"), h.data,
		filepath.Join(h.sys, "block", "sda", "device"),
		filepath.Join(h.sys, "block", "nvme0n1", "device"),
		filepath.Join(h.sys, "block", "loop0"),
		filepath.Join(h.sys, "block", "dm-0"),
	} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	h.write("filesystems", "nodev\tsysfs\nnodev\ttmpfs\nnodev\tproc\nnodev\toverlay\n\text4\n\txfs\n\tsquashfs\n")
	h.write("1/mountinfo", strings.Join([]string{
		"21 26 0:20 / /proc rw,relatime - proc proc rw",
		"24 23 0:22 / /dev/shm rw,relatime - tmpfs tmpfs rw",
		"26 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw",
		"27 26 8:1 / /srv/again rw,relatime - ext4 /dev/sda1 rw",           // same device again
		"28 26 8:1 /var/lib/x /var/lib/bound rw - ext4 /dev/sda1 rw",       // bind mount
		"29 26 259:1 / " + h.data + " rw,relatime - xfs /dev/nvme0n1p1 rw", // a second disk
		"30 26 7:0 / /snap/core/1 ro - squashfs /dev/loop0 ro",             // image
		"31 26 0:40 / /var/lib/docker/overlay2/x/merged rw - overlay overlay rw",
		"32 26 8:2 / /gone rw,relatime - ext4 /dev/sda2 rw", // statfs fails
	}, "\n")+"\n")
	h.write("loadavg", "0.50 0.40 0.30 1/100 1234\n")
	h.write("meminfo", strings.Join([]string{
		"MemTotal:        8000000 kB",
		"MemFree:         1000000 kB",
		"MemAvailable:    6000000 kB",
		"Buffers:          100000 kB",
		"Cached:          3000000 kB",
		"SwapCached:            0 kB",
		"SwapTotal:       2000000 kB",
		"SwapFree:        1500000 kB",
	}, "\n")+"\n")
	return h
}

func (h *fakeHost) write(name, content string) {
	h.t.Helper()
	if err := os.WriteFile(filepath.Join(h.proc, name), []byte(content), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

// counters writes /proc/stat, /proc/diskstats and /proc/net/dev.
// cpu is user nice system idle iowait irq softirq steal guest guest_nice in
// ticks; disks and nics map a name to read/written sectors or rx/tx bytes.
func (h *fakeHost) counters(cpu string, disks map[string][2]uint64, nics map[string][2]uint64) {
	h.t.Helper()
	h.write("stat", "cpu  "+cpu+"\ncpu0 "+cpu+"\n")
	var ds strings.Builder
	for _, name := range []string{"loop0", "sda", "sda1", "nvme0n1", "nvme0n1p1", "dm-0"} {
		c := disks[name]
		// major minor name reads merged sectors ms writes merged sectors ms inflight io_ms weighted_ms
		ds.WriteString("   8       0 " + name + " 10 0 " + u(c[0]) + " 5 10 0 " + u(c[1]) + " 5 0 10 10\n")
	}
	h.write("diskstats", ds.String())
	var nd strings.Builder
	nd.WriteString("Inter-|   Receive                                                |  Transmit\n")
	nd.WriteString(" face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n")
	for _, name := range []string{"lo", "eth0", "eth1", "docker0"} {
		c, ok := nics[name]
		if !ok {
			continue
		}
		nd.WriteString("  " + name + ": " + u(c[0]) + " 1 0 0 0 0 0 0 " + u(c[1]) + " 1 0 0 0 0 0 0\n")
	}
	h.write("net/dev", nd.String())
}

func u(v uint64) string { return strconv.FormatUint(v, 10) }

// approx compares floats computed from /proc's ticks.
func approx(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

// clock is a settable clock for Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.t = c.t.Add(d) }

func TestSamplerFixture(t *testing.T) {
	t.Parallel()
	h := newFakeHost(t)
	clk := &clock{t: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)}
	env := common.EnvMap{common.HostProcEnvKey: h.proc, common.HostSysEnvKey: h.sys}
	ctx := context.Background()

	// Baseline, taken by NewSampler.
	h.counters("100 0 100 800 0 0 0 0 50 0",
		map[string][2]uint64{"sda": {1000, 2000}, "sda1": {1000, 2000}, "nvme0n1": {0, 0}, "loop0": {5, 5}, "dm-0": {7, 7}},
		map[string][2]uint64{"lo": {1, 1}, "eth0": {1000, 2000}, "docker0": {0, 0}})
	s, err := NewSampler(SamplerOptions{Now: clk.Now, Env: env, OnPartial: func(err error) { t.Errorf("partial: %v", err) }})
	if err != nil {
		t.Fatal(err)
	}

	// 10 s later: half the CPU time busy (guest is part of user and must
	// not count twice), 2000 sectors read on sda, 1000 written on nvme0n1,
	// partitions, loop and dm grow too but must not count; eth0 and
	// docker0 move, lo must not count, eth1 is new and counts from its next
	// reading.
	clk.Add(10 * time.Second)
	h.counters("150 0 150 900 0 0 0 0 150 0",
		map[string][2]uint64{"sda": {3000, 2000}, "sda1": {3000, 2000}, "nvme0n1": {0, 1000}, "nvme0n1p1": {0, 1000}, "loop0": {99999, 99999}, "dm-0": {99999, 99999}},
		map[string][2]uint64{"lo": {9999999, 9999999}, "eth0": {11000, 7000}, "docker0": {500, 0}, "eth1": {123456, 123456}})
	got, err := s.Sample(ctx)
	if err != nil {
		t.Fatalf("Sample: %v", err)
	}
	if !got.HasRates {
		t.Fatal("HasRates false")
	}
	if !got.RecordedAt.Equal(clk.Now()) {
		t.Errorf("RecordedAt = %v, want the injected clock's %v", got.RecordedAt, clk.Now())
	}
	want := Sample{
		RecordedAt: got.RecordedAt,
		CPUPercent: 50,
		Load1:      0.5, Load5: 0.4, Load15: 0.3,
		MemUsed: 2000000 * 1024, MemTotal: 8000000 * 1024,
		SwapUsed: 500000 * 1024, SwapTotal: 2000000 * 1024,
		DiskReadBps:  2000 * 512 / 10.0,
		DiskWriteBps: 1000 * 512 / 10.0,
		NetRxBps:     (10000 + 500) / 10.0,
		NetTxBps:     5000 / 10.0,
		HasRates:     true,
	}
	if !approx(got.CPUPercent, want.CPUPercent) || got.Load1 != want.Load1 || got.Load5 != want.Load5 || got.Load15 != want.Load15 ||
		got.MemUsed != want.MemUsed || got.MemTotal != want.MemTotal || got.SwapUsed != want.SwapUsed || got.SwapTotal != want.SwapTotal ||
		got.DiskReadBps != want.DiskReadBps || got.DiskWriteBps != want.DiskWriteBps || got.NetRxBps != want.NetRxBps || got.NetTxBps != want.NetTxBps {
		t.Errorf("sample\n got %+v\nwant %+v", got, want)
	}

	// Mounts: / (sda1, its second mount and bind dropped), the data dir
	// (nvme0n1p1); not proc, tmpfs, squashfs, overlay; /gone fails statfs
	// and is skipped.
	var mounts []string
	for _, d := range got.Disks {
		mounts = append(mounts, d.Mount)
	}
	if strings.Join(mounts, ",") != "/,"+h.data {
		t.Errorf("disks = %v, want / and %s", mounts, h.data)
	}
	if len(got.Disks) > 0 && (got.DiskTotal != got.Disks[0].Total || got.DiskUsed != got.Disks[0].Used) {
		t.Errorf("DiskUsed/Total = %d/%d, want those of /: %+v", got.DiskUsed, got.DiskTotal, got.Disks[0])
	}

	// Counters that went backwards (reset NIC, replaced disk) give 0,
	// never a huge number; eth1 now counts.
	clk.Add(10 * time.Second)
	h.counters("150 0 150 900 0 0 0 0 150 0",
		map[string][2]uint64{"sda": {10, 10}, "nvme0n1": {0, 1000}},
		map[string][2]uint64{"eth0": {5, 5}, "docker0": {500, 0}, "eth1": {123456 + 2000, 123456}})
	got, err = s.Sample(ctx)
	if err != nil {
		t.Fatalf("Sample: %v", err)
	}
	if got.CPUPercent != 0 || got.DiskReadBps != 0 || got.DiskWriteBps != 0 || got.NetRxBps != 200 || got.NetTxBps != 0 || !got.HasRates {
		t.Errorf("after a reset: %+v", got)
	}

	// A clock that does not move: no rates.
	got, err = s.Sample(ctx)
	if err != nil {
		t.Fatalf("Sample: %v", err)
	}
	if got.HasRates || got.NetRxBps != 0 {
		t.Errorf("clock did not move, still HasRates %v, rx %v", got.HasRates, got.NetRxBps)
	}
}

// TestSamplerRootless: when / is not a real filesystem (an overlay), the
// disk totals are the sum of the real mounts.
func TestSamplerRootless(t *testing.T) {
	t.Parallel()
	h := newFakeHost(t)
	other := t.TempDir()
	h.write("1/mountinfo", strings.Join([]string{
		"26 1 0:40 / / rw - overlay overlay rw",
		"29 26 259:1 / " + h.data + " rw - xfs /dev/nvme0n1p1 rw",
		"30 26 259:2 / " + other + " rw - ext4 /dev/nvme0n1p2 rw",
	}, "\n")+"\n")
	h.counters("1 0 1 1 0 0 0 0 0 0", nil, nil)
	s, err := NewSampler(SamplerOptions{Env: common.EnvMap{common.HostProcEnvKey: h.proc, common.HostSysEnvKey: h.sys}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Sample(context.Background())
	if err != nil {
		t.Fatalf("Sample: %v", err)
	}
	if len(got.Disks) != 2 {
		t.Fatalf("disks = %+v, want 2", got.Disks)
	}
	if got.DiskTotal != got.Disks[0].Total+got.Disks[1].Total || got.DiskUsed != got.Disks[0].Used+got.Disks[1].Used {
		t.Errorf("DiskUsed/Total = %d/%d, want the sum of %+v", got.DiskUsed, got.DiskTotal, got.Disks)
	}
}

// TestSamplerMissingParts: without CPU counters there is no Sampler and
// no sample; any other part that cannot be read is left zero, reported
// once to OnPartial, and the sample still comes.
func TestSamplerMissingParts(t *testing.T) {
	t.Parallel()
	h := newFakeHost(t)
	env := common.EnvMap{common.HostProcEnvKey: h.proc, common.HostSysEnvKey: h.sys}
	if _, err := NewSampler(SamplerOptions{Env: env}); err == nil {
		t.Fatal("NewSampler without /proc/stat: no error")
	}

	h.counters("1 0 1 1 0 0 0 0 0 0", map[string][2]uint64{"sda": {1, 1}}, map[string][2]uint64{"eth0": {1, 1}})
	clk := &clock{t: time.Unix(1e9, 0)}
	var partials []error
	s, err := NewSampler(SamplerOptions{Now: clk.Now, Env: env, OnPartial: func(err error) { partials = append(partials, err) }})
	if err != nil {
		t.Fatal(err)
	}
	proc := func(name string) string { return filepath.Join(h.proc, name) }

	// The disk and network counters go away: zero rates, one report.
	for _, name := range []string{"diskstats", "net/dev"} {
		if err := os.Rename(proc(name), proc(name)+".off"); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		clk.Add(time.Second)
		got, err := s.Sample(context.Background())
		if err != nil {
			t.Fatalf("Sample: %v", err)
		}
		if got.MemTotal == 0 || got.Load1 != 0.5 || !got.HasRates || got.DiskReadBps != 0 || got.NetRxBps != 0 {
			t.Errorf("sample without disk and network counters: %+v", got)
		}
	}
	if len(partials) != 1 || partials[0] == nil ||
		!strings.Contains(partials[0].Error(), "disk io") || !strings.Contains(partials[0].Error(), "network io") {
		t.Fatalf("partial reports = %v, want one about disk io and network io", partials)
	}
	// They come back: the clearance is reported.
	for _, name := range []string{"diskstats", "net/dev"} {
		if err := os.Rename(proc(name)+".off", proc(name)); err != nil {
			t.Fatal(err)
		}
	}
	clk.Add(time.Second)
	if _, err := s.Sample(context.Background()); err != nil {
		t.Fatalf("Sample: %v", err)
	}
	if len(partials) != 2 || partials[1] != nil {
		t.Fatalf("partial reports = %v, want a final nil", partials)
	}

	// CPU counters gone: the sample fails. Back: CPU % is 0 for want of a
	// baseline, then real again.
	if err := os.Rename(proc("stat"), proc("stat.off")); err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Second)
	if _, err := s.Sample(context.Background()); err == nil || !strings.Contains(err.Error(), "cpu") {
		t.Errorf("Sample without /proc/stat: err = %v, want a cpu error", err)
	}
	if err := os.Rename(proc("stat.off"), proc("stat")); err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Second)
	got, err := s.Sample(context.Background())
	if err != nil {
		t.Fatalf("Sample: %v", err)
	}
	if got.CPUPercent != 0 {
		t.Errorf("CPU %% without a previous reading = %v, want 0", got.CPUPercent)
	}
	h.counters("2 0 1 2 0 0 0 0 0 0", nil, nil)
	clk.Add(time.Second)
	if got, err = s.Sample(context.Background()); err != nil || !approx(got.CPUPercent, 50) {
		t.Errorf("CPU %% = %v (err %v), want 50", got.CPUPercent, err)
	}
}

// TestSamplerMountRefresh: the mount list is cached for MountRefresh.
func TestSamplerMountRefresh(t *testing.T) {
	t.Parallel()
	h := newFakeHost(t)
	h.counters("1 0 1 1 0 0 0 0 0 0", nil, nil)
	clk := &clock{t: time.Unix(1e9, 0)}
	s, err := NewSampler(SamplerOptions{Now: clk.Now, Env: common.EnvMap{common.HostProcEnvKey: h.proc, common.HostSysEnvKey: h.sys}})
	if err != nil {
		t.Fatal(err)
	}
	mounts := func() string {
		t.Helper()
		got, err := s.Sample(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var m []string
		for _, d := range got.Disks {
			m = append(m, d.Mount)
		}
		return strings.Join(m, ",")
	}
	if got := mounts(); got != "/,"+h.data {
		t.Fatalf("mounts = %s", got)
	}
	h.write("1/mountinfo", "26 1 8:1 / / rw - ext4 /dev/sda1 rw\n")
	clk.Add(30 * time.Second)
	if got := mounts(); got != "/,"+h.data {
		t.Errorf("mounts re-read before DefaultMountRefresh: %s", got)
	}
	clk.Add(DefaultMountRefresh)
	if got := mounts(); got != "/" {
		t.Errorf("mounts after DefaultMountRefresh = %s, want /", got)
	}
}

func BenchmarkSample(b *testing.B) {
	s, err := NewSampler(SamplerOptions{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Sample(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
