// Package supervise keeps an app's processes running on the agent's host,
// independent of the agent itself.
//
// # Why a supervisor process per instance
//
// Issue 16 offered two designs: a systemd unit per app process, or, as
// Nomad's executor does, a small process that owns each app process. We
// chose the second. It works the same on every host, with systemd as PID 1
// or without it (the tests here run real processes on a host whose PID 1
// is not systemd), it needs no D-Bus client in the agent (which stays
// small: the supervisor is the agent binary itself, run as the hidden
// command `berth-agent supervise`), and it gives Berth the logs, restart
// counts and state it reports without asking another daemon.
//
// Every app process instance is owned by `berth-agent supervise --dir
// UNITDIR`, started detached by the agent (its own session, no terminal,
// output to UNITDIR/supervisor.log), so the agent's restart, upgrade or
// kill -9 does not stop it; under systemd the agent's unit has
// KillMode=process for the same reason. The supervisor:
//
//   - runs `bash -c COMMAND` from the release directory, as the app's
//     uid and gid, with the app's environment plus PORT when the process
//     has a port, in its own process group;
//   - restarts it per policy (always, on-failure, never) with backoff: 1s
//     doubling to 1m, back to 1s after a run of a minute; restarts are
//     counted;
//   - writes its state atomically to UNITDIR/state.json (running,
//     starting, restarting, failed, stopped; pid, port, restarts,
//     started_at, last_exit_code, last_error, limits_enforced, and
//     backoff_ms, the wait before a pending restart);
//   - keeps the process's stdout and stderr in UNITDIR/output.log with
//     rotation (output.log.1 to .3, 8 MiB each), one line per line the
//     process wrote: "TIME stdout|stderr TEXT", TIME in UTC with
//     nanoseconds (lines longer than 16 KiB are split);
//   - runs the app with umask 022 (the agent's unit has 077);
//   - on SIGTERM sends the process's stop signal to its process group,
//     waits the grace period, kills the group, records stopped and exits;
//   - applies memory.max and cpu.max through a cgroup v2 directory of the
//     agent's delegated cgroup when asked and possible (the agent's unit
//     has Delegate=yes and DelegateSubgroup=agent, systemd 254+, so the
//     unit's cgroup holds no process and can hand controllers down);
//     otherwise limits_enforced is false and last_error says why — a
//     missing cgroup never fails a start.
//
// The app's local upstream is a second kind of detached process,
// `berth-agent upstream --dir DIR`: a reverse proxy on
// 127.0.0.1:upstream_port (WebSocket upgrades and streamed responses
// pass) that forwards round-robin to the loopback backends in
// DIR/backends.json. On SIGHUP it re-reads them and writes the generation
// it applied to DIR/applied, which the agent waits for; requests already
// in flight to an old backend finish there.
//
// # The Manager
//
// Limits of the design: a supervisor killed with -9 leaves its process
// running until the agent notices (within half a second while it runs,
// or at its next start) and starts the supervisor again, which first
// kills the orphan's process group; moving the upstream to another port
// refuses connections for a moment; the upstream has no TLS and no
// access log (nginx in front has both).
//
// The Manager (in the agent) keeps no state of its own: the state
// directory is the truth. Each app has StateDir/APP/units/NAME.INDEX.N
// (one per instance ever started, a `retired` marker once it is replaced)
// and StateDir/APP/upstream. A new Manager finds the supervisors and
// upstreams again by their pid files, checking through /proc/PID/cmdline
// that the pid is still our supervisor for that directory, so a restarted
// agent reports the processes the old one started. Supervisors that died
// without being stopped (a reboot, an OOM kill) are started again.
//
// A deploy replaces processes without refusing a request: for each
// process with a port, new instances start on fresh loopback ports and
// must answer GET health_path with a 2xx (or accept TCP without one);
// then the upstream is switched to them and the old instances are
// stopped gracefully. Workers restart after the switch. A new instance
// that fails or exits is stopped, the old ones keep serving, the upstream
// is unchanged and the error names the process with the tail of its log.
package supervise
