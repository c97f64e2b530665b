#!/usr/bin/env bash
# make bench: runs the benchmarks, prints their figures and writes them to
# BENCHMARKS.md with the command that produced them. Timing lives here,
# never in tests.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp)
trap 'rm -f "$out"' EXIT
cmd1="go test ./controller/internal/store -run '^\$' -bench 'IngestBatch|RawCopy|BackfillParallel' -benchtime 5s -count 1"
cmd2="go test ./agent/internal/metrics -run '^\$' -bench Sample -benchmem -count 1"
echo "\$ $cmd1" | tee "$out"
eval "$cmd1" 2>&1 | grep -E '^(Benchmark|ok|FAIL)' | tee -a "$out"
echo "\$ $cmd2" | tee -a "$out"
eval "$cmd2" 2>&1 | grep -E '^(Benchmark|ok|FAIL)' | tee -a "$out"

echo "\$ BENCH_FOOTPRINT_SECONDS=${BENCH_FOOTPRINT_SECONDS:-120} scripts/footprint.sh" | tee -a "$out"
footprint=$(BIN=$(pwd)/.bin ./scripts/footprint.sh)
echo "$footprint" | tee -a "$out"

fleetcmd="BENCH_FLEET_AGENTS=${BENCH_FLEET_AGENTS:-10000} BENCH_FLEET_SECONDS=${BENCH_FLEET_SECONDS:-60} scripts/fleet-bench.sh"
echo "\$ $fleetcmd" | tee -a "$out"
fleet=$(BIN=$(pwd)/.bin ./scripts/fleet-bench.sh)
echo "$fleet" | tee -a "$out"

ingest=$(awk '/^BenchmarkIngestBatch/ { for (i=1;i<=NF;i++) if ($(i+1)=="rows/s") print $i }' "$out")
backfill=$(awk '/^BenchmarkBackfillParallel/ { for (i=1;i<=NF;i++) if ($(i+1)=="rows/s") print $i }' "$out")
raw=$(awk '/^BenchmarkRawCopy/ { for (i=1;i<=NF;i++) if ($(i+1)=="rows/s") print $i }' "$out")
ratio=$(awk -v a="$ingest" -v b="$raw" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
{
  echo "# Benchmarks"
  echo
  echo "Written by \`make bench\` on $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(go version | awk '{print $3}')."
  echo
  echo "## Metrics ingest (controller)"
  echo
  echo "Exactly-once batch ingest (sequence compare-and-set + COPY in one transaction) against a bare"
  echo "COPY of the same rows into the same database, in the same run. Target: at least half the raw rate."
  echo
  echo "| path | rows/s |"
  echo "|---|---|"
  echo "| IngestMetricsBatch (360-sample batches) | $ingest |"
  echo "| IngestMetricsBatch, 200 servers replaying an hour at once (4 goroutines per core) | $backfill |"
  echo "| raw COPY | $raw |"
  echo "| ratio | $ratio |"
  echo
  echo "## Agent footprint"
  echo
  echo "berth-agent connected to a real controller on this machine, against Prometheus node_exporter."
  echo "Target: RSS at most 20 MB and CPU at most 0.2% of a core, below node_exporter on both."
  echo
  echo "$footprint"
  echo
  echo "## Fleet"
  echo
  echo "\`$fleetcmd\`: simulated agents (berth-fleetsim: the real agent client code, each with its"
  echo "own key, certificate and mutual-TLS connection; synthetic samples) against one controller on its"
  echo "embedded PostgreSQL, all on this machine. Targets: 10,000 agents at a 10 s interval with p99 ack"
  echo "under 250 ms; backfill at least half the raw COPY rate."
  echo
  echo "$fleet"
  echo
  echo "## Raw output"
  echo
  echo '```'
  cat "$out"
  echo '```'
  echo
  echo "The footprint runs ${BENCH_FOOTPRINT_SECONDS:-120} s by default; BENCH_FOOTPRINT_SECONDS=600 gives the 10-minute"
  echo "figure. The fleet's steady state is measured for ${BENCH_FLEET_SECONDS:-60} s; BENCH_FLEET_AGENTS and"
  echo "BENCH_FLEET_SECONDS change its size and window."
} > BENCHMARKS.md
echo "ingest/raw = $ratio; written to BENCHMARKS.md"
