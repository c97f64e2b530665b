package proxy

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Why this file: after `nginx -s reload` the master starts new workers and
// then tells the old ones to stop; each old worker closes its listening
// sockets when it gets to that message. Until then it may still accept a
// new connection and answer with the old configuration, even after a new
// worker has answered the status server. So a reload is only done when
// every old worker has exited or holds none of the listening sockets. The
// state is read from /proc (the agent runs on Linux as root, so it can
// read nginx's workers' descriptors); where it cannot be read, the wait
// ends at the status answer alone.

// workers are the master's children before a reload.
type workers struct {
	master int
	procs  []proc
}

// proc is a process by pid and start time, so a pid reused by a new
// worker is not taken for the old one.
type proc struct {
	pid   int
	start string
}

// snapshotWorkers finds the master of the worker that answered the status
// server, and the master's children.
func snapshotWorkers(workerPid int) workers {
	master, _, ok := procStat(workerPid)
	if !ok || master <= 1 {
		return workers{}
	}
	return childrenOf(master)
}

// snapshotListeners finds nginx's master through the processes holding a
// listening socket on one of ports (the master and its workers all hold
// them; the master is the one whose parent does not), and the master's
// children. It reads every process's descriptors, so it is only the
// fallback for when the status server does not answer.
func snapshotListeners(ports ...int) workers {
	inodes := listeningInodesOn(ports)
	if len(inodes) == 0 {
		return workers{}
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return workers{}
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() || !holdsAny(pid, inodes) {
			continue
		}
		master := pid
		if pp, _, ok := procStat(pid); ok && pp > 1 && holdsAny(pp, inodes) {
			master = pp
		}
		return childrenOf(master)
	}
	return workers{}
}

// childrenOf lists master's children by pid and start time.
func childrenOf(master int) workers {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return workers{}
	}
	w := workers{master: master}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp, start, ok := procStat(pid); ok && pp == master {
			w.procs = append(w.procs, proc{pid, start})
		}
	}
	return w
}

// procStat reads a process's parent and start time from /proc/PID/stat.
func procStat(pid int) (ppid int, start string, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, "", false
	}
	// "pid (comm) state ppid ...": comm may hold spaces and parentheses,
	// so read after the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, "", false
	}
	// After ')': state(3) ppid(4) ... starttime(22), numbered as in proc(5).
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, "", false
	}
	p, err := strconv.Atoi(f[1])
	return p, f[19], err == nil
}

// waitStopped polls until no old worker can accept a connection.
func (w workers) waitStopped(ctx context.Context) error {
	if len(w.procs) == 0 {
		return nil
	}
	delay := time.Millisecond
	for {
		listening := listeningInodes()
		busy := 0
		for _, p := range w.procs {
			if pp, start, ok := procStat(p.pid); !ok || pp != w.master || start != p.start {
				continue // exited (or the pid is another process's now)
			}
			if holdsAny(p.pid, listening) {
				busy++
			}
		}
		if busy == 0 {
			return nil
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%d still listening: %w", busy, ctx.Err())
		case <-t.C:
		}
		if delay < 50*time.Millisecond {
			delay *= 2
		}
	}
}

// listeningInodes are the socket inodes in LISTEN state (TCP, IPv4 and
// IPv6) of this network namespace.
func listeningInodes() map[string]bool { return listeningInodesOn(nil) }

// listeningInodesOn is listeningInodes limited to the local ports given
// (all ports when none are).
func listeningInodesOn(ports []int) map[string]bool {
	want := map[string]bool{}
	for _, p := range ports {
		want[fmt.Sprintf("%04X", p)] = true
	}
	set := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		sc.Scan() // header
		for sc.Scan() {
			// sl local rem st tx:rx tr:when retrnsmt uid timeout inode
			fs := strings.Fields(sc.Text())
			if len(fs) < 10 || fs[3] != "0A" {
				continue
			}
			// local address "0100007F:1F90": the port is after the last ':'
			if i := strings.LastIndexByte(fs[1], ':'); len(want) == 0 || (i >= 0 && want[fs[1][i+1:]]) {
				set[fs[9]] = true
			}
		}
		fh.Close()
	}
	return set
}

// holdsAny tells whether pid has a descriptor on one of the sockets. A
// process whose descriptors cannot be read counts as not holding any: the
// wait must not hang on what it cannot see.
func holdsAny(pid int, inodes map[string]bool) bool {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range ents {
		l, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		if ino, ok := strings.CutPrefix(l, "socket:["); ok && inodes[strings.TrimSuffix(ino, "]")] {
			return true
		}
	}
	return false
}
