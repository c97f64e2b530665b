package supervise

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

const cgroupRoot = "/sys/fs/cgroup"

// cgroup is an instance's cgroup v2 directory holding its limits; the
// child is cloned straight into it (CLONE_INTO_CGROUP through fd).
type cgroup struct {
	path string
	fd   int
}

// cgroupV2 reports whether the unified hierarchy is mounted at the root
// (not the hybrid layout, where limits would need v1 controllers).
func cgroupV2() error {
	var st syscall.Statfs_t
	if err := syscall.Statfs(cgroupRoot, &st); err != nil {
		return fmt.Errorf("stat %s: %w", cgroupRoot, err)
	}
	const cgroup2Magic = 0x63677270
	if st.Type != cgroup2Magic {
		return fmt.Errorf("%s is not a cgroup v2 (unified) hierarchy on this host", cgroupRoot)
	}
	return nil
}

// ownCgroup is the cgroup v2 path of this process, relative to the root.
func ownCgroup() (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(l, "0::"); ok {
			return p, nil
		}
	}
	return "", errors.New("no cgroup v2 entry in /proc/self/cgroup")
}

// newCgroup makes parent/name with memory.max and cpu.max. parent must be
// a cgroup without processes of its own (see delegatedCgroup), otherwise
// the kernel refuses to enable controllers for its children.
func newCgroup(parent, name string, memMax uint64, cpuPercent uint32) (*cgroup, error) {
	if err := cgroupV2(); err != nil {
		return nil, err
	}
	if parent == "" {
		return nil, errors.New("the agent has no delegated cgroup to create limits in (its systemd unit needs Delegate=yes and DelegateSubgroup=agent, systemd 254 or newer)")
	}
	base := filepath.Join(cgroupRoot, filepath.Clean("/"+parent))
	var want []string
	if memMax > 0 {
		want = append(want, "+memory")
	}
	if cpuPercent > 0 {
		want = append(want, "+cpu")
	}
	if err := os.WriteFile(filepath.Join(base, "cgroup.subtree_control"), []byte(strings.Join(want, " ")), 0); err != nil {
		return nil, fmt.Errorf("enable %s in %s: %w", strings.Join(want, " "), base, err)
	}
	path := filepath.Join(base, "berth-"+name)
	if err := os.Mkdir(path, 0o755); err != nil && !os.IsExist(err) {
		return nil, fmt.Errorf("create cgroup: %w", err)
	}
	if memMax > 0 {
		if err := os.WriteFile(filepath.Join(path, "memory.max"), []byte(fmt.Sprint(memMax)), 0); err != nil {
			os.Remove(path)
			return nil, fmt.Errorf("set memory.max: %w", err)
		}
	}
	if cpuPercent > 0 {
		const period = 100000
		quota := uint64(cpuPercent) * period / 100
		if err := os.WriteFile(filepath.Join(path, "cpu.max"), []byte(fmt.Sprintf("%d %d", quota, period)), 0); err != nil {
			os.Remove(path)
			return nil, fmt.Errorf("set cpu.max: %w", err)
		}
	}
	fd, err := syscall.Open(path, syscall.O_DIRECTORY|syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("open cgroup: %w", err)
	}
	return &cgroup{path: path, fd: fd}, nil
}

func (c *cgroup) remove() {
	syscall.Close(c.fd)
	os.Remove(c.path) // fails while a process is left in it; harmless
}

// delegatedCgroup is the cgroup (relative to the root) supervisors make
// the instances' limit cgroups in: the agent's systemd unit cgroup, when
// systemd delegated it (Delegate=yes) and put the agent in its leaf
// "agent" (DelegateSubgroup=agent, systemd 254+), since a cgroup that
// hands controllers to its children may hold no process itself. Older
// systemd would then fail to put a restarted agent back in the unit's
// cgroup, so without that leaf there are no limits (and reports say so).
// "" when this host cannot do it.
func delegatedCgroup() string {
	if cgroupV2() != nil {
		return ""
	}
	own, err := ownCgroup()
	if err != nil || filepath.Base(own) != "agent" || !strings.HasSuffix(filepath.Dir(own), ".service") {
		return ""
	}
	parent := filepath.Dir(own)
	if syscall.Access(filepath.Join(cgroupRoot, parent, "cgroup.subtree_control"), 2) != nil {
		return ""
	}
	return parent
}
