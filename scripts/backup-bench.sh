#!/usr/bin/env bash
# Backup throughput (issue 18 §7): a PostgreSQL database of at least 1 GB
# backed up by Berth through the real product (a controller, `berth serve` on
# its embedded PostgreSQL; a berth-agent enrolled to it over mTLS; an app on
# that server; a local destination; `berth backup run APP --destination D
# --kind postgres --source DB --follow` timed from invocation to the stored
# object) against the same pipeline by hand in one shell
# (pg_dump -Fc -Z0 | zstd | age -r KEY > file), on this machine, in the same
# run, alternating, BENCH_BACKUP_ROUNDS (5) rounds: best of each side, and the
# median of the rounds' paired ratios (each round runs both back to back, so
# a ratio compares the two under the same conditions; the median is robust to
# a round disturbed by something else on the machine). Both run pg_dump as the
# postgres system user over the same socket, and both fsync the stored file
# before the clock stops (the agent does before it calls a backup stored).
# The agent's peak RSS is its VmHWM from /proc/PID/status, read before the
# first backup and after each (it cannot be reset). Then restore time:
# `berth backup restore ID --to NEWDB --follow` against
# age -d | zstd -d | pg_restore --single-transaction --exit-on-error by hand.
# Prints one markdown section.
set -euo pipefail
BIN=${BIN:-$(pwd)/.bin}
ROWS=${BENCH_BACKUP_ROWS:-6000000}
ROUNDS=${BENCH_BACKUP_ROUNDS:-5}
pgbin=$(dirname "$(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")
work=$(mktemp -d /tmp/berthbk.XXXX)
chmod 755 "$work"
chown postgres: "$work"
as_pg() { runuser -u postgres -- "$@"; }
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  as_pg "$pgbin/pg_ctl" stop -D "$work/data" -m immediate -w >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

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
chmod 700 "$work/berth"

# The controller, on its embedded PostgreSQL, and an agent enrolled to it
# over mTLS on loopback, as deploy-bench.sh starts them. The agent finds the
# benchmark's PostgreSQL by PGHOST/PGPORT, which it passes on to pg_dump and
# pg_restore (agent/internal/backup/proc.go); the controller gets neither.
"$BIN/berth" serve --data-dir "$work/c" --http-addr 127.0.0.1:28380 --grpc-addr 127.0.0.1:27743 2>"$work/c.log" &
pids+=($!)
for _ in $(seq 1 300); do curl -fsS http://127.0.0.1:28380/healthz >/dev/null 2>&1 && break; sleep 0.2; done
printf 'a-long-bench-password\n' | "$BIN/berth" admin create --email bench@example.com --password-stdin --data-dir "$work/c" >/dev/null
export BERTH_ADDR=127.0.0.1:27743 BERTH_CA_FILE=$work/c/ca.crt
BERTH_TOKEN=$("$BIN/berth" token create --email bench@example.com --name bench --data-dir "$work/c")
export BERTH_TOKEN
out=$("$BIN/berth" server add bench -o json)
token=$(printf '%s' "$out" | sed -n 's/.*"token": "\([^"]*\)".*/\1/p')
pin=$(printf '%s' "$out" | sed -n 's/.*"ca_pin": "\([^"]*\)".*/\1/p')
printf '%s\n' "$token" | "$BIN/berth-agent" enroll --controller 127.0.0.1:27743 --token-stdin --ca-pin "$pin" --data-dir "$work/a" >/dev/null
PGHOST=$work PGPORT=5432 "$BIN/berth-agent" run --data-dir "$work/a" --app-dirs "$work" --nginx off 2>"$work/a.log" &
agent_pid=$!
pids+=("$agent_pid")
for _ in $(seq 1 150); do "$BIN/berth" server show bench -o json | grep -q '"status": "online"' && break; sleep 0.2; done
"$BIN/berth" app create benchapp --server bench --repo https://git.example.com/bench.git --path "$work/srv/benchapp" >/dev/null
"$BIN/berth" backup destination add vault --kind local --path "$work/berth" >/dev/null
"$BIN/berth" backup destination test vault >/dev/null
hwm() { sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$agent_pid/status"; }
vmrss() { sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$agent_pid/status"; }
agent_hwm_before=$(hwm)
agent_rss_before=$(vmrss)
# json FIELD: a string or number field of the CLI's indented JSON in $work/out.
json() { sed -n "s/^  \"$1\": \"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}\$/\1/p" "$work/out" | head -1; }
# secs_between T0 T1: seconds between two RFC 3339 times.
secs_between() { awk -v a="$(date -d "$1" +%s.%N)" -v b="$(date -d "$2" +%s.%N)" 'BEGIN { printf "%.3f", b - a }'; }

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
declare -a round_shell round_berth round_shell_cpu round_berth_cpu
shell_best=""; berth_best=""; shell_cpu=""; berth_cpu=""; berth_row_best=""
run_shell() {
  rm -f "$work/shell/dump.age"
  timed shell_pipeline
  shell_size=$(stat -c %s "$work/shell/dump.age")
  if [ -z "$shell_best" ] || lt "$wall" "$shell_best"; then shell_best=$wall; fi
  if [ -z "$shell_cpu" ] || lt "$cpu" "$shell_cpu"; then shell_cpu=$cpu; fi
  round_shell[$r]=$wall round_shell_cpu[$r]=$cpu
  echo "round $r: shell ${wall}s ${cpu} cpu-s" >&2
}
# Berth's CPU: the agent's own user + system seconds (from /proc/PID/stat,
# before and after) plus its children's (pg_dump), which the agent waits
# for; the CLI's are in neither, the controller's and its PostgreSQL's are
# outside both sides' figures as the server's backend is.
agent_cpu() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.3f", ($12 + $13 + $14 + $15) / hz }' "/proc/$agent_pid/stat"; }
run_berth() {
  local c0
  c0=$(agent_cpu)
  timed "$BIN/berth" backup run benchapp --destination vault --kind postgres --source bench --follow -o json
  cpu=$(awk -v a="$c0" -v b="$(agent_cpu)" 'BEGIN { printf "%.3f", b - a }')
  [ "$(json status)" = succeeded ] || { echo "backup not succeeded:" >&2; cat "$work/out" "$work/cmd.log" >&2; exit 1; }
  id=$(json id); size=$(json size_bytes); key=$(json object_key)
  row=$(secs_between "$(json started_at)" "$(json finished_at)")
  [ "$(stat -c %s "$work/berth/$key")" = "$size" ] || { echo "stored object $key is not $size bytes" >&2; exit 1; }
  if [ -z "$berth_best" ] || lt "$wall" "$berth_best"; then berth_best=$wall; fi
  if [ -z "$berth_cpu" ] || lt "$cpu" "$berth_cpu"; then berth_cpu=$cpu; fi
  if [ -z "$berth_row_best" ] || lt "$row" "$berth_row_best"; then berth_row_best=$row; fi
  round_berth[$r]=$wall round_berth_cpu[$r]=$cpu
  echo "round $r: berth ${wall}s (row started->finished ${row}s) ${cpu} cpu-s, agent VmHWM $(hwm) kB" >&2
}
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
# Alternating which goes first, so neither always runs behind the other's
# disk writeback.
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then run_shell; run_berth; else run_berth; run_shell; fi
done
# The restore below reads the last object Berth stored ($id, $key, $size).
agent_hwm_after=$(hwm)

mb() { calc %.1f "$1 / 1000000"; }
rate() { calc %.1f "$raw_dump_bytes / $1 / 1000000"; }
ratio=$(calc %.2f "$shell_best / $berth_best")
cpu_ratio=$(calc %.2f "$shell_cpu / $berth_cpu")
# Per round: the shell's seconds / Berth's (= Berth's throughput / the
# shell's); the median of them, and the rounds in one line.
ratios=() rounds_md=""
for r in $(seq 1 "$ROUNDS"); do
  ratios+=("$(calc %.3f "${round_shell[$r]} / ${round_berth[$r]}")")
  rounds_md+="${rounds_md:+; }$r: shell $(printf '%.1f' "${round_shell[$r]}") s ($(printf '%.1f' "${round_shell_cpu[$r]}")), Berth $(printf '%.1f' "${round_berth[$r]}") s ($(printf '%.1f' "${round_berth_cpu[$r]}")), ratio ${ratios[-1]}"
done
median_ratio=$(printf '%s\n' "${ratios[@]}" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) printf "%.2f", v[(NR + 1) / 2]; else printf "%.2f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }')

# Restore: Berth into a fresh database (it creates it) against by hand.
c0=$(agent_cpu)
timed "$BIN/berth" backup restore "$id" --to bench_berth --follow -o json
berth_restore_cpu=$(awk -v a="$c0" -v b="$(agent_cpu)" 'BEGIN { printf "%.3f", b - a }')
berth_restore=$wall
[ "$(json status)" = succeeded ] || { echo "restore not succeeded:" >&2; cat "$work/out" "$work/cmd.log" >&2; exit 1; }
berth_restore_row=$(secs_between "$(json started_at)" "$(json finished_at)")
agent_hwm_restore=$(hwm)
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
Load average (1, 5, 15 min) when the rounds started: $load_start; at the end: $(cut -d' ' -f1-3 /proc/loadavg) (other work shares the machine's cores).

Berth's side is the product: \`berth serve\` on its embedded PostgreSQL, a \`berth-agent\` enrolled to it over mTLS
on loopback, an app on that server, a local destination (a directory, like the shell pipeline's file), and
\`berth backup run benchapp --destination vault --kind postgres --source bench --follow\` timed from invocation until
the CLI has seen the backup succeed (queue, dispatch over the agent's stream, pg_dump, zstd, age, SHA-256,
fsync, the stored row). $ROUNDS rounds, each running both back to back, alternating which goes first. Database: $(mb "$db_bytes") MB
(table $(mb "$table_bytes") MB, $ROWS rows, built in ${build_s}s); the uncompressed custom-format dump is $(mb "$raw_dump_bytes") MB.

| backup | seconds | dump MB/s | CPU seconds (pg_dump included) | stored MB |
|---|---|---|---|---|
| \`pg_dump -Fc -Z0 \| zstd \| age -r KEY > file; sync file\` | $(printf '%.1f' "$shell_best") | $(rate "$shell_best") | $(printf '%.1f' "$shell_cpu") | $(mb "$shell_size") |
| Berth, \`berth backup run ... --follow\` (agent: zstd, age, SHA-256, fsync, local destination) | $(printf '%.1f' "$berth_best") | $(rate "$berth_best") | $(printf '%.1f' "$berth_cpu") | $(mb "$size") |
| ratio, Berth / shell (target at least 0.9 of the throughput): best against best | | $ratio | $cpu_ratio (shell CPU / Berth CPU) | |
| ratio, Berth / shell: median of the $ROUNDS rounds' paired ratios | | $median_ratio | | |

The rounds (seconds, CPU seconds in brackets): $rounds_md.

The backup's row (started_at to finished_at, from the agent taking the job to the object stored) took
$(printf '%.0f' "$berth_row_best") s at best (whole seconds: the CLI prints the row's times to the second); the rest of the CLI's figure is queueing, dispatch and the CLI's own start.
Berth's CPU seconds are the agent process's user + system time and its waited-for children's (pg_dump)
over the backup, read from /proc/PID/stat; the CLI's and the controller's are not in it.

The agent's peak RSS (VmHWM in /proc/PID/status; it cannot be reset, so it is read before the first backup
too): $(calc %.1f "$agent_hwm_before / 1024") MiB before the backups (resident then: $(calc %.1f "$agent_rss_before / 1024") MiB), $(calc %.1f "$agent_hwm_after / 1024") MiB after $ROUNDS backups (target under 64 MB),
$(calc %.1f "$agent_hwm_restore / 1024") MiB after the restore. pg_dump and pg_restore are separate processes, in neither figure.

| restore into a fresh database | seconds | CPU seconds (pg_restore included) |
|---|---|---|
| \`age -d \| zstd -d \| pg_restore --single-transaction --exit-on-error\` | $(printf '%.1f' "$shell_restore") | $(printf '%.1f' "$shell_restore_cpu") |
| Berth, \`berth backup restore ID --to bench_berth --follow\` (agent: spool, size + SHA-256 check, age, zstd, createdb, the same pg_restore) | $(printf '%.1f' "$berth_restore") | $(printf '%.1f' "$berth_restore_cpu") |

Berth's restore first copies the stored object to a spool file in the agent's data directory and checks its
size and SHA-256 before it decrypts anything (one more sequential read and write of the $(mb "$size") MB object that
the shell side does not do); the restore task's row took $(printf '%.0f' "$berth_restore_row") s (to the second) of the figure above.
Restored rows: Berth $rows_b, shell $rows_s, of $ROWS; Berth's restore has the same rows as the source (md5 of every row): $same.
MD
