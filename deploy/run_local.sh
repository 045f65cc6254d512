#!/usr/bin/env bash
# Production-style FedBip on one machine: provision deploy/project.yml (TLS certificates, startup kits), start the
# server and three client sites from their kits on localhost, submit the FedBip job as the project admin
# (ProdEnv, installed-package mode), wait, download the results, shut everything down.
# Exits 0 only if the job finished and every site holds its personalized adapter.
#
#   deploy/run_local.sh                     # work folder: a fresh /tmp/fedbip_deploy.XXXX
#   FEDBIP_DEPLOY_DIR=/tmp/d FEDBIP_FL_PORT=18002 FEDBIP_ADMIN_PORT=18003 deploy/run_local.sh
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
PY="${PYTHON:-$REPO/.venv/bin/python}"
BIN="$(dirname "$PY")"
WORK="${FEDBIP_DEPLOY_DIR:-$(mktemp -d /tmp/fedbip_deploy.XXXX)}"
FL_PORT="${FEDBIP_FL_PORT:-8002}"
ADMIN_PORT="${FEDBIP_ADMIN_PORT:-8003}"
NUM_ROUNDS="${FEDBIP_NUM_ROUNDS:-2}"
SITES=(site-1 site-2 site-3)
export PATH="$BIN:$PATH"   # the startup kits run `python3`: the one with fedbip_nvflare installed
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

PIDS=()
cleanup() {
  # stop only what this script started: each participant runs in its own process group
  for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  sleep 3
  for pid in "${PIDS[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

echo "== provisioning into $WORK (server localhost:$FL_PORT, admin port $ADMIN_PORT)"
mkdir -p "$WORK"
sed -e "s/fed_learn_port: 8002/fed_learn_port: $FL_PORT/" -e "s/admin_port: 8003/admin_port: $ADMIN_PORT/" \
  "$HERE/project.yml" > "$WORK/project.yml"
"$BIN/nvflare" provision -p "$WORK/project.yml" -w "$WORK/provision" --force > "$WORK/provision.log"
KITS="$WORK/provision/fedbip_local/prod_00"

for participant in localhost "${SITES[@]}"; do  # what each site admin does after `pip install fedbip-nvflare`
  "$BIN/fedbip" allow-list "$KITS/$participant" > /dev/null
done

start() {  # start a participant from its startup kit, in the foreground of its own process group
  setsid "$KITS/$1/startup/sub_start.sh" --once > "$WORK/$1.log" 2>&1 &
  PIDS+=($!)
}

wait_for_port() {
  "$PY" - "$1" <<'PYEOF'
import socket, sys, time
port = int(sys.argv[1])
for _ in range(120):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        sys.exit(0)
    except OSError:
        time.sleep(1)
sys.exit(f"nothing listens on 127.0.0.1:{port} after 120 s")
PYEOF
}

echo "== starting the server"
start localhost
wait_for_port "$FL_PORT"
wait_for_port "$ADMIN_PORT"
echo "== starting ${SITES[*]}"
for site in "${SITES[@]}"; do start "$site"; done

echo "== submitting the FedBip job as admin@fedbip.local"
"$PY" "$HERE/submit.py" --admin-kit "$KITS/admin@fedbip.local" --num-clients "${#SITES[@]}" \
  --num-rounds "$NUM_ROUNDS" --output "$WORK/results" --shutdown --site-kits "$KITS" --sites "${SITES[@]}"

echo "== done: results in $WORK/results, logs in $WORK/*.log"
