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
// a cgroup without processes of its own (the agent moves itself into a
// leaf of its delegated unit cgroup, see leaveCgroupRoot), otherwise the
// kernel refuses to enable controllers for its children.
func newCgroup(parent, name string, memMax uint64, cpuPercent uint32) (*cgroup, error) {
	if err := cgroupV2(); err != nil {
		return nil, err
	}
	if parent == "" {
		return nil, errors.New("the agent found no delegated cgroup to create limits in (its unit needs Delegate=yes)")
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

// leaveCgroupRoot moves the agent into a leaf "agent" of its own cgroup
// when that cgroup is delegated to it (systemd Delegate=yes), so the
// cgroup itself has no processes and can hand memory and cpu to the
// instances' cgroups. It returns that cgroup (the parent for limits) or
// "" when this host cannot do it.
func leaveCgroupRoot() string {
	if cgroupV2() != nil {
		return ""
	}
	own, err := ownCgroup()
	if err != nil || own == "/" {
		return ""
	}
	parent := own
	if filepath.Base(own) == "agent" {
		// systemd put us in the leaf already (DelegateSubgroup=agent).
		parent = filepath.Dir(own)
	}
	// Only a systemd service's own (delegated) cgroup is ours to arrange:
	// an agent started by hand in a login session must not move the
	// session's processes about.
	if !strings.HasSuffix(parent, ".service") {
		return ""
	}
	base := filepath.Join(cgroupRoot, parent)
	if err := syscall.Access(filepath.Join(base, "cgroup.procs"), 2); err != nil {
		return ""
	}
	leaf := filepath.Join(base, "agent")
	if err := os.Mkdir(leaf, 0o755); err != nil && !os.IsExist(err) {
		return ""
	}
	// Every process still in the unit's own cgroup (this agent, and
	// supervisors of an earlier agent) moves to the leaf.
	b, err := os.ReadFile(filepath.Join(base, "cgroup.procs"))
	if err != nil {
		return ""
	}
	for _, pid := range strings.Fields(string(b)) {
		os.WriteFile(filepath.Join(leaf, "cgroup.procs"), []byte(pid), 0)
	}
	return parent
}
