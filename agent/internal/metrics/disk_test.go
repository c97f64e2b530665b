package metrics

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/shirou/gopsutil/v4/common"
	"golang.org/x/sys/unix"
)

// TestDiskFiguresMatchDf mounts a real tmpfs of 8 MiB and 1000 inodes,
// fills part of it, and checks that the Sampler reports exactly what df
// prints for it: size, used, available and inodes in bytes and counts, and
// the use percentages as df rounds them (up). The fixture mountinfo
// presents the tmpfs as a device-backed filesystem, since the Sampler
// leaves tmpfs out of a real host's disks; the figures come from statfs on
// the real mount all the same.
func TestDiskFiguresMatchDf(t *testing.T) {
	dir := t.TempDir()
	mnt := exec.Command("mount", "-t", "tmpfs", "-o", "size=8m,nr_inodes=1000", "tmpfs", dir)
	if out, err := mnt.CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs on %s (the test needs root): %v: %s", dir, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})

	// 3 MiB in one file, 40 more files in a directory: about 37% of the
	// space and 4% of the inodes.
	if err := os.WriteFile(filepath.Join(dir, "big"), bytes.Repeat([]byte{'x'}, 3<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "many")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		if err := os.WriteFile(filepath.Join(sub, strconv.Itoa(i)), []byte("some bytes"), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	h := newFakeHost(t)
	h.write("1/mountinfo", strings.Join([]string{
		"26 1 0:40 / / rw - overlay overlay rw",
		"29 26 259:1 / " + dir + " rw - ext4 /dev/nvme0n1p1 rw",
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
	if len(got.Disks) != 1 || got.Disks[0].Mount != dir {
		t.Fatalf("disks = %+v, want the tmpfs at %s", got.Disks, dir)
	}
	d := got.Disks[0]

	df := runDf(t, dir)
	t.Logf("df: %+v; sampler: %+v (%.3f%%, inodes %.3f%%)", df, d, d.UsePercent(), d.InodesUsePercent())
	for _, c := range []struct {
		name      string
		got, want uint64
	}{
		{"size", d.Total, df.size},
		{"used", d.Used, df.used},
		{"avail", d.Avail, df.avail},
		{"itotal", d.InodesTotal, df.itotal},
		{"iused", d.InodesTotal - d.InodesFree, df.iused},
		{"iavail", d.InodesFree, df.iavail},
	} {
		if c.got != c.want {
			t.Errorf("%s = %d, df says %d", c.name, c.got, c.want)
		}
	}
	// df rounds a percentage up to the next whole one.
	if p := d.UsePercent(); !(p > float64(df.pcent)-1 && p <= float64(df.pcent)) {
		t.Errorf("use %% = %v, df says %d%%", p, df.pcent)
	}
	if p := d.InodesUsePercent(); !(p > float64(df.ipcent)-1 && p <= float64(df.ipcent)) {
		t.Errorf("inode use %% = %v, df says %d%%", p, df.ipcent)
	}
	// The fill must show, or the comparison proves little.
	if df.used < 3<<20 || df.iused < 40 || df.pcent < 30 {
		t.Errorf("df does not see the fill: %+v", df)
	}
	// Without "/" among the real mounts, the sample's own figures are the
	// sums over them: here the one tmpfs.
	if got.DiskUsed != d.Used || got.DiskTotal != d.Total || got.DiskAvail != d.Avail ||
		got.InodesTotal != d.InodesTotal || got.InodesFree != d.InodesFree {
		t.Errorf("sample disk figures %+v, want those of %+v", got, d)
	}

	// DiskUsage itself, on the same mount and on a path that is not there.
	if du, err := DiskUsage(dir); err != nil || du != d {
		t.Errorf("DiskUsage(%s) = %+v, %v; want %+v", dir, du, err, d)
	}
	if _, err := DiskUsage(filepath.Join(dir, "absent")); err == nil {
		t.Error("DiskUsage of a missing path: no error")
	}

	// Filling it to the last byte: df and the sampler both say 100%.
	f, err := os.Create(filepath.Join(dir, "fill"))
	if err != nil {
		t.Fatal(err)
	}
	for err == nil {
		_, err = f.Write(make([]byte, 64<<10))
	}
	if !errorIsNoSpace(err) {
		t.Fatalf("filling the tmpfs: %v", err)
	}
	f.Close()
	full, err := DiskUsage(dir)
	if err != nil {
		t.Fatal(err)
	}
	if df := runDf(t, dir); df.pcent != 100 || full.UsePercent() != 100 || full.Avail != df.avail || full.Used != df.used {
		t.Errorf("full: df %+v, sampler %+v (%v%%)", df, full, full.UsePercent())
	}
}

func errorIsNoSpace(err error) bool {
	pe, ok := err.(*os.PathError)
	return ok && pe.Err == unix.ENOSPC
}

type dfLine struct {
	size, used, avail     uint64
	pcent                 int
	itotal, iused, iavail uint64
	ipcent                int
}

// runDf runs df on dir in bytes and parses its one line of figures.
func runDf(t *testing.T, dir string) dfLine {
	t.Helper()
	out, err := exec.Command("df", "-B1", "--output=size,used,avail,pcent,itotal,iused,iavail,ipcent", dir).Output()
	if err != nil {
		t.Fatalf("df %s: %v", dir, err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 2 {
		t.Fatalf("df printed %q", out)
	}
	f := strings.Fields(lines[1])
	if len(f) != 8 {
		t.Fatalf("df line %q: want 8 fields", lines[1])
	}
	var l dfLine
	nums := []*uint64{&l.size, &l.used, &l.avail, nil, &l.itotal, &l.iused, &l.iavail, nil}
	for i, v := range f {
		if nums[i] == nil {
			p, err := strconv.Atoi(strings.TrimSuffix(v, "%"))
			if err != nil {
				t.Fatalf("df percentage %q: %v", v, err)
			}
			if i == 3 {
				l.pcent = p
			} else {
				l.ipcent = p
			}
			continue
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("df field %d %q: %v", i, v, err)
		}
		*nums[i] = n
	}
	return l
}

func TestDiskPercent(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		d           Disk
		use, inodes float64
	}{
		{Disk{}, 0, 0}, // empty, no inode count
		{Disk{Used: 50, Avail: 50, Total: 110}, 50, 0}, // reserved blocks do not count
		{Disk{Used: 95, Avail: 0, Total: 100}, 100, 0}, // full for ordinary users
		{Disk{InodesTotal: 200, InodesFree: 50}, 0, 75},
		{Disk{InodesTotal: 10, InodesFree: 20}, 0, 0}, // a bogus free count
	} {
		if u, i := c.d.UsePercent(), c.d.InodesUsePercent(); u != c.use || i != c.inodes {
			t.Errorf("%+v: use %v%%, inodes %v%%; want %v%%, %v%%", c.d, u, i, c.use, c.inodes)
		}
	}
}
