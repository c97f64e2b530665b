#!/usr/bin/env bash
# Redeploy under load (issue 16 §5): a real controller and agent on this
# machine, an app whose `web` process (--port, --health-path /up) is a small
# HTTP server, and wrk sending requests in a closed loop to the app's
# upstream (127.0.0.1:UPSTREAM_PORT, from `berth app show -o json`) while
# nothing happens, then across back-to-back redeploys and a rollback, then
# while nothing happens again, all in one run. Each redeploy starts a new
# instance on a fresh port, waits for /up, points the upstream at it and
# stops the old one gracefully: a failed request (a non-2xx answer or a
# socket error: connect, read, write, timeout) is one a user would have seen.
# Prints one markdown section.
#
# Every request goes to 127.0.0.1; wrk runs are bounded by -d and stop by
# themselves (the switch window is ended early, by SIGINT, when its deploys
# are done).
set -euo pipefail
# EPOCHREALTIME and awk read decimals with a point.
export LC_ALL=C
STEADY=${BENCH_REDEPLOY_STEADY_SECONDS:-20}
REDEPLOYS=${BENCH_REDEPLOYS:-10}
THREADS=${BENCH_REDEPLOY_THREADS:-1}
CONNS=${BENCH_REDEPLOY_CONNECTIONS:-8}
# The app's stop grace: the old instance gets this long to finish what it
# serves after SIGTERM (it needs milliseconds).
GRACE=${BENCH_REDEPLOY_GRACE:-10s}
BIN=${BIN:-$(pwd)/.bin}
HTTP_PORT=${BENCH_REDEPLOY_HTTP_PORT:-28180}
GRPC_PORT=${BENCH_REDEPLOY_GRPC_PORT:-27543}

die() { echo "redeploy-bench: $*" >&2; exit 1; }
[ -x "$BIN/berth" ] && [ -x "$BIN/berth-agent" ] || die "no $BIN/berth or $BIN/berth-agent: run make build (or set BIN)"
command -v go >/dev/null || die "go is needed to build the benchmark's web app"
# The load generator: wrk from the distribution, installed when missing
# (as scripts/ensure-deps.sh does for the test tools).
if ! command -v wrk >/dev/null; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    die "missing wrk: install it (Debian/Ubuntu: sudo apt-get install -y wrk) and run again"
  fi
  echo "installing wrk ..." >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null
fi

work=$(mktemp -d /tmp/berthrb.XXXX)
chmod 755 "$work"
pids=()
wrkpid=
# The app's user, made fresh (the agent refuses to run an app as root).
appuser=berthrdb
# stop_app: the app's processes, their supervisors and its upstream outlive
# the agent by design (issue 16 §1), so the app is deleted through Berth
# while the agent runs, which stops them all. What is left after that
# (nothing, when the delete works) is ended by process id: the processes
# whose command line names this run's directory (the app's binary, the
# supervisors and upstream under the agent's data directory).
stop_app() {
  [ -n "${BERTH_TOKEN:-}" ] || return 0
  [ -n "${app:-}" ] || return 0
  timeout 60 "$BIN/berth" app delete "$app" >/dev/null 2>&1 || true
}
ours() {
  local f p
  for f in /proc/[0-9]*/cmdline; do
    p=${f#/proc/}
    p=${p%/cmdline}
    [ "$p" = $$ ] && continue
    { tr '\0' ' ' <"$f"; } 2>/dev/null | grep -qF "$work/" && echo "$p"
  done
  return 0
}
cleanup() {
  if [ -n "$wrkpid" ]; then kill "$wrkpid" 2>/dev/null || true; fi
  stop_app
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  local left
  for _ in $(seq 1 50); do
    left=$(ours)
    [ -z "$left" ] && break
    for p in $left; do kill "$p" 2>/dev/null || true; done
    sleep 0.1
  done
  for p in $(ours); do kill -KILL "$p" 2>/dev/null || true; done
  userdel -r "$appuser" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
# Left by a run that was itself killed (its processes, if any, are in
# another directory: userdel then refuses, and says so).
if id "$appuser" >/dev/null 2>&1; then
  userdel -r "$appuser" || die "user $appuser is left from an earlier run; end its processes and run again"
fi
useradd --create-home --shell /bin/bash "$appuser"

# The web app: answers every path with 200 and a short body (/up is its
# health check) on 127.0.0.1:$PORT, and on SIGTERM stops accepting, lets
# the requests in flight finish and exits, as a well-behaved app does.
mkdir "$work/webapp"
cat > "$work/webapp/main.go" <<'GO'
package main

import (
	"context"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		log.Fatal("PORT is not set")
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok " + port + "\n"))
	})
	srv := &http.Server{Addr: "127.0.0.1:" + port, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	log.Printf("listening on %s", srv.Addr)
	select {
	case err := <-errc:
		log.Fatal(err)
	case s := <-stop:
		log.Printf("%s: shutting down", s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Fatal(err)
	}
}
GO
printf 'module benchwebapp\n\ngo 1.22\n' > "$work/webapp/go.mod"
(cd "$work/webapp" && CGO_ENABLED=0 GOWORK=off GOFLAGS=-mod=mod go build -o "$work/webapp/webapp" .)
chmod 755 "$work/webapp" "$work/webapp/webapp"

now() { date +%s%N; }
# pct FILE P: the P-th percentile (nearest rank) of the numbers in FILE, in ms.
pct() { sort -n "$1" | awk -v p="$2" '{ a[NR] = $1 } END { i = int((p * NR + 99) / 100); if (i < 1) i = 1; printf "%.0f", a[i] / 1e6 }'; }

"$BIN/berth" serve --data-dir "$work/c" --http-addr "127.0.0.1:$HTTP_PORT" --grpc-addr "127.0.0.1:$GRPC_PORT" --heartbeat-interval 1s 2>"$work/c.log" &
pids+=($!)
for _ in $(seq 1 300); do curl -fsS "http://127.0.0.1:$HTTP_PORT/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fsS "http://127.0.0.1:$HTTP_PORT/healthz" >/dev/null || die "the controller did not start: $(tail -n 5 "$work/c.log")"
printf 'a-long-bench-password\n' | "$BIN/berth" admin create --email bench@example.com --password-stdin --data-dir "$work/c" >/dev/null
export BERTH_ADDR=127.0.0.1:$GRPC_PORT BERTH_CA_FILE=$work/c/ca.crt
BERTH_TOKEN=$("$BIN/berth" token create --email bench@example.com --name bench --data-dir "$work/c")
export BERTH_TOKEN
out=$("$BIN/berth" server add bench -o json)
token=$(printf '%s' "$out" | sed -n 's/.*"token": "\([^"]*\)".*/\1/p')
pin=$(printf '%s' "$out" | sed -n 's/.*"ca_pin": "\([^"]*\)".*/\1/p')
printf '%s\n' "$token" | "$BIN/berth-agent" enroll --controller "127.0.0.1:$GRPC_PORT" --token-stdin --ca-pin "$pin" --data-dir "$work/a" >/dev/null
"$BIN/berth-agent" run --data-dir "$work/a" --app-dirs "$work" 2>"$work/a.log" &
pids+=($!)
for _ in $(seq 1 150); do "$BIN/berth" server show bench -o json | grep -q '"status": "online"' && break; sleep 0.2; done
"$BIN/berth" server show bench -o json | grep -q '"status": "online"' || die "the agent did not connect: $(tail -n 5 "$work/a.log")"

# The app: a one-file repository (releases hold nothing the web process
# needs: it runs the binary built above), a deploy script with nothing to
# build, and the web process.
git init -q -b main "$work/repo"
echo v1 > "$work/repo/index.html"
git -C "$work/repo" -c user.name=b -c user.email=b@example.com add -A
git -C "$work/repo" -c user.name=b -c user.email=b@example.com commit -q -m bench
printf 'echo nothing to build\n' > "$work/deploy.sh"
# The controller gives an app the lowest upstream port of 10000-19999 that
# no other app of the server has; it cannot know what else listens on the
# host, and on a machine shared with other test runs something often does
# (a deploy then fails: "bind: address already in use"). So apps are made
# until one gets a port that is free here; the ones before it, never
# deployed, hold the busy ports.
app=
for i in $(seq 1 20); do
  name=webbench$i
  "$BIN/berth" app create "$name" --server bench --repo "$work/repo" --path "$work/srv/$name" --user "$appuser" \
    --deploy-script "$work/deploy.sh" --keep 3 >/dev/null
  "$BIN/berth" app process add "$name" web --command "exec $work/webapp/webapp" --port --health-path /up --stop-grace "$GRACE" >/dev/null
  port=$("$BIN/berth" app show "$name" -o json | sed -n 's/.*"upstream_port": \([0-9][0-9]*\).*/\1/p' | head -n1)
  [ -n "$port" ] && [ "$port" != 0 ] || die "app $name has no upstream port after process add --port"
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "upstream port $port is in use on this machine; trying another app" >&2
    continue
  fi
  app=$name
  break
done
[ -n "$app" ] || die "20 upstream ports in a row are in use on this machine"
"$BIN/berth" deploy "$app" --follow >"$work/deploy0.log" 2>&1 || die "the first deploy failed: $(tail -n 20 "$work/deploy0.log")"

upstream=
for _ in $(seq 1 150); do
  upstream=$("$BIN/berth" app show "$app" -o json | sed -n 's/.*"upstream_port": \([0-9][0-9]*\).*/\1/p' | head -n1)
  [ -n "$upstream" ] && [ "$upstream" != 0 ] && curl -fsS "http://127.0.0.1:$upstream/" >/dev/null 2>&1 && break
  sleep 0.2
done
[ -n "$upstream" ] && [ "$upstream" != 0 ] || die "the app has no upstream port: $("$BIN/berth" app show "$app" 2>&1 | tail -n 20)"
curl -fsS "http://127.0.0.1:$upstream/" >/dev/null || die "the app's upstream 127.0.0.1:$upstream does not answer: $("$BIN/berth" app show "$app" 2>&1 | tail -n 20)"
url="http://127.0.0.1:$upstream/"

# wrk's report: requests, non-2xx answers (counted per thread: wrk's own
# status error counts only >= 400), socket errors and latency percentiles.
cat > "$work/report.lua" <<'LUA'
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) non2xx = 0 end
function response(status, headers, body)
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
end
function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do bad = bad + t:get("non2xx") end
  local e = summary.errors
  io.write(string.format("RESULT requests=%d seconds=%.1f non2xx=%d connect=%d read=%d write=%d timeout=%d p50=%.2f p99=%.2f max=%.2f\n",
    summary.requests, summary.duration / 1e6, bad, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
LUA
wrkargs=(-t "$THREADS" -c "$CONNS" -s "$work/report.lua")
# field NAME FILE: a field of wrk's RESULT line.
field() { sed -n "s/.*RESULT.* $1=\([^ ]*\).*/\1/p" "$2"; }

# stamped LOG CMD...: CMD's output (stderr too) into LOG, each line after
# the time it arrived (seconds.microseconds); CMD's exit status.
stamped() {
  local log=$1 line
  shift
  "$@" 2>&1 | while IFS= read -r line; do printf '%s %s\n' "$EPOCHREALTIME" "$line"; done >"$log"
}
# timed_move LOG OUT CMD...: runs a deploy or rollback (CMD, with --follow)
# and appends its length (ns) to OUT, and the length of its process move to
# switch.ns: from the log's "==> processes" line reaching the CLI (the new
# instance starts, /up answers, the upstream switches, the old one stops)
# to the command's exit.
timed_move() {
  local log=$1 out=$2 t0 t1 tp
  shift 2
  t0=$EPOCHREALTIME
  stamped "$log" "$@" || return 1
  t1=$EPOCHREALTIME
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f\n", (b - a) * 1e9 }' >>"$out"
  tp=$(awk '$2 == "==>" && $3 == "processes" { print $1; exit }' "$log")
  if [ -n "$tp" ]; then awk -v a="$tp" -v b="$t1" 'BEGIN { printf "%.0f\n", (b - a) * 1e9 }' >>"$work/switch.ns"; fi
}

# Warm-up, unmeasured: the app, the upstream and wrk's connections.
wrk "${wrkargs[@]}" -d 3s "$url" >/dev/null

load_before=$(uptime)
wrk "${wrkargs[@]}" -d "${STEADY}s" "$url" >"$work/steady1.txt"

# The switch window: wrk runs (at most 30 minutes) while the redeploys and
# a rollback run back to back, and is stopped by SIGINT (wrk then prints its
# report) once the last one is done.
: > "$work/deploy.ns"
: > "$work/switch.ns"
wrk "${wrkargs[@]}" -d 1800s "$url" >"$work/switch.txt" &
wrkpid=$!
# wrk connects before it sends: its first requests go out within
# milliseconds, so the window opens before the first deploy; it is kept
# short on either side so that the window is mostly deploys.
sleep 0.2
for i in $(seq 1 "$REDEPLOYS"); do
  timed_move "$work/deploy$i.log" "$work/deploy.ns" "$BIN/berth" deploy "$app" --follow ||
    { kill -INT "$wrkpid"; die "redeploy $i failed: $(tail -n 20 "$work/deploy$i.log")"; }
done
timed_move "$work/rollback.log" "$work/rollback.ns" "$BIN/berth" rollback "$app" --follow ||
  { kill -INT "$wrkpid"; die "the rollback failed: $(tail -n 20 "$work/rollback.log")"; }
rollback_ms=$(($(cat "$work/rollback.ns") / 1000000))
sleep 0.2
kill -INT "$wrkpid"
wait "$wrkpid" || true
wrkpid=

wrk "${wrkargs[@]}" -d "${STEADY}s" "$url" >"$work/steady2.txt"
load_after=$(uptime)

# The web process after it all: still one instance, and how often it was
# started (restarts would mean a crash, not a deploy).
show=$("$BIN/berth" app show "$app" 2>&1 || true)

for f in steady1 switch steady2; do
  grep -q RESULT "$work/$f.txt" || die "wrk printed no report for $f: $(cat "$work/$f.txt")"
done
row() { # row LABEL FILE
  local f=$2 failed
  failed=$(($(field non2xx "$f") + $(field connect "$f") + $(field read "$f") + $(field write "$f") + $(field timeout "$f")))
  echo "| $1 | $(field seconds "$f") s | $(field requests "$f") | **$failed** ($(field non2xx "$f") non-2xx; socket: $(field connect "$f") connect, $(field read "$f") read, $(field write "$f") write, $(field timeout "$f") timeout) | $(field p50 "$f") ms | $(field p99 "$f") ms | $(field max "$f") ms |"
}
# Each deploy's log says it moved the processes; a deploy that did not
# would have measured nothing.
moved=0
for f in "$work"/deploy[1-9]*.log "$work/rollback.log"; do
  grep -q '^[0-9.]* ==> processes$' "$f" && moved=$((moved + 1))
done
total_failed=0
for f in steady1 switch steady2; do
  total_failed=$((total_failed + $(field non2xx "$work/$f.txt") + $(field connect "$work/$f.txt") + $(field read "$work/$f.txt") + $(field write "$work/$f.txt") + $(field timeout "$work/$f.txt")))
done

echo
echo "## Redeploy under load"
echo
echo "\`BENCH_REDEPLOYS=$REDEPLOYS BENCH_REDEPLOY_STEADY_SECONDS=$STEADY BENCH_REDEPLOY_THREADS=$THREADS BENCH_REDEPLOY_CONNECTIONS=$CONNS scripts/redeploy-bench.sh\`"
echo "(run by \`make bench\`): a real controller and agent on this machine; an app whose \`web\` process"
echo "(\`berth app process add APP web --command ... --port --health-path /up --stop-grace $GRACE\`) is a"
echo "small Go HTTP server that answers every request with 200 and on SIGTERM finishes what it serves and exits."
echo "\`wrk -t$THREADS -c$CONNS\` (keep-alive connections, a closed loop: each sends its next request when"
echo "the last is answered) sends \`GET /\` to the app's upstream, 127.0.0.1:UPSTREAM_PORT, in three windows"
echo "of one run: steady state; $REDEPLOYS redeploys (\`berth deploy --follow\`) and a rollback back to back, each"
echo "starting a new instance on a fresh port, waiting for /up, switching the upstream and stopping the old"
echo "one; steady state again. Failed = non-2xx answers + socket errors (connect, read, write, and wrk's"
echo "2 s timeout); the target is 0. The machine has $(nproc) cores shared with other work; the load generator,"
echo "the app, the agent and the controller share them. Its load (\`uptime\`: 1, 5 and 15-minute"
echo "averages) was${load_before#*load average:} before the first window and${load_after#*load average:} after the last."
echo
echo "| window | length | requests | failed | p50 | p99 | max |"
echo "|---|---|---|---|---|---|---|"
row "steady state, before" "$work/steady1.txt"
row "during $REDEPLOYS redeploys and a rollback" "$work/switch.txt"
row "steady state, after" "$work/steady2.txt"
echo
echo "A redeploy (\`berth deploy --follow\`, from invoking it to its exit, the process switch included) took"
echo "$(pct "$work/deploy.ns" 50) ms (p50) and $(pct "$work/deploy.ns" 100) ms (max) under this load; the rollback $rollback_ms ms."
switch_share=$(awk -v s="$(field seconds "$work/switch.txt")" '{ t += $1 } END { printf "%.0f", t / 1e9 / s * 100 }' "$work/switch.ns")
echo "Of that, the process move (from the deploy log's \`==> processes\` line reaching the CLI to its exit: the new"
echo "instance starts, answers /up, the upstream switches to it, the old one is stopped) took $(pct "$work/switch.ns" 50) ms (p50) and"
echo "$(pct "$work/switch.ns" 100) ms (max): moves were under way for about $switch_share% of the window \"during\" above."
echo "Failed requests in all three windows: $total_failed. Deploy logs that moved the web process to the new"
echo "release (step \`processes\`): $moved of $((REDEPLOYS + 1))."
echo
echo "The web process afterwards (\`berth app show $app\`):"
echo
echo '```'
printf '%s\n' "$show" | awk '/^PROCESS/ { on = 1 } on && (/^$/ || /^[a-z]+:/) { exit } on { print }' | head -n 10
echo '```'
