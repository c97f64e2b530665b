#!/usr/bin/env bash
# make run: the controller on its embedded PostgreSQL in $DATA_DIR, the first
# admin and a CLI token (created once), and a local agent enrolled for this
# machine. Ctrl-C stops everything it started.
set -euo pipefail
BIN=${BIN:-$(pwd)/.bin}
DATA_DIR=${DATA_DIR:-$(pwd)/.berth}
HTTP_ADDR=${HTTP_ADDR:-127.0.0.1:8080}
GRPC_ADDR=${GRPC_ADDR:-127.0.0.1:7443}
mkdir -p "$DATA_DIR"

pids=()
stop() {
  trap - INT TERM EXIT
  for ((i=${#pids[@]}-1; i>=0; i--)); do kill -TERM "${pids[$i]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

"$BIN/berth" serve --data-dir "$DATA_DIR" --http-addr "$HTTP_ADDR" --grpc-addr "$GRPC_ADDR" 2>>"$DATA_DIR/controller.log" &
pids+=($!)
for _ in $(seq 1 300); do
  curl -fsS "http://$HTTP_ADDR/healthz" >/dev/null 2>&1 && break
  kill -0 "${pids[0]}" 2>/dev/null || { echo "controller failed to start; see $DATA_DIR/controller.log" >&2; tail -5 "$DATA_DIR/controller.log" >&2; exit 1; }
  sleep 0.2
done

export BERTH_ADDR=$GRPC_ADDR BERTH_CA_FILE=$DATA_DIR/ca.crt
if [ ! -s "$DATA_DIR/cli.token" ]; then
  pw=$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')
  printf '%s\n' "$pw" | "$BIN/berth" admin create --email admin@localhost.localdomain --password-stdin --data-dir "$DATA_DIR" >/dev/null
  (umask 077; "$BIN/berth" token create --email admin@localhost.localdomain --name make-run --expires 0 --data-dir "$DATA_DIR" > "$DATA_DIR/cli.token")
  echo "First admin: admin@localhost.localdomain  password: $pw   (shown once)"
fi
export BERTH_TOKEN=$(cat "$DATA_DIR/cli.token")

if [ ! -s "$DATA_DIR/agent/agent.crt" ]; then
  out=$("$BIN/berth" server add local --label source=make-run -o json)
  token=$(printf '%s' "$out" | sed -n 's/.*"token": "\([^"]*\)".*/\1/p')
  pin=$(printf '%s' "$out" | sed -n 's/.*"ca_pin": "\([^"]*\)".*/\1/p')
  printf '%s\n' "$token" | "$BIN/berth-agent" enroll --controller "$GRPC_ADDR" --token-stdin --ca-pin "$pin" --data-dir "$DATA_DIR/agent" >/dev/null
fi
"$BIN/berth-agent" run --data-dir "$DATA_DIR/agent" 2>>"$DATA_DIR/agent.log" &
pids+=($!)

cat <<MSG

Berth is running.
  Web UI:        http://$HTTP_ADDR/login   (admin@localhost.localdomain, the password shown on first start)
  Health:        http://$HTTP_ADDR/healthz
  gRPC API:      $GRPC_ADDR
  Logs:          $DATA_DIR/controller.log, $DATA_DIR/agent.log

Use the CLI from another shell:
  export BERTH_ADDR=$GRPC_ADDR BERTH_CA_FILE=$DATA_DIR/ca.crt BERTH_TOKEN=\$(cat $DATA_DIR/cli.token)
  $BIN/berth server list

Ctrl-C stops the controller, its PostgreSQL and the agent.
MSG
wait -n "${pids[@]}" || true
echo "a process exited; stopping" >&2
