#!/usr/bin/env bash
# FedBip in NVFlare's POC mode: `nvflare poc prepare`, allow-list the package on the server and the sites (installed-
# package mode), `nvflare poc start`, submit the FedBip recipe as the POC admin (ProdEnv on the POC admin kit),
# collect, `nvflare poc stop`. (The same through NVFlare's Recipe-API PocEnv, whose provisioning allow-lists the
# package: `recipe.execute(fedbip_poc_env())`, see fedbip_nvflare/recipes/poc.py.)
# Exits 0 only if the job finished and every site holds its personalized adapter. POC uses ports 8002/8003.
#
#   deploy/run_poc.sh                  # POC workspace: $NVFLARE_POC_WORKSPACE, else a fresh /tmp/fedbip_poc.XXXX/poc
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
PY="${PYTHON:-$REPO/.venv/bin/python}"
BIN="$(dirname "$PY")"
export NVFLARE_POC_WORKSPACE="${NVFLARE_POC_WORKSPACE:-$(mktemp -d /tmp/fedbip_poc.XXXX)/poc}"
SITES=(site-1 site-2)
export PATH="$BIN:$PATH"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
KITS="$NVFLARE_POC_WORKSPACE/example_project/prod_00"

echo "== nvflare poc prepare in $NVFLARE_POC_WORKSPACE"
"$BIN/nvflare" poc prepare -n "${#SITES[@]}" --force > /dev/null
for participant in server "${SITES[@]}"; do "$BIN/fedbip" allow-list "$KITS/$participant" > /dev/null; done

own_pids() {  # processes whose command line names this script's own POC workspace
  grep -l -a -F -- "$NVFLARE_POC_WORKSPACE" /proc/[0-9]*/cmdline 2>/dev/null | cut -d/ -f3 | grep -vx "$$" || true
}
cleanup() {
  "$BIN/nvflare" poc stop > /dev/null 2>&1 || true
  # wait for the POC processes to exit; kill stragglers by PID
  for _ in $(seq 60); do [[ -z "$(own_pids)" ]] && return 0; sleep 1; done
  for pid in $(own_pids); do kill -KILL "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
echo "== nvflare poc start"
"$BIN/nvflare" poc start -ex admin@nvidia.com > "$NVFLARE_POC_WORKSPACE/../poc_start.log" 2>&1

echo "== submitting the FedBip job as admin@nvidia.com"
OUT="$NVFLARE_POC_WORKSPACE/../results"
"$PY" "$HERE/submit.py" --admin-kit "$KITS/admin@nvidia.com" --username admin@nvidia.com \
  --num-clients "${#SITES[@]}" --output "$OUT" --site-kits "$KITS" --sites "${SITES[@]}" --audit

echo "== done: results in $OUT"
