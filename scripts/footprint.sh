#!/usr/bin/env bash
# Agent footprint: berth-agent connected to a real controller, sampling every
# 10 s, against Prometheus node_exporter scraped every 10 s, for SECONDS
# seconds on this machine. Prints one markdown table.
set -euo pipefail
SECONDS_TO_RUN=${BENCH_FOOTPRINT_SECONDS:-120}
BIN=${BIN:-$(pwd)/.bin}
work=$(mktemp -d /tmp/berthfp.XXXX)
chmod 755 "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

"$BIN/berth" serve --data-dir "$work/c" --http-addr 127.0.0.1:18080 --grpc-addr 127.0.0.1:17443 2>"$work/c.log" &
pids+=($!)
for _ in $(seq 1 300); do curl -fsS http://127.0.0.1:18080/healthz >/dev/null 2>&1 && break; sleep 0.2; done
printf 'a-long-bench-password\n' | "$BIN/berth" admin create --email bench@example.com --password-stdin --data-dir "$work/c" >/dev/null
export BERTH_ADDR=127.0.0.1:17443 BERTH_CA_FILE=$work/c/ca.crt
BERTH_TOKEN=$("$BIN/berth" token create --email bench@example.com --name bench --data-dir "$work/c")
export BERTH_TOKEN
out=$("$BIN/berth" server add bench -o json)
token=$(printf '%s' "$out" | sed -n 's/.*"token": "\([^"]*\)".*/\1/p')
pin=$(printf '%s' "$out" | sed -n 's/.*"ca_pin": "\([^"]*\)".*/\1/p')
printf '%s\n' "$token" | "$BIN/berth-agent" enroll --controller 127.0.0.1:17443 --token-stdin --ca-pin "$pin" --data-dir "$work/a" >/dev/null
"$BIN/berth-agent" run --data-dir "$work/a" 2>"$work/a.log" &
agent=$!
pids+=($agent)

ne=""
if command -v prometheus-node-exporter >/dev/null 2>&1; then
  prometheus-node-exporter --web.listen-address=127.0.0.1:19100 >/dev/null 2>&1 &
  ne=$!
  pids+=($ne)
fi

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
rss() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
sleep 5 # past start-up
a0=$(ticks $agent); n0=0; [ -n "$ne" ] && n0=$(ticks $ne)
end=$((SECONDS + SECONDS_TO_RUN))
while [ $SECONDS -lt $end ]; do
  [ -n "$ne" ] && curl -fsS http://127.0.0.1:19100/metrics >/dev/null || true
  sleep 10
done
hz=$(getconf CLK_TCK)
a1=$(ticks $agent)
row() { awk -v t="$2" -v hz="$hz" -v s="$SECONDS_TO_RUN" -v r="$3" -v n="$1" 'BEGIN { printf "| %s | %.3f%% | %.1f MB |\n", n, 100 * t / hz / s, r / 1024 }'; }
echo "| process (${SECONDS_TO_RUN}s, 10 s interval) | CPU (of one core) | RSS |"
echo "|---|---|---|"
row berth-agent $((a1 - a0)) "$(rss $agent)"
if [ -n "$ne" ]; then
  n1=$(ticks $ne)
  row "node_exporter (scraped every 10 s)" $((n1 - n0)) "$(rss $ne)"
else
  echo "| node_exporter | not installed (apt-get install prometheus-node-exporter) | |"
fi
samples=$("$BIN/berth" metrics bench --since 1h --step 1s -o json | grep -c '"t"' || true)
echo
echo "Samples stored for the agent during the run: $samples"
