#!/usr/bin/env bash
# Alert evaluation cost: the fleet benchmark's steady state (berth-fleetsim,
# BENCH_ALERT_AGENTS simulated agents at a 10 s interval against one
# controller on its embedded PostgreSQL) run twice in one invocation, each
# on a fresh controller: without alert rules (the install's defaults
# removed), then with BENCH_ALERT_RULES fleet-wide rules, so every agent's
# every sample is evaluated against all of them. Prints markdown: controller
# CPU, the ingest ratio (committed samples/s against what all agents send)
# and ack latency for both runs and the change. No backfill phase.
set -euo pipefail
AGENTS=${BENCH_ALERT_AGENTS:-10000}
SECS=${BENCH_ALERT_SECONDS:-60}
RULES=${BENCH_ALERT_RULES:-5}
RAMP=${BENCH_FLEET_RAMP:-$((AGENTS / 200 > 30 ? AGENTS / 200 : 30))}
WARMUP=${BENCH_ALERT_WARMUP:-15}
BIN=${BIN:-$(pwd)/.bin}

ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((AGENTS + 1000)) ]; then
  echo "alert-bench: $AGENTS agents need about $((AGENTS + 1000)) open files per process; the hard limit is $(ulimit -Hn)" >&2
  exit 1
fi

# The rules of the "with" run: every metric the synthetic hosts report, at
# thresholds their samples cross now and then (cpu is uniform 0-100%, so
# "cpu > 90" opens a pending condition on a tenth of the samples) but not
# for the duration: evaluation cost, not notification traffic.
rule_args=(
  "cpu-hot --metric cpu --above 90 --for 5m"
  "mem-full --metric memory --above 95 --for 10m"
  "disk-full --metric disk --above 90 --for 5m"
  "load-high --metric load --above 4 --for 5m"
  "net-busy --metric net_rx --above 1000000000 --for 5m"
  "inodes-full --metric inodes --above 90 --for 5m"
  "swap-full --metric swap --above 80 --for 5m"
  "net-tx-busy --metric net_tx --above 1000000000 --for 5m"
)

work=""
agents=""
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "$work" ] && rm -rf "$work"
  [ -n "$agents" ] && rm -rf "$agents"
  return 0
}
trap cleanup EXIT

# run_once N OUT: a fresh controller with N rules, the simulator's output
# in OUT.
run_once() {
  local nrules=$1 out=$2
  work=$(mktemp -d /tmp/berthalert.XXXX)
  agents=$(mktemp -d /dev/shm/berthalert.XXXX)
  chmod 755 "$work"
  "$BIN/berth" serve --data-dir "$work/c" --http-addr 127.0.0.1:18082 --grpc-addr 127.0.0.1:17445 \
    --enroll-rate 1000000 2>"$work/c.log" &
  local controller=$!
  pids=($controller)
  for _ in $(seq 1 300); do curl -fsS http://127.0.0.1:18082/healthz >/dev/null 2>&1 && break; sleep 0.2; done
  printf 'a-long-bench-password\n' | "$BIN/berth" admin create --email bench@example.com --password-stdin --data-dir "$work/c" >/dev/null
  local token
  token=$("$BIN/berth" token create --email bench@example.com --name fleet --data-dir "$work/c")
  export BERTH_ADDR=127.0.0.1:17445 BERTH_TOKEN=$token BERTH_CA_FILE=$work/c/ca.crt
  for r in disk-above-90 memory-above-95 server-offline; do "$BIN/berth" alert remove "$r" >/dev/null; done
  local i=0
  for spec in "${rule_args[@]}"; do
    [ "$i" -ge "$nrules" ] && break
    # shellcheck disable=SC2086
    "$BIN/berth" alert add $spec >/dev/null
    i=$((i + 1))
  done
  local postmaster
  postmaster=$(head -1 "$work/c/postgres/data/postmaster.pid")
  "$BIN/berth-fleetsim" -controller 127.0.0.1:17445 -ca-file "$work/c/ca.crt" -token "$token" -dir "$agents" \
    -agents "$AGENTS" -ramp "${RAMP}s" -window "${SECS}s" -warmup "${WARMUP}s" -backfill 0 \
    -controller-pid "$controller" -pg-pid "$postmaster" >"$out"
  echo "alert_rules=$("$BIN/berth" alert list -o json | grep -c '"name"')" >>"$out"
  kill "$controller"
  wait "$controller" 2>/dev/null || true
  pids=()
  rm -rf "$work" "$agents"
  work="" agents=""
}

load1=$(cut -d" " -f1 /proc/loadavg)
tmp=$(mktemp -d)
run_once 0 "$tmp/without.out"
run_once "$RULES" "$tmp/with.out"
[ -n "${ALERT_RAW:-}" ] && cat "$tmp/without.out" "$tmp/with.out" >"$ALERT_RAW"

v() { sed -n "s/^$2=//p" "$tmp/$1.out" | head -1; }
ratio() { awk -v a="$(v "$1" fleet_samples_per_second)" -v b="$(v "$1" fleet_expected_samples_per_second)" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "n/a" }'; }
delta() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.1f", b - a }'; }
echo
echo "## Alert evaluation"
echo
echo "\`BENCH_ALERT_AGENTS=$AGENTS BENCH_ALERT_SECONDS=$SECS BENCH_ALERT_RULES=$RULES BENCH_ALERT_WARMUP=$WARMUP scripts/alert-bench.sh\`: the fleet"
echo "benchmark's steady state twice in one invocation, each on a fresh controller: without alert rules,"
echo "then with fleet-wide rules that every sample is evaluated against. Target: ingest ratio and ack"
echo "latency where they are without rules."
echo
echo "Load average when the run started: $load1 (other work on the machine shares its $(nproc) cores)."
echo
echo "$AGENTS simulated agents started over ${RAMP} s, measured for ${SECS} s after a ${WARMUP} s warm-up; each run on a fresh controller."
echo "With rules: $(v with alert_rules) fleet-wide rules (every agent's every sample is evaluated against each); without: none."
echo
echo "| fleet, 10 s interval | without rules | with $(v with alert_rules) rules | change |"
echo "|---|---|---|---|"
echo "| agents committing at end | $(v without fleet_committing_end) | $(v with fleet_committing_end) | |"
echo "| ingest ratio (committed samples/s / all agents' samples/s) | $(ratio without) | $(ratio with) | $(delta "$(ratio without)" "$(ratio with)") |"
echo "| batch ack latency p50 (ms) | $(v without fleet_ack_p50_ms) | $(v with fleet_ack_p50_ms) | $(delta "$(v without fleet_ack_p50_ms)" "$(v with fleet_ack_p50_ms)") |"
echo "| batch ack latency p99 (ms) | $(v without fleet_ack_p99_ms) | $(v with fleet_ack_p99_ms) | $(delta "$(v without fleet_ack_p99_ms)" "$(v with fleet_ack_p99_ms)") |"
echo "| controller CPU (% of one core) | $(v without controller_cpu_percent) | $(v with controller_cpu_percent) | $(delta "$(v without controller_cpu_percent)" "$(v with controller_cpu_percent)") |"
echo "| controller RSS at end (MB) | $(v without controller_rss_mb) | $(v with controller_rss_mb) | $(delta "$(v without controller_rss_mb)" "$(v with controller_rss_mb)") |"
echo "| embedded PostgreSQL CPU (%) | $(v without postgres_cpu_percent) | $(v with postgres_cpu_percent) | $(delta "$(v without postgres_cpu_percent)" "$(v with postgres_cpu_percent)") |"
rm -rf "$tmp"
