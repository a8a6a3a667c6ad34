#!/usr/bin/env bash
# Starts the fault-injecting proxy (src/bin/flowline-fault-proxy.rs) in front of the
# environment's AWS emulator and adds FLOWLINE_FAULT_PROXY_URL to its env.sh; hack/env-down.sh
# stops it with the rest. Rates from the FLOWLINE_FAULT_* variables (see `--help`), changed at
# runtime with `curl -X PUT $FLOWLINE_FAULT_PROXY_URL/__faults -d '{"default":{"throttle":0.2}}'`;
# counts at `$FLOWLINE_FAULT_PROXY_URL/__stats`. hack/env-up.sh runs it when FLOWLINE_FAULT_PROXY=1.
# The binary: FLOWLINE_FAULT_PROXY_BIN, else $CARGO_TARGET_DIR/debug/flowline-fault-proxy
# (`cargo build --features e2e --bin flowline-fault-proxy`).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/lib.sh
source "$here/lib.sh"

env_dir="${FLOWLINE_ENV_DIR:-${TMPDIR:-/tmp}/flowline-env}"
[[ -f "$env_dir/env.sh" ]] || die "no environment in $env_dir (hack/env-up.sh)"
bin="${FLOWLINE_FAULT_PROXY_BIN:-${CARGO_TARGET_DIR:-$here/../target}/debug/flowline-fault-proxy}"
[[ -x "$bin" ]] || die "$bin is missing: cargo build --features e2e --bin flowline-fault-proxy"
upstream="$(sed -n 's/^export FLOWLINE_AWS_ENDPOINT="\(.*\)"$/\1/p' "$env_dir/env.sh")"
setsid "$bin" --upstream "$upstream" >"$env_dir/logs/fault-proxy.out" 2>"$env_dir/logs/fault-proxy.log" </dev/null &
echo $! >"$env_dir/pids/fault-proxy.pid"
for _ in $(seq 100); do
  url="$(sed -n 's/^listening on //p' "$env_dir/logs/fault-proxy.out")"
  [[ -n "$url" ]] && break
  sleep 0.1
done
[[ -n "$url" ]] || die "the fault proxy did not start (log: $env_dir/logs/fault-proxy.log)"
sed -i '/^export FLOWLINE_FAULT_PROXY_URL=/d' "$env_dir/env.sh"
echo "export FLOWLINE_FAULT_PROXY_URL=\"$url\"" >>"$env_dir/env.sh"
log "fault proxy on $url in front of $upstream"
