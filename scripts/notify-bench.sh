#!/usr/bin/env bash
# Notification outbox throughput and latency (issue 17, section 6): the
# notify package's BenchmarkOutbox against a PostgreSQL cluster it starts
# with the controller's durable settings, delivering to a loopback webhook
# receiver that verifies every signature. Prints one markdown section (make
# bench appends it to BENCHMARKS.md). About a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
burst=${BENCH_NOTIFY_BURST:-3000}
rate=${BENCH_NOTIFY_RATE:-50}
secs=${BENCH_NOTIFY_SECONDS:-20}
cmd="BENCH_NOTIFY_BURST=$burst BENCH_NOTIFY_RATE=$rate BENCH_NOTIFY_SECONDS=$secs go test ./controller/internal/notify -run '^\$' -bench Outbox -benchtime 1x -count 1"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
out=$(eval "$cmd" 2>&1 | grep -E '^(Benchmark|ok|FAIL|---)')
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
if ! grep -q '^ok' <<<"$out"; then
  echo "$out" >&2
  exit 1
fi
# metric NAME UNIT: the value before UNIT on the benchmark line NAME.
metric() { awk -v n="BenchmarkOutbox/$1" -v u="$2" 'index($1, n) == 1 { for (i = 1; i < NF; i++) if ($(i+1) == u) print $i }' <<<"$out"; }
cat <<MD

## Notification outbox

Produced on $(date -u +%Y-%m-%d) by \`$cmd\` (\`scripts/notify-bench.sh\`, run by \`make bench\`).
One notify.Service as in a controller (8 concurrent sends, woken by LISTEN/NOTIFY) on a PostgreSQL
cluster the benchmark starts with the controller's embedded settings (fsync and synchronous commit on,
not the tests' fast mode), migrated like a controller's; each event published in a transaction of its
own; delivered as signed Standard Webhooks to a receiver on loopback that verifies each signature with
the specification's Go library. Every message arrived once (the benchmark fails otherwise). The machine
has $(nproc) cores shared with other work; the receiver, the controller code and PostgreSQL share them. Load
(1, 5, 15 min) before: $load_before; after: $load_after.

| measure | figure |
|---|---|
| burst: $burst events published from 4 goroutines while delivery was stopped | $(metric burst published/s) events/s |
| burst: delivery started on the backlog of $burst, start to the last receipt | **$(metric burst deliveries/s) deliveries/s** |
| steady: $((rate * secs)) events at a target of $rate a second, published at | $(metric steady published/s) events/s |
| steady: from publish (the transaction starting) to receipt, p50 / p99 / max | $(metric steady p50_ms) / **$(metric steady p99_ms)** / $(metric steady max_ms) ms |

\`\`\`
$out
\`\`\`
MD
