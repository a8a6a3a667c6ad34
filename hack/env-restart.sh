#!/usr/bin/env bash
# Restarts one service of the environment hack/env-up.sh started (e.g. kube-apiserver, for
# tests of a controller that loses its API server), with the same command line, log and pid
# file: hack/env-restart.sh SERVICE. Waits until the service answers again where a check is known.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/lib.sh
source "$here/lib.sh"

env_dir="${FLOWLINE_ENV_DIR:-${TMPDIR:-/tmp}/flowline-env}"
name="${1:?usage: env-restart.sh SERVICE (kube-apiserver, moto, etcd, …)}"
pid_file="$env_dir/pids/$name.pid"
[[ -f "$pid_file" ]] || die "no $name in $env_dir"
pid="$(cat "$pid_file")"
kill -0 "$pid" 2>/dev/null || die "$name (pid $pid) is not running"
# The command line as started (NUL-separated in /proc), so nothing is duplicated from env-up.
mapfile -d '' cmd <"/proc/$pid/cmdline"
kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
deadline=$((SECONDS + 30))
while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
kill -0 "$pid" 2>/dev/null && { kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid"; }
log "restarting $name"
setsid "${cmd[@]}" >>"$env_dir/logs/$name.log" 2>&1 </dev/null &
echo $! >"$pid_file"
if [[ "$name" == kube-apiserver ]]; then
  pki="$env_dir/pki"
  server="$(sed -n 's/^ *server: //p' "$env_dir/kubeconfig" | head -n1)"
  deadline=$((SECONDS + 120))
  until curl -sf --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
    "$server/readyz" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "kube-apiserver did not become ready within 120s"
    sleep 0.2
  done
fi
log "$name restarted (pid $(cat "$pid_file"))"
