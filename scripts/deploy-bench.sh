#!/usr/bin/env bash
# Deploy dispatch latency: from invoking `berth deploy` to the first line of
# the app's deploy script running on the server (the script's first command
# stamps the time), against running one command with `ssh localhost`, fresh
# and over an open ControlMaster connection, on this machine. Both sides run
# the command as the same fresh unprivileged user whose dotfiles are the
# distribution's defaults (/etc/skel), so neither pays for a heavy shell
# start-up the other skips; a fresh ssh as the invoking user (root here, with
# whatever its ~/.bashrc loads) is shown beside for reference. The deploy
# path includes what a real deploy does before the script: queue, dispatch
# over the agent's stream, finding the commit (and fetching it after a
# push), checkout into a new release, .env. Prints one markdown section.
set -euo pipefail
# p99 of 100 runs is the second slowest, which on a shared VM swings
# with one hiccup; 300 runs make it the third slowest of three times as many.
N=${BENCH_DEPLOY_RUNS:-300}
W=${BENCH_DEPLOY_WARMUP:-20}
BIN=${BIN:-$(pwd)/.bin}
work=$(mktemp -d /tmp/berthdb.XXXX)
chmod 755 "$work"
pids=()
# The user both sides run the command as: made fresh from /etc/skel.
benchuser=berthbench
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  userdel -r "$benchuser" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
userdel -r "$benchuser" 2>/dev/null || true
useradd --create-home --shell /bin/bash "$benchuser"
# useradd leaves the password locked ("!"), and sshd without PAM refuses a
# locked account even for a key: "*" has no password but is not locked.
usermod -p '*' "$benchuser"
benchhome=$(getent passwd "$benchuser" | cut -d: -f6)
now() { date +%s%N; }
# pct FILE P: the P-th percentile (nearest rank) of the numbers in FILE, in ms.
pct() { sort -n "$1" | awk -v p="$2" '{ a[NR] = $1 } END { i = int((p * NR + 99) / 100); if (i < 1) i = 1; printf "%.1f", a[i] / 1e6 }'; }

"$BIN/berth" serve --data-dir "$work/c" --http-addr 127.0.0.1:28080 --grpc-addr 127.0.0.1:27443 --heartbeat-interval 1s 2>"$work/c.log" &
pids+=($!)
for _ in $(seq 1 300); do curl -fsS http://127.0.0.1:28080/healthz >/dev/null 2>&1 && break; sleep 0.2; done
printf 'a-long-bench-password\n' | "$BIN/berth" admin create --email bench@example.com --password-stdin --data-dir "$work/c" >/dev/null
export BERTH_ADDR=127.0.0.1:27443 BERTH_CA_FILE=$work/c/ca.crt
BERTH_TOKEN=$("$BIN/berth" token create --email bench@example.com --name bench --data-dir "$work/c")
export BERTH_TOKEN
out=$("$BIN/berth" server add bench -o json)
token=$(printf '%s' "$out" | sed -n 's/.*"token": "\([^"]*\)".*/\1/p')
pin=$(printf '%s' "$out" | sed -n 's/.*"ca_pin": "\([^"]*\)".*/\1/p')
printf '%s\n' "$token" | "$BIN/berth-agent" enroll --controller 127.0.0.1:27443 --token-stdin --ca-pin "$pin" --data-dir "$work/a" >/dev/null
"$BIN/berth-agent" run --data-dir "$work/a" --app-dirs "$work" 2>"$work/a.log" &
pids+=($!)
for _ in $(seq 1 150); do "$BIN/berth" server show bench -o json | grep -q '"status": "online"' && break; sleep 0.2; done

# A small repository; the deploy script's first command stamps the time.
git init -q -b main "$work/repo"
echo v1 > "$work/repo/index.html"
git -C "$work/repo" -c user.name=b -c user.email=b@example.com add -A
git -C "$work/repo" -c user.name=b -c user.email=b@example.com commit -q -m bench
printf 'date +%%s%%N >> %s\n' "$work/marks" > "$work/deploy.sh"
: > "$work/marks"
chown "$benchuser" "$work/marks"
"$BIN/berth" app create benchapp --server bench --repo "$work/repo" --path "$work/srv/benchapp" --user "$benchuser" \
  --deploy-script "$work/deploy.sh" --keep 2 >/dev/null
sha=$(git -C "$work/repo" rev-parse HEAD)

# sshd on a loopback port with a throwaway key.
ssh-keygen -q -t ed25519 -N '' -f "$work/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$work/id"
cp "$work/id.pub" "$work/authorized_keys"
install -d -m 700 -o "$benchuser" "$benchhome/.ssh"
install -m 600 -o "$benchuser" "$work/id.pub" "$benchhome/.ssh/authorized_keys"
cat > "$work/sshd_config" <<CFG
Port 27022
ListenAddress 127.0.0.1
HostKey $work/host_key
PidFile $work/sshd.pid
AuthorizedKeysFile .ssh/authorized_keys $work/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
CFG
mkdir -p /run/sshd
/usr/sbin/sshd -D -f "$work/sshd_config" 2>"$work/sshd.log" &
pids+=($!)
for _ in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/27022) 2>/dev/null && break; sleep 0.1; done
sshopts=(-i "$work/id" -p 27022 -o StrictHostKeyChecking=no -o UserKnownHostsFile="$work/known_hosts" -o BatchMode=yes -o LogLevel=ERROR)
ssh "${sshopts[@]}" -o ControlMaster=yes -o ControlPath="$work/cm" -o ControlPersist=900 -fN "$benchuser@127.0.0.1"

# One run of each path in turn, so that a machine that speeds up or slows
# down during the benchmark (a shared VM does) weighs on all of them alike.
# The deploy script's first command stamps the time into a fresh file.
deploy_once() { # deploy_once OUT [berth deploy flags...]
  local out=$1
  shift
  : > "$work/marks"
  local t0
  t0=$(now)
  "$BIN/berth" deploy benchapp "$@" --follow >/dev/null 2>&1
  echo $(($(head -n1 "$work/marks") - t0)) >> "$out"
}
ssh_once() { # ssh_once OUT USER [ssh options...]
  local out=$1 user=$2
  shift 2
  local t0 t1
  t0=$(now)
  t1=$(ssh "${sshopts[@]}" "$@" "$user@127.0.0.1" 'date +%s%N')
  echo $((t1 - t0)) >> "$out"
}
# timed OUT CMD...: from a stamp before CMD to one after it.
timed() {
  local out=$1
  shift
  local t0
  t0=$(now)
  "$@" >/dev/null
  echo $(($(now) - t0)) >> "$out"
}
# push: a new commit on the branch, outside the timed part.
push() {
  date +%s%N > "$work/repo/pushed"
  git -C "$work/repo" add pushed
  git -C "$work/repo" -c user.name=b -c user.email=b@example.com commit -q -m push
}
# Warm-up, unmeasured: the first deploy clones the mirror, and the rounds
# after it run while the controller and its PostgreSQL, both started
# seconds ago on a fresh cluster, still fill their caches (their first ten
# seconds here had deploys up to twice their later slowest). A
# controller in use has been running for days: what is measured is that.
load_before=$(uptime)
for _ in $(seq 1 "$W"); do
  push
  deploy_once "$work/warm.ns"
  deploy_once "$work/warm.ns" --commit "$sha"
  ssh_once "$work/warm.ns" "$benchuser"
  ssh_once "$work/warm.ns" "$benchuser" -o ControlPath="$work/cm"
  ssh_once "$work/warm.ns" "$(id -un)"
done
: > "$work/deploy.ns"
: > "$work/pushed.ns"
: > "$work/pinned.ns"
: > "$work/fresh.ns"
: > "$work/cm.ns"
: > "$work/self.ns"
: > "$work/proc.ns"
: > "$work/cli.ns"
for _ in $(seq 1 "$N"); do
  # The branch head after a push: queue, dispatch, git fetch of the new
  # commit, checkout, .env.
  push
  deploy_once "$work/pushed.ns"
  # The branch head again (a redeploy, one for changed settings or
  # variables): the repository is on this machine, so the agent reads
  # where its branch is and, the mirror having it there, skips the fetch.
  deploy_once "$work/deploy.ns"
  # The commit pinned (a webhook's push, a rollforward): the mirror already
  # holds it, so the agent skips the fetch.
  deploy_once "$work/pinned.ns" --commit "$sha"
  ssh_once "$work/fresh.ns" "$benchuser"
  ssh_once "$work/cm.ns" "$benchuser" -o ControlPath="$work/cm"
  ssh_once "$work/self.ns" "$(id -un)"
  # What starting a process costs here, for the figures below: one
  # `date` (stamp to stamp), and the CLI starting and exiting.
  timed "$work/proc.ns" true
  timed "$work/cli.ns" "$BIN/berth" version
done
load_after=$(uptime)
ssh "${sshopts[@]}" -o ControlPath="$work/cm" -O exit "$benchuser@127.0.0.1" 2>/dev/null || true

echo
echo "## Deploy dispatch latency"
echo
echo "\`BENCH_DEPLOY_RUNS=$N BENCH_DEPLOY_WARMUP=$W scripts/deploy-bench.sh\`: a real controller and agent on this machine; from"
echo "invoking \`berth deploy\` to the deploy script's first line (stamped by the script), against one"
echo "command over \`ssh\` to a loopback sshd. Both run the command as the same fresh user ($benchuser, made"
echo "by \`useradd --create-home\` from the distribution's /etc/skel, so its shell start-up is the default one)."
echo "The paths take turns, one run each per round, after $W rounds unmeasured (the controller and its"
echo "PostgreSQL were started seconds before). A deploy includes queueing, dispatch over the agent's stream,"
echo "finding the commit (a local repository here), checkout into a new release and .env. Four processes"
echo "start on the way: the \`berth\` CLI, \`git archive\` of the release, bash for the script and the script's"
echo "first command; on this machine starting one (\`date\`, stamp to stamp) takes $(pct "$work/proc.ns" 50) ms (p50) and"
echo "$(pct "$work/proc.ns" 99) ms (p99), and the CLI starting and exiting (\`berth version\`) $(pct "$work/cli.ns" 50) ms and $(pct "$work/cli.ns" 99) ms. After a"
echo "push the agent also fetches the new commit: four more processes (fetch, sh, upload-pack, its rev-list check)."
echo "The machine has $(nproc) cores and is shared with other work: its load (\`uptime\`: 1, 5 and 15-minute"
echo "averages) was${load_before#*load average:} when the warm-up began and${load_after#*load average:} when the measured rounds ended."
echo
echo "| path ($N runs each) | p50 | p99 |"
echo "|---|---|---|"
echo "| \`berth deploy\` of the branch head, unchanged (a redeploy: no fetch needed) | $(pct "$work/deploy.ns" 50) ms | $(pct "$work/deploy.ns" 99) ms |"
echo "| \`berth deploy --commit SHA\` (in the mirror already: no fetch) | $(pct "$work/pinned.ns" 50) ms | $(pct "$work/pinned.ns" 99) ms |"
echo "| \`berth deploy\` of the branch head after a push (git fetch of the new commit) | $(pct "$work/pushed.ns" 50) ms | $(pct "$work/pushed.ns" 99) ms |"
echo "| \`ssh $benchuser@localhost CMD\`, fresh connection | $(pct "$work/fresh.ns" 50) ms | $(pct "$work/fresh.ns" 99) ms |"
echo "| \`ssh $benchuser@localhost CMD\` over an open ControlMaster | $(pct "$work/cm.ns" 50) ms | $(pct "$work/cm.ns" 99) ms |"
echo "| \`ssh $(id -un)@localhost CMD\`, fresh (for reference: this user's own dotfiles) | $(pct "$work/self.ns" 50) ms | $(pct "$work/self.ns" 99) ms |"
# ratio A B P: how many times B's P-th percentile is A's.
ratio() { awk -v a="$(pct "$1" "$3")" -v b="$(pct "$2" "$3")" 'BEGIN { printf "%.1fx", b / a }'; }
echo
echo "Against a fresh ssh connection as the same user, \`berth deploy\` of the unchanged branch head is"
echo "$(ratio "$work/deploy.ns" "$work/fresh.ns" 50) as fast at p50 and $(ratio "$work/deploy.ns" "$work/fresh.ns" 99) at p99 (a pinned commit $(ratio "$work/pinned.ns" "$work/fresh.ns" 50) and $(ratio "$work/pinned.ns" "$work/fresh.ns" 99); one that fetches a push"
echo "$(ratio "$work/pushed.ns" "$work/fresh.ns" 50) and $(ratio "$work/pushed.ns" "$work/fresh.ns" 99)). Against an open ControlMaster (one command over a connection"
echo "already made) the ratio is $(ratio "$work/deploy.ns" "$work/cm.ns" 50), $(ratio "$work/pinned.ns" "$work/cm.ns" 50) and $(ratio "$work/pushed.ns" "$work/cm.ns" 50) at p50: below 1.0x means the"
echo "ControlMaster is faster. A deploy does more than run one command (it queues, checks the commit out into a"
echo "new release and writes .env), and is durable and audited; an ssh command is none of that."
