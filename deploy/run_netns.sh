#!/usr/bin/env bash
# FedBip across hosts, on one Linux machine: provision a TLS project, then run the server, three client sites and the
# admin on five "hosts" -- network namespaces on a private LAN (a bridge in a sixth namespace, veth pairs) that this
# script creates and removes itself; no process, address or route is added to the machine's own network. Each host
# has its own workspace (its startup kit), its own installed copy of the package (a wheel built from this checkout,
# `pip install --target`), its own asset copy and home, and resolves the server's name through its own /etc/hosts
# (/etc/netns/<namespace>/hosts, which `ip netns exec` mounts). The admin exports the job folder and uses NVFlare's
# CLI: `nvflare job submit`, `nvflare job wait`, `nvflare job download`, `nvflare system shutdown`.
# Exits 0 only if every job finished as expected, every site holds its personalized adapter and the audit shows that
# each site received only its own models (the log prints who sent what to whom, by digest).
#
#   sudo deploy/run_netns.sh                          # FedBip, 2 rounds (work folder: a fresh /tmp/fedbip_netns.XXXX)
#   sudo deploy/run_netns.sh --fault site-restart     # site-2 crashes in round 1 and restarts; a continuation job
#   sudo deploy/run_netns.sh --fault server-resume    # uninterrupted job, then the server crashes and resumes
#
# Needs root and iproute2 (`ip netns`). FEDBIP_DEPLOY_DIR (work folder), FEDBIP_NETNS_PREFIX (namespace names),
# FEDBIP_NETNS_SUBNET (first three octets, default 10.231.0), FEDBIP_NUM_ROUNDS and PYTHON (an environment with
# NVFlare and the package's dependencies; the package itself comes from the wheel) change the defaults.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
PY="${PYTHON:-$REPO/.venv/bin/python}"
BIN="$(dirname "$PY")"
FAULT=none
while [[ $# -gt 0 ]]; do
  case "$1" in
    --fault) FAULT="${2:-}"; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$FAULT" in
  none | site-restart | server-resume) ;;
  *) echo "--fault: none, site-restart or server-resume" >&2; exit 2 ;;
esac

missing=()
[[ "$(id -u)" == 0 ]] || missing+=("root (creating network namespaces needs CAP_SYS_ADMIN and CAP_NET_ADMIN)")
command -v ip > /dev/null || missing+=("the ip command (iproute2)")
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "run_netns.sh needs: ${missing[*]}" >&2
  exit 3
fi

WORK="${FEDBIP_DEPLOY_DIR:-$(mktemp -d /tmp/fedbip_netns.XXXX)}"
PREFIX="${FEDBIP_NETNS_PREFIX:-fbn$$}"
NET="${FEDBIP_NETNS_SUBNET:-10.231.0}"
NUM_ROUNDS="${FEDBIP_NUM_ROUNDS:-2}"
FL_PORT=8002
ADMIN_PORT=8003
SERVER=fedbip-server
ADMIN=admin@fedbip.local
SITES=(site-1 site-2 site-3)
ASSETS="${FEDBIP_ASSETS_DIR:-$HOME/.cache/fedbip_nvflare}"
if [[ ! -f "$ASSETS/models/all-MiniLM-L6-v2/config.json" ]]; then
  echo "no offline model in $ASSETS: run \`python -m fedbip_nvflare.assets fetch\` (or set FEDBIP_ASSETS_DIR)" >&2
  exit 3
fi
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
KITS="$WORK/provision/fedbip_netns/prod_00"
TIMES="$WORK/wall_times.txt"

# shellcheck source=deploy/netns_lib.sh
source "$HERE/netns_lib.sh"
hosts_init
trap net_down EXIT
trap 'exit 143' TERM INT HUP  # run net_down on these too

T0=$SECONDS
stamp() {  # record the wall time of a stage: "<stage> <seconds>"
  echo "$1 $((SECONDS - T0))" >> "$TIMES"
  echo "== $(date +%T) $1 after $((SECONDS - T0)) s"
  T0=$SECONDS
}

echo "== work folder $WORK; hosts: $(for p in $(participants); do printf '%s=%s ' "$p" "${HOST_ADDR[$p]}"; done)"
: > "$TIMES"
# project admin: provision a TLS project whose server is named like its host
sed -e "s/name: localhost/name: $SERVER/" -e "s/name: fedbip_local/name: fedbip_netns/" \
  "$HERE/project.yml" > "$WORK/project.yml"
(cd "$WORK" && "$BIN/nvflare" provision -p "$WORK/project.yml" -w "$WORK/provision" --force > "$WORK/provision.log")
# the release every host installs: a wheel of this checkout's files (tracked and untracked, not ignored)
mkdir -p "$WORK/src"
if git -C "$REPO" rev-parse --is-inside-work-tree > /dev/null 2>&1; then
  git -C "$REPO" ls-files -co --exclude-standard -z | (cd "$REPO" && tar --null --ignore-failed-read -T - -cf -) |
    tar -xf - -C "$WORK/src"
else
  cp -a "$REPO/." "$WORK/src/"
fi
"$BIN/python3" -m pip wheel -q --no-deps --no-build-isolation --no-index -w "$WORK/wheel" "$WORK/src" > /dev/null
WHEEL="$(ls "$WORK"/wheel/fedbip_nvflare-*.whl)"
stamp provision-and-wheel

net_up
mkdir -p "$WORK/logs"
install_hosts "$WHEEL"
cp "$HERE/submit.py" "$WORK/homes/$ADMIN/submit.py"  # the admin's tool, run with the admin's package copy
stamp hosts-installed

wait_for_sites() {  # until the server lists every named site as connected
  local status=""
  for _ in $(seq 120); do
    status="$(admin_cli --format json system status client 2>/dev/null || true)"
    if "$BIN/python3" "$HERE/netns_cli.py" connected "$status" "$@" 2>/dev/null; then return 0; fi
    sleep 2
  done
  echo "sites not connected: $*; last status: $status" >&2
  return 1
}

start_federation() {
  host_start "$SERVER"
  wait_for_server
  for site in "${SITES[@]}"; do host_start "$site"; done
  wait_for_sites "${SITES[@]}"
}

export_job() {  # the admin exports job $1 with submit.py's options $2... into $WORK/jobs/$1
  local name="$1"
  shift
  rm -rf "$WORK/jobs/$name"
  echo "== $(date +%T) admin exports $name"
  on_host "$ADMIN" python3 "$WORK/homes/$ADMIN/submit.py" --admin-kit "$WORK/kits/$ADMIN" --name "$name" --audit \
    --export --export-dir "$WORK/jobs" "$@" > "$WORK/logs/export-$name.txt" 2>&1
}

JOB_ID=""
submit_job() {  # the admin submits the exported job $1 with `nvflare job submit`; sets JOB_ID
  JOB_ID="$("$BIN/python3" "$HERE/netns_cli.py" job-id "$(admin_cli --format json job submit -j "$WORK/jobs/$1")")"
  echo "== $(date +%T) admin submitted $1: job $JOB_ID"
}

job_status() { "$BIN/python3" "$HERE/netns_cli.py" status "$(admin_cli --format json job meta "$1")"; }

finish_job() {  # wait for job $1, download it into results/$2 and check it with submit.py's options $3...
  local job_id="$1" name="$2" status
  shift 2
  admin_cli job wait "$job_id" --timeout 900 > "$WORK/logs/wait-$name.txt" 2>&1 || true
  status="$(job_status "$job_id")"
  echo "== $(date +%T) job $name ($job_id): $status"
  admin_cli job download "$job_id" -o "$WORK/results/$name/download" --force > /dev/null
  on_host "$ADMIN" python3 "$WORK/homes/$ADMIN/submit.py" --check-job "$job_id" --status "$status" \
    --admin-kit "$WORK/kits/$ADMIN" --result "$WORK/results/$name/download" --output "$WORK/results/$name" \
    --site-kits "$WORK/kits" --sites "${SITES[@]}" --audit "$@"
}

state_round() {  # the last round saved in a FedBip state folder ("" while none is)
  "$BIN/python3" -c 'import json, sys; print(json.load(open(sys.argv[1]))["round"])' "$1/state.json" 2>/dev/null || true
}

start_federation
echo "NVFlare server log, TLS connections of the sites (server address <= site address):"
grep -E "<= .* SSL site-" "$WORK/logs/$SERVER.log" | sed -E 's/.*(Connection \[.*\]).*/  \1/'
stamp federation-started

if [[ "$FAULT" == none ]]; then
  export_job fedbip_netns --num-rounds "$NUM_ROUNDS"
  submit_job fedbip_netns
  finish_job "$JOB_ID" fedbip_netns --num-rounds "$NUM_ROUNDS"
  stamp job-fedbip_netns

elif [[ "$FAULT" == site-restart ]]; then
  # site-2's host goes down while it trains round 1 and comes back; the round goes on without it (min_clients 2,
  # its task times out), and the next job continues from the server's state: site-2 rejoins with its own θ̄.
  VICTIM=site-2
  TASK_TIMEOUT="${FEDBIP_TASK_TIMEOUT:-30}"
  export_job fedbip_site_crash --num-rounds 2 --min-clients 2 --train-timeout "$TASK_TIMEOUT" \
    --validate-timeout "$TASK_TIMEOUT"
  submit_job fedbip_site_crash
  CRASHED="$JOB_ID"
  wait_for_line "$WORK/kits/$VICTIM/$CRASHED/fedbip/received.jsonl" '"round": 1'
  joins="$(joins_of "$VICTIM")"
  host_crash "$VICTIM"
  echo "== $(date +%T) $VICTIM crashed (every process of its host killed) after it received its round-1 task"
  echo "site-crash $CRASHED" >> "$WORK/events.txt"
  host_start "$VICTIM"
  for _ in $(seq 120); do [[ "$(joins_of "$VICTIM")" -gt "$joins" ]] && break; sleep 1; done
  [[ "$(joins_of "$VICTIM")" -gt "$joins" ]] || { echo "$VICTIM did not register again" >&2; exit 1; }
  echo "== $(date +%T) $VICTIM registered with the server again:"
  grep -E "New client $VICTIM@|$VICTIM already registered" "$WORK/logs/$SERVER.log" | tail -2 | sed 's/^/  /'
  # NVFlare fails a job whose participant lost its job process, after the workflow finished ("terminal outcome
  # unavailable from site-2: missing job on client"): FINISHED:ABNORMAL, with the server's results written
  finish_job "$CRASHED" fedbip_site_crash --num-rounds 2 --lost-sites "$VICTIM" --accept-status FINISHED:ABNORMAL
  stamp job-fedbip_site_crash
  # NVFlare removes a finished job's server folder: the admin hands the job's state back to the server's disk
  STATE="$WORK/kits/$SERVER/resume/$CRASHED"
  mkdir -p "$STATE"
  cp -a "$(find "$WORK/results/fedbip_site_crash/download" -type d -path '*/fedbip/state')" "$STATE/"
  export_job fedbip_rejoin --num-rounds 3 --min-clients 2 --resume-from "$STATE/state"
  submit_job fedbip_rejoin
  finish_job "$JOB_ID" fedbip_rejoin --num-rounds 3 --first-round 2
  echo "site-rejoin $JOB_ID" >> "$WORK/events.txt"
  stamp job-fedbip_rejoin

else
  # An uninterrupted run of the job, then the same job again: the server's host goes down after round 0 was saved,
  # while the sites train round 1; it restarts and the admin submits the job with resume_from the saved state.
  export_job fedbip_server_crash --num-rounds "$NUM_ROUNDS"
  submit_job fedbip_server_crash
  finish_job "$JOB_ID" uninterrupted --num-rounds "$NUM_ROUNDS"
  echo "uninterrupted $JOB_ID" >> "$WORK/events.txt"
  stamp job-uninterrupted
  submit_job fedbip_server_crash
  CRASHED="$JOB_ID"
  STATE="$WORK/kits/$SERVER/$CRASHED/fedbip/state"
  wait_for_line "$WORK/kits/${SITES[0]}/$CRASHED/fedbip/received.jsonl" '"round": 1'
  host_crash "$SERVER"
  [[ "$(state_round "$STATE")" == 0 ]] || { echo "the server had not saved round 0 (only) in $STATE" >&2; exit 1; }
  echo "== $(date +%T) server crashed (every process of its host killed) after it saved round 0, in round 1"
  echo "server-crash $CRASHED" >> "$WORK/events.txt"
  stamp job-crashed
  host_start "$SERVER"
  wait_for_server
  wait_for_sites "${SITES[@]}"  # the sites' clients reconnect by themselves
  # NVFlare 2.9 leaves the crashed job RUNNING in the restarted server's job store, and refuses to abort or delete
  # it; it does not hold back other jobs
  echo "== $(date +%T) the restarted server lists the crashed job as $(job_status "$CRASHED")"
  echo "   nvflare job abort: $(admin_cli job abort "$CRASHED" --force 2>&1 | head -1)"
  export_job fedbip_resumed --num-rounds "$NUM_ROUNDS" --resume-from "$STATE"
  submit_job fedbip_resumed
  finish_job "$JOB_ID" resumed --num-rounds "$NUM_ROUNDS" --first-round 1
  echo "resumed $JOB_ID" >> "$WORK/events.txt"
  stamp job-resumed
fi

admin_cli system shutdown all --force > "$WORK/logs/shutdown.txt" 2>&1 || true
for p in "$SERVER" "${SITES[@]}"; do
  for _ in $(seq 60); do [[ -z "$(host_pids "$p")" ]] && break; sleep 1; done
done
stamp shutdown
echo "== done: results in $WORK/results, logs in $WORK/logs, wall times in $TIMES"
