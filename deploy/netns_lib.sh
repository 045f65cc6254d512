# Functions of deploy/run_netns.sh: one Linux network namespace per host (server, sites, admin) on a private LAN,
# each host with its own workspace, its own installed copy of the package and its own /etc/hosts. Sourced, not run.
#
# The caller sets: WORK (work folder), BIN (the Python environment's bin folder: python3, nvflare), PREFIX (namespace
# name prefix), NET (first three octets of the LAN), SERVER, ADMIN and SITES (participant names), ASSETS (the offline
# asset cache to copy from). Every namespace, veth and /etc/netns entry made here is listed in NAMESPACES and removed
# by net_down; nothing is created in the caller's own network namespace.

declare -A HOST_NS HOST_ADDR
NAMESPACES=()
LAN_NS=""
CREATED_ETC_NETNS=0

hosts_init() {  # namespace name and address of every participant
  HOST_NS["$SERVER"]="$PREFIX-server"
  HOST_ADDR["$SERVER"]="$NET.1"
  local k=0
  for site in "${SITES[@]}"; do
    k=$((k + 1))
    HOST_NS["$site"]="$PREFIX-$site"
    HOST_ADDR["$site"]="$NET.$((10 + k))"
  done
  HOST_NS["$ADMIN"]="$PREFIX-admin"
  HOST_ADDR["$ADMIN"]="$NET.100"
  LAN_NS="$PREFIX-lan"
}

participants() { echo "$SERVER" "${SITES[@]}" "$ADMIN"; }

net_up() {  # the LAN: a bridge in a namespace of its own, one veth pair to every host
  [[ -d /etc/netns ]] || { mkdir /etc/netns && CREATED_ETC_NETNS=1; }
  ip netns add "$LAN_NS"
  NAMESPACES+=("$LAN_NS")
  ip -n "$LAN_NS" link add br0 type bridge
  ip -n "$LAN_NS" link set br0 up
  local port=0
  for p in $(participants); do
    local ns="${HOST_NS[$p]}"
    ip netns add "$ns"
    NAMESPACES+=("$ns")
    ip -n "$ns" link set lo up
    ip -n "$LAN_NS" link add "port$port" type veth peer name eth0 netns "$ns"
    ip -n "$LAN_NS" link set "port$port" master br0 up
    ip -n "$ns" addr add "${HOST_ADDR[$p]}/24" dev eth0
    ip -n "$ns" link set eth0 up
    port=$((port + 1))
    mkdir -p "/etc/netns/$ns"  # `ip netns exec` bind-mounts these files over /etc
    {
      echo "127.0.0.1 localhost"
      for q in $(participants); do echo "${HOST_ADDR[$q]} $q"; done
    } > "/etc/netns/$ns/hosts"
  done
}

net_down() {  # every process left in our namespaces, then the namespaces (their veths go with them)
  for ns in "${NAMESPACES[@]}"; do host_kill_ns "$ns" || true; done
  for ns in "${NAMESPACES[@]}"; do
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "/etc/netns/$ns"
  done
  NAMESPACES=()
  if [[ "$CREATED_ETC_NETNS" == 1 ]]; then rmdir /etc/netns 2>/dev/null || true; fi
}

host_kill_ns() {  # SIGKILL every process of a namespace, until none is left
  local ns="$1" pids
  for _ in $(seq 50); do
    pids="$(ip netns pids "$ns" 2>/dev/null || true)"
    [[ -z "$pids" ]] && return 0
    kill -KILL $pids 2>/dev/null || true
    sleep 0.2
  done
  echo "processes still in namespace $ns: $pids" >&2
  return 1
}

host_crash() { host_kill_ns "${HOST_NS[$1]}"; }  # the host goes down: every process of it, at once

host_pids() { ip netns pids "${HOST_NS[$1]}" 2>/dev/null || true; }

on_host() {  # run a command as participant $1 on its host: its namespace, workspace, package copy and home only
  local p="$1"
  shift
  (
    cd "$WORK/kits/$p"
    ip netns exec "${HOST_NS[$p]}" env -i PATH="$BIN:/usr/bin:/bin" HOME="$WORK/homes/$p" \
      PYTHONPATH="$WORK/pkgs/$p" FEDBIP_ASSETS_DIR="$WORK/assets/$p" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
      TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1 "$@"
  )
}

host_install() {  # what a participant's admin does: install the package, unpack the kit, allow-list, local config
  local p="$1" wheel="$2"
  mkdir -p "$WORK/kits" "$WORK/pkgs" "$WORK/homes/$p" "$WORK/assets/$p/models"
  cp -a "$KITS/$p" "$WORK/kits/$p"
  # --no-compile: a __pycache__ in this copy afterwards shows the host's processes imported it
  "$BIN/python3" -m pip install -q --no-deps --no-index --no-compile --target "$WORK/pkgs/$p" "$wheel"
  # the offline model and corpora (hard links where the file system allows)
  cp -al "$ASSETS/models/all-MiniLM-L6-v2" "$WORK/assets/$p/models/" 2>/dev/null ||
    cp -a "$ASSETS/models/all-MiniLM-L6-v2" "$WORK/assets/$p/models/"
  cp -al "$ASSETS/data" "$WORK/assets/$p/" 2>/dev/null || cp -a "$ASSETS/data" "$WORK/assets/$p/"
  if [[ "$p" != "$ADMIN" ]]; then
    on_host "$p" python3 -m fedbip_nvflare.cli allow-list "$WORK/kits/$p" > /dev/null
  fi
  if [[ "$p" == "$SERVER" ]]; then  # the job store and snapshots on the server's own disk, not /tmp/nvflare
    sed -i "s#/tmp/nvflare/#$WORK/kits/$p/storage/#" "$WORK/kits/$p/local/resources.json"
  fi
  if [[ " ${SITES[*]} " == *" $p "* ]]; then
    echo '{"num_threads": 1}' > "$WORK/kits/$p/local/fedbip_site.json"
  fi
  echo "$p imports $(on_host "$p" python3 -c 'import fedbip_nvflare; print(fedbip_nvflare.__file__)')"
}

install_hosts() {  # every participant installs at the same time, as separate organisations would
  local wheel="$1" pids=() failed=0
  for p in $(participants); do
    host_install "$p" "$wheel" > "$WORK/logs/install-$p.txt" 2>&1 &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  cat "$WORK"/logs/install-*.txt
  return "$failed"
}

host_start() {  # start a participant from its startup kit on its host, in the background
  local p="$1"
  echo "== $(date +%T) starting $p on ${HOST_ADDR[$p]}"
  on_host "$p" setsid "$WORK/kits/$p/startup/sub_start.sh" --once >> "$WORK/logs/$p.log" 2>&1 &
  disown $!  # net_down ends it with its namespace; no job report from this shell
}

wait_for_server() {  # the admin's host reaches the server's ports by name
  for _ in $(seq 180); do
    if on_host "$ADMIN" bash -c "exec 3<>/dev/tcp/$SERVER/${FL_PORT} && exec 4<>/dev/tcp/$SERVER/${ADMIN_PORT}" \
      2>/dev/null; then
      return 0
    fi
    sleep 1
  done
  echo "the server $SERVER (${HOST_ADDR[$SERVER]}) does not answer on ports $FL_PORT/$ADMIN_PORT" >&2
  return 1
}

admin_cli() {  # the admin's nvflare CLI with its startup kit
  on_host "$ADMIN" nvflare "$@" --startup-kit "$WORK/kits/$ADMIN"
}

wait_for_line() {  # until file $1 has a line matching $2 (at most $3 seconds; checked 5 times a second)
  for _ in $(seq $((${3:-300} * 5))); do
    if grep -qs -- "$2" "$1"; then return 0; fi
    sleep 0.2
  done
  echo "no line matching '$2' in $1 after ${3:-300} s" >&2
  return 1
}

joins_of() { grep -c "New client $1@" "$WORK/logs/$SERVER.log" || true; }  # times the server registered site $1
