// Package metrics samples the host's vital signs for the controller and
// holds the samples in a bounded buffer until the controller has committed
// them.
//
// Sampler reads CPU, load, memory, swap, the list of mounts and disk and
// network throughput through gopsutil (pure Go on Linux, so the agent
// still builds with CGO_ENABLED=0), and each mount's usage with statfs(2)
// as df does (DiskUsage). It is built to be cheap between samples: it starts no
// goroutine, never sleeps, and computes CPU % and throughput from the
// difference between two consecutive calls instead of measuring over an
// interval.
//
// Buffer is the bounded FIFO the agent keeps while the controller is
// unreachable; it cuts samples into numbered batches and forgets a sample
// only once the controller has acknowledged its batch.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/shirou/gopsutil/v4/common"
	"github.com/shirou/gopsutil/v4/cpu"
	"github.com/shirou/gopsutil/v4/disk"
	"github.com/shirou/gopsutil/v4/load"
	"github.com/shirou/gopsutil/v4/mem"
	"github.com/shirou/gopsutil/v4/net"
	"golang.org/x/sys/unix"
)

// Sample is one reading of the host. Byte figures are bytes; rates are
// bytes per second; CPUPercent is the share of all CPUs that was busy, from
// 0 to 100.
type Sample struct {
	RecordedAt time.Time

	CPUPercent           float64
	Load1, Load5, Load15 float64
	MemUsed, MemTotal    uint64
	SwapUsed, SwapTotal  uint64
	DiskUsed, DiskTotal  uint64
	// DiskAvail, InodesTotal and InodesFree go with DiskUsed and
	// DiskTotal: those of "/" or the sums over the real mounts.
	DiskAvail               uint64
	InodesTotal, InodesFree uint64
	DiskReadBps             float64
	DiskWriteBps            float64
	NetRxBps, NetTxBps      float64

	// HasRates is true when CPUPercent and the four throughput figures
	// cover the interval since a previous reading. It is false only when
	// the clock did not move forward since the previous reading; those
	// fields are then zero and mean "unknown".
	HasRates bool

	// Disks lists every real mounted filesystem, one per device, sorted by
	// mount point. The slice is the sample's own (never reused by the
	// Sampler); treat it as read-only.
	Disks []Disk
}

// Disk is the usage of one mounted filesystem, as df reports it: Total is
// the filesystem's size, Used what is allocated, Avail what unprivileged
// processes can still allocate. Reserved blocks (5% of an ext4 by default)
// count as neither used nor available, so Used+Avail can stay well below
// Total and a disk is full for every non-root process when Avail is 0:
// UsePercent, not Used/Total, says how full it is. InodesTotal is 0 for a
// filesystem without a fixed inode count (btrfs, some network ones).
type Disk struct {
	Mount                   string
	Used, Total, Avail      uint64
	InodesTotal, InodesFree uint64
}

// UsePercent is the share of the space ordinary processes can use that is
// used, as df computes it: Used / (Used + Avail), from 0 to 100, unrounded
// (df rounds it up to a whole percent). It is 0 for an empty filesystem.
func (d Disk) UsePercent() float64 {
	if d.Used+d.Avail == 0 {
		return 0
	}
	return float64(d.Used) * 100 / float64(d.Used+d.Avail)
}

// InodesUsePercent is the share of inodes in use, as df -i computes it,
// unrounded; 0 when the filesystem has no inode count.
func (d Disk) InodesUsePercent() float64 {
	if d.InodesTotal == 0 {
		return 0
	}
	return float64(d.InodesTotal-min(d.InodesFree, d.InodesTotal)) * 100 / float64(d.InodesTotal)
}

// DiskUsage reads the usage of the filesystem mounted at (or holding)
// path with statfs(2), the figures df prints: size = f_blocks, used =
// f_blocks - f_bfree, avail = f_bavail, all in fragment units (f_frsize,
// or f_bsize when that is 0, as df does), and inodes f_files and f_ffree.
// gopsutil's disk.Usage multiplies by f_bsize instead, which differs from
// df on filesystems whose block and fragment sizes differ.
func DiskUsage(path string) (Disk, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return Disk{}, fmt.Errorf("statfs %s: %w", path, err)
	}
	unit := uint64(st.Frsize)
	if unit == 0 {
		unit = uint64(st.Bsize)
	}
	blocks, bfree, bavail := uint64(st.Blocks), uint64(st.Bfree), uint64(st.Bavail)
	return Disk{
		Mount: path,
		Total: blocks * unit,
		Used:  counterDelta(blocks, bfree) * unit,
		Avail: bavail * unit,
		// The conversions are for 32-bit targets, where Statfs_t's
		// fields are narrower.
		InodesTotal: uint64(st.Files),
		InodesFree:  min(uint64(st.Ffree), uint64(st.Files)),
	}, nil
}

// DefaultMountRefresh is how long a Sampler trusts its list of mounts and
// of physical disks before reading them again.
const DefaultMountRefresh = time.Minute

// SamplerOptions configure a Sampler. The zero value is ready to use.
type SamplerOptions struct {
	// Now returns the current time; nil means time.Now. Tests inject a
	// clock here. Rates are divided by the time between two readings, so a
	// clock that does not move forward yields HasRates false.
	Now func() time.Time

	// Env overrides where gopsutil (and the Sampler's own look at
	// /sys/block) find the host's pseudo filesystems, keyed by
	// common.HostProcEnvKey, common.HostSysEnvKey,
	// common.HostProcMountinfo, ... (e.g. a fixture /proc in tests, or the
	// host's /proc bind-mounted into a container). nil uses the process's
	// HOST_PROC, HOST_SYS, ... variables and then the real paths.
	Env common.EnvMap

	// MountRefresh is how long the list of real mounts and of physical
	// disks is reused before being read again (mounts rarely change, and
	// parsing mountinfo is the costliest part of a sample on hosts with many
	// container mounts). A mount that disappears is skipped until the next
	// refresh. 0 means DefaultMountRefresh; a negative value re-reads both
	// on every sample.
	MountRefresh time.Duration

	// OnPartial, if set, hears about parts of a sample that could not be
	// read (load, mounts, disk or network counters): Sample still succeeds
	// with those fields zero. It is called with the joined errors when they
	// first appear or change, not on every sample, so a part that is
	// permanently missing (say /proc/diskstats in a restricted container)
	// is reported once; it is called with nil when they clear. It runs
	// inside Sample and must not call the Sampler.
	OnPartial func(error)
}

// Sampler takes Samples. It keeps the previous raw counters to turn them
// into CPU % and bytes per second. It is safe for concurrent use, though the
// agent samples from one goroutine.
//
// What is measured, and the choices made:
//
//   - CPU %: from the aggregate line of /proc/stat (cpu.Times), the busy
//     share of the time that passed between two calls: busy = everything
//     but idle and iowait; guest time is already inside user and nice, so
//     it is not added again. cpu.Percent with an interval is not used: it
//     sleeps.
//   - First sample: NewSampler takes a baseline reading of the counters at
//     once (no sleep), so the first Sample already has real rates, measured
//     over the time since NewSampler. (A CPU reading that failed leaves the
//     next CPU % at 0, for want of a baseline.)
//   - Memory: used = Total - Available (MemAvailable, what can be given to
//     programs without swapping), the honest figure; page cache is not
//     "used". Swap comes from the same read of /proc/meminfo (SwapTotal,
//     SwapFree; the figures mem.SwapMemory would report) to save reading
//     /proc/meminfo twice plus /proc/vmstat on every sample.
//   - Disks: disk.Partitions(false) (filesystems the kernel lists as backed
//     by a device, bind mounts already left out) minus pseudo, in-memory,
//     overlay and read-only image filesystems (see ignoredFS), one mount per
//     device (the shortest mount point, so "/" wins), each read with
//     DiskUsage (statfs, df's figures: used, available to non-root, size,
//     inodes); a mount that errors is skipped. DiskUsed/DiskTotal/DiskAvail
//     and the inode counts are those of the root filesystem "/" when it is
//     among the real mounts — the figure people mean by "the server's disk"
//     — and otherwise (e.g. "/" is an overlay) the sums over all real
//     mounts.
//   - Disk throughput: disk.IOCounters deltas summed over whole physical
//     disks, those with a device entry under /sys/block. That leaves out
//     partitions (sda1, nvme0n1p1: their I/O is already counted on the
//     disk), and loop, ram, zram, device-mapper (dm-*) and md devices,
//     whose I/O lands on the physical disks below them and would be
//     counted twice.
//   - Network throughput: net.IOCounters per interface, summed over every
//     interface but "lo". Traffic that crosses a bridge and a veth (e.g. to
//     a container) is counted once on each of them.
//   - Counters are differenced per disk and per interface; a counter that
//     went backwards (device reset, wraparound, an interface removed and
//     added again) counts 0 for that interval, and a device seen for the
//     first time counts 0 until its next reading.
type Sampler struct {
	mu           sync.Mutex
	now          func() time.Time
	env          common.EnvMap
	mountRefresh time.Duration
	onPartial    func(error)
	lastPartial  string // the partial errors last reported

	// Cached discovery, refreshed every mountRefresh.
	mounts      []string // real mount points, one per device, sorted
	physical    []string // whole physical disk names (sda, nvme0n1)
	discovered  bool
	discoveryAt time.Time

	// The previous reading.
	havePrev bool
	prevAt   time.Time
	cpuOK    bool
	prevCPU  cpuTicks
	// prevDisk/prevNet hold the previous counters per device; cur* are
	// the maps being filled, swapped after each sample to reuse both.
	prevDisk, curDisk map[string]ioPair
	prevNet, curNet   map[string]ioPair
}

type cpuTicks struct{ total, idle float64 }

// ioPair is a pair of monotonic byte counters: read/written or
// received/sent.
type ioPair struct{ in, out uint64 }

// NewSampler returns a Sampler and takes its baseline reading, so the first
// Sample already carries CPU % and throughput. It fails only when the
// host's CPU counters cannot be read at all (no usable /proc): such a
// Sampler could never produce a sample.
func NewSampler(opts SamplerOptions) (*Sampler, error) {
	s := &Sampler{
		now:          opts.Now,
		env:          opts.Env,
		mountRefresh: opts.MountRefresh,
		onPartial:    opts.OnPartial,
		prevDisk:     make(map[string]ioPair),
		curDisk:      make(map[string]ioPair),
		prevNet:      make(map[string]ioPair),
		curNet:       make(map[string]ioPair),
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.mountRefresh == 0 {
		s.mountRefresh = DefaultMountRefresh
	}
	ctx, now := s.context(context.Background()), s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var e sampleErrs
	s.discover(ctx, now, &e)
	s.readCounters(ctx, now, nil, &e)
	if e.core != nil {
		return nil, fmt.Errorf("metrics: %w", errors.Join(e.core...))
	}
	return s, nil
}

// sampleErrs collects what went wrong while sampling: core errors make the
// sample worthless, partial ones only leave some fields zero.
type sampleErrs struct{ core, partial []error }

// context hands the configured environment to gopsutil.
func (s *Sampler) context(ctx context.Context) context.Context {
	if s.env == nil {
		return ctx
	}
	return context.WithValue(ctx, common.EnvKey, s.env)
}

// Sample reads the host. It fails only when the CPU counters or the
// memory figures cannot be read; the Sample is then not worth storing. A
// part that cannot be read otherwise (load, mounts, disk or network
// counters) is left zero and reported to SamplerOptions.OnPartial, and the
// Sample is still returned without error.
func (s *Sampler) Sample(ctx context.Context) (Sample, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx = s.context(ctx)
	now := s.now()
	out := Sample{RecordedAt: now}
	var e sampleErrs

	if avg, err := load.AvgWithContext(ctx); err != nil {
		e.partial = append(e.partial, fmt.Errorf("load: %w", err))
	} else {
		out.Load1, out.Load5, out.Load15 = avg.Load1, avg.Load5, avg.Load15
	}

	if vm, err := mem.VirtualMemoryWithContext(ctx); err != nil {
		e.core = append(e.core, fmt.Errorf("memory: %w", err))
	} else {
		// counterDelta doubles as a subtraction that cannot underflow.
		out.MemTotal = vm.Total
		out.MemUsed = counterDelta(vm.Total, vm.Available)
		out.SwapTotal = vm.SwapTotal
		out.SwapUsed = counterDelta(vm.SwapTotal, vm.SwapFree)
	}

	s.discover(ctx, now, &e)
	s.diskUsage(&out)
	s.readCounters(ctx, now, &out, &e)
	s.reportPartial(e.partial)
	if e.core != nil {
		return out, fmt.Errorf("metrics: %w", errors.Join(e.core...))
	}
	return out, nil
}

// reportPartial tells OnPartial about partial errors when they change.
func (s *Sampler) reportPartial(errs []error) {
	if s.onPartial == nil || (len(errs) == 0 && s.lastPartial == "") {
		return
	}
	err := errors.Join(errs...)
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	if msg != s.lastPartial {
		s.lastPartial = msg
		s.onPartial(err)
	}
}

// readCounters reads the cumulative counters (CPU times, disk and network
// bytes), fills out's CPU % and rates from their difference with the
// previous reading when out is not nil, and keeps them as the new previous
// reading.
func (s *Sampler) readCounters(ctx context.Context, now time.Time, out *Sample, e *sampleErrs) {
	elapsed := now.Sub(s.prevAt).Seconds()
	rates := out != nil && s.havePrev && elapsed > 0
	if out != nil {
		out.HasRates = rates
	}

	if ticks, err := readCPU(ctx); err != nil {
		e.core = append(e.core, fmt.Errorf("cpu: %w", err))
		s.cpuOK = false
	} else {
		if rates && s.cpuOK {
			out.CPUPercent = cpuPercent(s.prevCPU, ticks)
		}
		s.prevCPU, s.cpuOK = ticks, true
	}

	clear(s.curDisk)
	if len(s.physical) > 0 {
		ios, err := disk.IOCountersWithContext(ctx, s.physical...)
		if err != nil {
			e.partial = append(e.partial, fmt.Errorf("disk io: %w", err))
		}
		for name, c := range ios {
			s.curDisk[name] = ioPair{in: c.ReadBytes, out: c.WriteBytes}
		}
	}
	read, written := sumDeltas(s.prevDisk, s.curDisk)
	s.prevDisk, s.curDisk = s.curDisk, s.prevDisk

	clear(s.curNet)
	nics, err := net.IOCountersWithContext(ctx, true)
	if err != nil {
		e.partial = append(e.partial, fmt.Errorf("network io: %w", err))
	}
	for _, c := range nics {
		if c.Name != "lo" {
			s.curNet[c.Name] = ioPair{in: c.BytesRecv, out: c.BytesSent}
		}
	}
	rx, tx := sumDeltas(s.prevNet, s.curNet)
	s.prevNet, s.curNet = s.curNet, s.prevNet

	if rates {
		out.DiskReadBps = float64(read) / elapsed
		out.DiskWriteBps = float64(written) / elapsed
		out.NetRxBps = float64(rx) / elapsed
		out.NetTxBps = float64(tx) / elapsed
	}
	s.prevAt, s.havePrev = now, true
}

// readCPU reads the aggregate CPU times.
func readCPU(ctx context.Context) (cpuTicks, error) {
	times, err := cpu.TimesWithContext(ctx, false)
	if err != nil {
		return cpuTicks{}, err
	}
	if len(times) == 0 {
		// gopsutil answers an unreadable /proc/stat with an empty list.
		return cpuTicks{}, errors.New("no CPU times in /proc/stat")
	}
	t := times[0]
	idle := t.Idle + t.Iowait
	// Guest and GuestNice are already included in User and Nice.
	total := idle + t.User + t.Nice + t.System + t.Irq + t.Softirq + t.Steal
	return cpuTicks{total: total, idle: idle}, nil
}

// cpuPercent is the busy share of the CPU time that passed between two
// readings. iowait is known to go backwards on some kernels, so every
// difference is clamped.
func cpuPercent(prev, cur cpuTicks) float64 {
	total := cur.total - prev.total
	if total <= 0 {
		return 0
	}
	idle := min(max(cur.idle-prev.idle, 0), total)
	return (total - idle) / total * 100
}

// counterDelta is cur - prev for monotonic counters, and 0 when the
// counter went backwards (reset, wraparound, device replaced): a rate of
// zero for one interval is better than one of 18 exabytes per second.
func counterDelta(cur, prev uint64) uint64 {
	if cur < prev {
		return 0
	}
	return cur - prev
}

// sumDeltas sums the counters' growth over the devices present in both
// readings.
func sumDeltas(prev, cur map[string]ioPair) (in, out uint64) {
	for name, c := range cur {
		p, ok := prev[name]
		if !ok {
			continue
		}
		in += counterDelta(c.in, p.in)
		out += counterDelta(c.out, p.out)
	}
	return in, out
}

// discover refreshes the lists of real mounts and of physical disks when
// they are missing or older than mountRefresh.
func (s *Sampler) discover(ctx context.Context, now time.Time, e *sampleErrs) {
	if s.discovered && s.mountRefresh > 0 && !now.Before(s.discoveryAt) && now.Sub(s.discoveryAt) < s.mountRefresh {
		return
	}
	s.discovered, s.discoveryAt = true, now

	if parts, err := disk.PartitionsWithContext(ctx, false); err != nil {
		e.partial = append(e.partial, fmt.Errorf("mounts: %w", err))
		s.mounts = s.mounts[:0]
	} else {
		s.mounts = realMounts(parts, s.mounts[:0])
	}

	physical, err := physicalDisks(s.sysPath(ctx, "block"), s.physical[:0])
	if err != nil {
		e.partial = append(e.partial, fmt.Errorf("disks: %w", err))
	}
	s.physical = physical
}

// diskUsage fills out's disk figures from the cached mounts.
func (s *Sampler) diskUsage(out *Sample) {
	if len(s.mounts) == 0 {
		return
	}
	out.Disks = make([]Disk, 0, len(s.mounts))
	var root *Disk
	var sum Disk
	for _, m := range s.mounts {
		d, err := DiskUsage(m)
		if err != nil {
			// Unmounted since the list was read, or not ours to read (a
			// FUSE mount of another user): skip it.
			continue
		}
		out.Disks = append(out.Disks, d)
		if m == "/" {
			root = &out.Disks[len(out.Disks)-1]
		}
		sum.Used += d.Used
		sum.Total += d.Total
		sum.Avail += d.Avail
		sum.InodesTotal += d.InodesTotal
		sum.InodesFree += d.InodesFree
	}
	if root != nil {
		sum = *root
	}
	out.DiskUsed, out.DiskTotal, out.DiskAvail = sum.Used, sum.Total, sum.Avail
	out.InodesTotal, out.InodesFree = sum.InodesTotal, sum.InodesFree
}

// ignoredFS are filesystem types that are never "a disk" of the server:
// kernel and in-memory filesystems, container layers, and read-only images
// (snaps, live media) that are always full. disk.Partitions(false) already
// leaves out most of them; the list also guards the mounts-file fallback
// and a HOST_PROC from another kernel.
var ignoredFS = map[string]bool{
	"autofs": true, "binfmt_misc": true, "bpf": true, "configfs": true,
	"debugfs": true, "devpts": true, "devtmpfs": true, "efivarfs": true,
	"erofs": true, "fusectl": true, "hugetlbfs": true, "iso9660": true,
	"mqueue": true, "nsfs": true, "overlay": true, "aufs": true, "proc": true,
	"pstore": true, "ramfs": true, "rootfs": true, "rpc_pipefs": true,
	"securityfs": true, "selinuxfs": true, "squashfs": true, "sysfs": true,
	"tmpfs": true, "tracefs": true, "udf": true, "fuse.lxcfs": true,
	"fuse.squashfuse": true, "nfsd": true,
}

// realMounts keeps the mount points of real filesystems, one per device
// (a btrfs subvolume or a second mount of the same device shows the same
// usage), preferring the shortest mount point so "/" wins; the result is
// sorted.
func realMounts(parts []disk.PartitionStat, dst []string) []string {
	byDevice := make(map[string]string, len(parts))
	for _, p := range parts {
		if ignoredFS[p.Fstype] || strings.HasPrefix(p.Fstype, "cgroup") ||
			p.Device == "" || p.Device == "none" || p.Mountpoint == "" {
			continue
		}
		if have, ok := byDevice[p.Device]; ok && len(have) <= len(p.Mountpoint) {
			continue
		}
		byDevice[p.Device] = p.Mountpoint
	}
	for _, m := range byDevice {
		dst = append(dst, m)
	}
	slices.Sort(dst)
	return slices.Compact(dst)
}

// physicalDisks lists the whole disks backed by hardware: the entries of
// /sys/block with a device link. Partitions have no entry there; loop,
// ram, zram, dm-* and md devices have no device link.
func physicalDisks(sysBlock string, dst []string) ([]string, error) {
	entries, err := os.ReadDir(sysBlock)
	if err != nil {
		return dst, err
	}
	for _, e := range entries {
		if _, err := os.Stat(filepath.Join(sysBlock, e.Name(), "device")); err == nil {
			dst = append(dst, e.Name())
		}
	}
	return dst, nil
}

// sysPath resolves a path under the host's /sys the way gopsutil does:
// the context's HOST_SYS, then the environment's, then /sys.
func (s *Sampler) sysPath(ctx context.Context, elem string) string {
	root := ""
	if env, ok := ctx.Value(common.EnvKey).(common.EnvMap); ok {
		root = env[common.HostSysEnvKey]
	}
	if root == "" {
		root = os.Getenv("HOST_SYS")
	}
	if root == "" {
		root = "/sys"
	}
	return filepath.Join(root, elem)
}
