#!/usr/bin/env bash
# Fleet benchmark: BENCH_FLEET_AGENTS simulated agents (berth-fleetsim: the
# real agent client, each with its own key, certificate and mutual-TLS
# connection) against one controller on its embedded PostgreSQL on this
# machine. Measures BENCH_FLEET_SECONDS of steady state at a 10 s interval,
# then a backfill: BENCH_FLEET_BACKFILL_AGENTS agents reconnect at once with
# an hour of samples each, against a raw COPY of as many rows into the same
# database right after. Prints markdown; the simulator's raw key=value output
# goes to FLEET_RAW when set.
set -euo pipefail
AGENTS=${BENCH_FLEET_AGENTS:-10000}
SECS=${BENCH_FLEET_SECONDS:-60}
BACKFILL_AGENTS=${BENCH_FLEET_BACKFILL_AGENTS:-$AGENTS}
RAMP=${BENCH_FLEET_RAMP:-$((AGENTS / 200 > 30 ? AGENTS / 200 : 30))}
BIN=${BIN:-$(pwd)/.bin}

# One descriptor per agent connection in each process, plus slack.
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((AGENTS + 1000)) ]; then
  echo "fleet-bench: $AGENTS agents need about $((AGENTS + 1000)) open files per process; the hard limit is $(ulimit -Hn)" >&2
  exit 1
fi

load1=$(cut -d" " -f1 /proc/loadavg)
work=$(mktemp -d /tmp/berthfleet.XXXX)
agents=$(mktemp -d /dev/shm/berthfleet.XXXX)
chmod 755 "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work" "$agents"; }
trap cleanup EXIT

"$BIN/berth" serve --data-dir "$work/c" --http-addr 127.0.0.1:18081 --grpc-addr 127.0.0.1:17444 \
  --enroll-rate 1000000 2>"$work/c.log" &
controller=$!
pids+=($controller)
for _ in $(seq 1 300); do curl -fsS http://127.0.0.1:18081/healthz >/dev/null 2>&1 && break; sleep 0.2; done
printf 'a-long-bench-password\n' | "$BIN/berth" admin create --email bench@example.com --password-stdin --data-dir "$work/c" >/dev/null
token=$("$BIN/berth" token create --email bench@example.com --name fleet --data-dir "$work/c")
postmaster=$(head -1 "$work/c/postgres/data/postmaster.pid")

"$BIN/berth-fleetsim" -controller 127.0.0.1:17444 -ca-file "$work/c/ca.crt" -token "$token" -dir "$agents" \
  -agents "$AGENTS" -ramp "${RAMP}s" -window "${SECS}s" -backfill 360 -backfill-agents "$BACKFILL_AGENTS" \
  -controller-pid "$controller" -pg-pid "$postmaster" >"$work/sim.out"
: >"$work/raw.out"
v() { sed -n "s/^$1=//p" "$work/sim.out" "$work/raw.out" 2>/dev/null | head -1; }
"$BIN/berth-rawcopy" -data-dir "$work/c" -rows "$(v backfill_rows)" >"$work/raw.out"
[ -n "${FLEET_RAW:-}" ] && cat "$work/sim.out" "$work/raw.out" >"$FLEET_RAW"

ratio=$(awk -v a="$(v backfill_rows_per_second)" -v b="$(v raw_rows_per_second)" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
echo "Load average when the run started: $load1 (other work on the machine shares its $(nproc) cores)."
echo
echo "Steady state: $(v fleet_agents) agents started over ${RAMP} s, measured for $(v fleet_window_seconds) s after a warm-up."
echo
echo "| fleet, 10 s interval | measured |"
echo "|---|---|"
echo "| agents committing (acked in the last 20 s): at end / lowest / highest | $(v fleet_committing_end) / $(v fleet_committing_min) / $(v fleet_committing_peak) |"
echo "| committed samples/s (all agents would be $(v fleet_expected_samples_per_second)) | $(v fleet_samples_per_second) |"
echo "| batch ack latency, send to ack: p50 / p99 / max | $(v fleet_ack_p50_ms) / $(v fleet_ack_p99_ms) / $(v fleet_ack_max_ms) ms |"
echo "| controller CPU (of one core) | $(v controller_cpu_percent)% |"
echo "| controller RSS at end / peak | $(v controller_rss_mb) / $(v controller_peak_rss_mb) MB |"
echo "| embedded PostgreSQL CPU (postmaster and backends) | $(v postgres_cpu_percent)% |"
echo "| simulator CPU / RSS (all agents, one process) | $(v simulator_cpu_percent)% / $(v simulator_rss_mb) MB |"
echo "| enrollment of the fleet (admin API + agent enroll) | $(v enroll_seconds) s |"
echo
echo "Backfill: $(v backfill_agents) agents reconnect at once, each with an hour (360 samples) buffered."
echo
echo "| backfill | rows | seconds | rows/s |"
echo "|---|---|---|---|"
echo "| through the agents and the controller ($(v backfill_agents_done) of $(v backfill_agents) agents done; ack p50 $(v backfill_ack_p50_ms) ms, p99 $(v backfill_ack_p99_ms) ms) | $(v backfill_rows) | $(v backfill_seconds) | $(v backfill_rows_per_second) |"
echo "| raw COPY of as many rows, same database, $(v raw_conns) connections | $(v raw_rows) | $(v raw_seconds) | $(v raw_rows_per_second) |"
echo "| ratio (target at least 0.5) | | | $ratio |"
echo
echo "Agent log records: $(sed -n 's/^agent_log\.//p' "$work/sim.out" | tr '\n' ' ')"
