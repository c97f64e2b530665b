#!/usr/bin/env bash
# Backup throughput (issue 18 §7): a PostgreSQL database of at least 1 GB
# backed up by Berth's pipeline (backup.Run: pg_dump -Fc -Z0 -> zstd -> age
# -> SHA-256 -> a local destination, run by the berth-backup-bench program)
# against the same pipeline by hand in one shell
# (pg_dump -Fc -Z0 | zstd | age -r KEY > file), on this machine, in the same
# run, alternating, best of BENCH_BACKUP_ROUNDS each. Both run pg_dump as the
# postgres system user over the same socket, and both fsync the stored file
# before the clock stops (Berth does before it calls a backup stored). Then restore time:
# backup.Restore into a fresh database against
# age -d | zstd -d | pg_restore --single-transaction --exit-on-error by hand.
# Prints one markdown section.
set -euo pipefail
BIN=${BIN:-$(pwd)/.bin}
ROWS=${BENCH_BACKUP_ROWS:-6000000}
ROUNDS=${BENCH_BACKUP_ROUNDS:-3}
bench=$BIN/berth-backup-bench
pgbin=$(dirname "$(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")
work=$(mktemp -d /tmp/berthbk.XXXX)
chmod 755 "$work"
chown postgres: "$work"
as_pg() { runuser -u postgres -- "$@"; }
cleanup() {
  as_pg "$pgbin/pg_ctl" stop -D "$work/data" -m immediate -w >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
export PGHOST=$work PGPORT=5432

as_pg "$pgbin/initdb" -D "$work/data" -U postgres -E UTF8 --locale=C --auth-local=trust --no-instructions >/dev/null
as_pg "$pgbin/pg_ctl" start -D "$work/data" -l "$work/pg.log" -w -t 120 \
  -o "-k $work -p 5432 -c listen_addresses= -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c wal_level=minimal -c max_wal_senders=0 -c max_wal_size=4GB -c shared_buffers=256MB" >/dev/null
psql() { as_pg "$pgbin/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h "$work" -p 5432 -U postgres "$@"; }

# The data: an orders-like table (ids, hashes, timestamps, amounts, a status
# word and a short note): compresses about as well as real application data.
build_start=$(date +%s)
psql -d postgres -c "CREATE DATABASE bench"
psql -d bench <<SQL
CREATE TABLE orders AS
SELECT i AS id,
       md5(i::text) AS ref,
       (i % 100000) AS customer_id,
       timestamptz '2026-01-01' + (i * interval '1 second') AS created_at,
       round((random() * 1000)::numeric, 2) AS amount,
       (ARRAY['new','paid','shipped','delivered','refunded'])[1 + i % 5] AS status,
       'order ' || i || ' for customer ' || (i % 100000) || ' via ' || (ARRAY['web','app','phone'])[1 + i % 3] AS note,
       md5((i * 7)::text) || md5((i * 13)::text) AS token
FROM generate_series(1, $ROWS) i;
ALTER TABLE orders ADD PRIMARY KEY (id);
CREATE INDEX orders_customer ON orders (customer_id);
SQL
psql -d bench -c "VACUUM ANALYZE orders" >/dev/null
build_s=$(( $(date +%s) - build_start ))
db_bytes=$(psql -d bench -c "SELECT pg_database_size('bench')")
table_bytes=$(psql -d bench -c "SELECT pg_table_size('orders')")
raw_dump_bytes=$(as_pg "$pgbin/pg_dump" -h "$work" -p 5432 -Fc -Z0 bench | wc -c)

age-keygen -o "$work/key.txt" 2>/dev/null
recipient=$(age-keygen -y "$work/key.txt")
mkdir -p "$work/berth" "$work/shell"

# Arithmetic with awk (no bc on a minimal machine).
calc() { awk "BEGIN { printf \"$1\", $2 }"; }
lt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'; }
# timed CMD...: runs CMD, sets wall and cpu (user + system seconds of CMD and
# every process it waited for, pg_dump included; the PostgreSQL server's own
# backend is in neither side's figure).
timed() {
  local TIMEFORMAT='%3R %3U %3S' t
  t=$( { time "$@" >"$work/out" 2>>"$work/cmd.log"; } 2>&1 ) || { echo "failed: $*" >&2; cat "$work/cmd.log" >&2; exit 1; }
  wall=$(echo "$t" | awk '{ print $1 }')
  cpu=$(echo "$t" | awk '{ printf "%.3f", $2 + $3 }')
}
shell_pipeline() {
  as_pg "$pgbin/pg_dump" -h "$work" -p 5432 -Fc -Z0 bench | zstd -q | age -r "$recipient" > "$work/shell/dump.age"
  # Berth fsyncs the object before it calls it stored; so does this side.
  sync "$work/shell/dump.age"
}
shell_best=""; berth_best=""; shell_cpu=""; berth_cpu=""; berth_rss=0
run_shell() {
  rm -f "$work/shell/dump.age"
  timed shell_pipeline
  shell_size=$(stat -c %s "$work/shell/dump.age")
  if [ -z "$shell_best" ] || lt "$wall" "$shell_best"; then shell_best=$wall; fi
  if [ -z "$shell_cpu" ] || lt "$cpu" "$shell_cpu"; then shell_cpu=$cpu; fi
  echo "round $r: shell ${wall}s ${cpu} cpu-s" >&2
}
run_berth() {
  key="b/$r.dump.zst.age"
  timed "$bench" -mode backup -kind postgres -name bench -dest "$work/berth" -key "$key" -recipient "$recipient"
  out=$(cat "$work/out")
  rss=$(printf '%s' "$out" | sed -n 's/.*"peak_rss_kib":\([0-9]*\).*/\1/p')
  size=$(printf '%s' "$out" | sed -n 's/.*"size":\([0-9]*\).*/\1/p')
  sum=$(printf '%s' "$out" | sed -n 's/.*"sha256":"\([0-9a-f]*\)".*/\1/p')
  if [ "$rss" -gt "$berth_rss" ]; then berth_rss=$rss; fi
  if [ -z "$berth_best" ] || lt "$wall" "$berth_best"; then berth_best=$wall; fi
  if [ -z "$berth_cpu" ] || lt "$cpu" "$berth_cpu"; then berth_cpu=$cpu; fi
  echo "round $r: berth ${wall}s ${cpu} cpu-s" >&2
}
# Alternating which goes first, so neither always runs behind the other's
# disk writeback.
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then run_shell; run_berth; else run_berth; run_shell; fi
done
# The restore below reads the last object Berth stored ($key, $size, $sum).

mb() { calc %.1f "$1 / 1000000"; }
rate() { calc %.1f "$raw_dump_bytes / $1 / 1000000"; }
ratio=$(calc %.2f "$shell_best / $berth_best")
cpu_ratio=$(calc %.2f "$shell_cpu / $berth_cpu")

# Restore: Berth into a fresh database (it creates it) against by hand.
timed "$bench" -mode restore -kind postgres -name bench_berth -dest "$work/berth" -key "$key" -size "$size" -sha256 "$sum" \
  -identity-file "$work/key.txt"
berth_restore=$wall berth_restore_cpu=$cpu
restore_rss=$(sed -n 's/.*"peak_rss_kib":\([0-9]*\).*/\1/p' "$work/out")
psql -d postgres -c "CREATE DATABASE bench_shell"
shell_restore() {
  age -d -i "$work/key.txt" "$work/shell/dump.age" | zstd -d -q | as_pg "$pgbin/pg_restore" -h "$work" -p 5432 -d bench_shell --single-transaction --exit-on-error
}
timed shell_restore
shell_restore=$wall shell_restore_cpu=$cpu
rows_b=$(psql -d bench_berth -c "SELECT count(*) FROM orders")
rows_s=$(psql -d bench_shell -c "SELECT count(*) FROM orders")
sum_src=$(psql -d bench -c "SELECT md5(string_agg(md5(o::text), '' ORDER BY id)) FROM orders o")
sum_b=$(psql -d bench_berth -c "SELECT md5(string_agg(md5(o::text), '' ORDER BY id)) FROM orders o")
same="yes"; [ "$sum_src" = "$sum_b" ] || same="NO"

cat <<MD

## Backup pipeline (agent)

Written by \`make bench\` (\`scripts/backup-bench.sh\`) on $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(go version 2>/dev/null | awk '{print $3}'), PostgreSQL $(basename "$(dirname "$pgbin")"), zstd $(zstd -V | grep -o 'v[0-9.]*' | head -1), age $(age --version).
Load average when the run started: $(cut -d' ' -f1 /proc/loadavg) (other work shares the machine's cores).

Berth's side is \`berth-backup-bench\` (agent/internal/backup/benchrun), a small program that calls exactly
\`backup.Run\` / \`backup.Restore\` as the agent's backup job does (agent/internal/deploy/backupjob.go); the
controller and the agent's job stream around it are not in the figure. Destination: a local directory, like the shell pipeline's file. Best of $ROUNDS rounds each,
alternating which goes first. Database: $(mb "$db_bytes") MB (table $(mb "$table_bytes") MB, $ROWS rows, built in ${build_s}s); the
uncompressed custom-format dump is $(mb "$raw_dump_bytes") MB.

| backup | seconds | dump MB/s | CPU seconds (pg_dump included) | stored MB |
|---|---|---|---|---|
| \`pg_dump -Fc -Z0 \| zstd \| age -r KEY > file; sync file\` | $(printf '%.1f' "$shell_best") | $(rate "$shell_best") | $(printf '%.1f' "$shell_cpu") | $(mb "$shell_size") |
| Berth (backup.Run: zstd, age, SHA-256, local destination) | $(printf '%.1f' "$berth_best") | $(rate "$berth_best") | $(printf '%.1f' "$berth_cpu") | $(mb "$size") |
| ratio, Berth / shell (target at least 0.9 of the throughput) | | $ratio | $cpu_ratio (shell CPU / Berth CPU) | |

Peak RSS of the process running Berth's pipeline (VmHWM, pg_dump not included, as for the agent):
$(calc %.1f "$berth_rss / 1024") MiB (target under 64 MB); during the restore: $(calc %.1f "$restore_rss / 1024") MiB.

| restore into a fresh database | seconds | CPU seconds (pg_restore included) |
|---|---|---|
| \`age -d \| zstd -d \| pg_restore --single-transaction --exit-on-error\` | $(printf '%.1f' "$shell_restore") | $(printf '%.1f' "$shell_restore_cpu") |
| Berth (backup.Restore: checksum, age, zstd, createdb, the same pg_restore) | $(printf '%.1f' "$berth_restore") | $(printf '%.1f' "$berth_restore_cpu") |

Restored rows: Berth $rows_b, shell $rows_s, of $ROWS; Berth's restore has the same rows as the source (md5 of every row): $same.
MD
