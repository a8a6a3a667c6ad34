#!/usr/bin/env bash
# Stops everything hack/env-up.sh started and removes its directory, leaving no process behind.
# FLOWLINE_KEEP_ENV_DIR=1 keeps the directory (logs) for inspection.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/lib.sh
source "$here/lib.sh"

env_dir="${FLOWLINE_ENV_DIR:-${TMPDIR:-/tmp}/flowline-env}"
[[ -d "$env_dir" ]] || { log "no environment in $env_dir"; exit 0; }

# Each service runs as the leader of its own process group (setsid), so signalling the group
# also ends the processes it spawned (e.g. emulated Batch jobs). etcd goes last: a
# kube-apiserver whose etcd is gone hangs in its graceful shutdown.
stopped=0
stop_group() {
  local pids=() name pid
  for name in "$@"; do
    [[ -f "$env_dir/pids/$name.pid" ]] || continue
    pid="$(cat "$env_dir/pids/$name.pid")"
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
    rm -f "$env_dir/pids/$name.pid"
  done
  local deadline=$((SECONDS + 15))
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      log "process $pid did not stop on TERM; killing it"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  stopped=$((stopped + ${#pids[@]}))
}
others=()
for pid_file in "$env_dir"/pids/*.pid; do
  [[ -f "$pid_file" ]] || continue
  name="$(basename "$pid_file" .pid)"
  case "$name" in kube-controller-manager | kube-apiserver | moto | moto-exec | etcd) ;; *) others+=("$name") ;; esac
done
stop_group kube-controller-manager kube-apiserver moto moto-exec "${others[@]}"
stop_group etcd

if [[ "${FLOWLINE_KEEP_ENV_DIR:-0}" == 1 ]]; then
  log "stopped $stopped processes; kept $env_dir"
else
  rm -rf "$env_dir"
  log "stopped $stopped processes; removed $env_dir"
fi
