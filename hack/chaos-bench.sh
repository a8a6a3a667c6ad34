#!/usr/bin/env bash
# Chaos benchmark and soak of the controller against the local environment, through the fault
# proxy (src/bin/flowline-fault-proxy.rs). Source the environment's env.sh first, then:
#   hack/chaos-bench.sh              # 50 Flows, 200 Runs, 10 Schedules; 20 % then 50 % faults,
#                                    # controller SIGKILLs, one kube-apiserver restart; prints a table
#   hack/chaos-bench.sh --soak 30m   # one controller process, moderate faults, RSS/fds every minute
# Builds the binaries (debug, feature e2e) into $CARGO_TARGET_DIR; logs go to
# $FLOWLINE_ENV_DIR/chaos (FLOWLINE_CHAOS_OUT overrides).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/lib.sh
source "$here/lib.sh"
[[ -n "${FLOWLINE_AWS_ENDPOINT:-}" && -n "${FLOWLINE_MOTO_PYTHON:-}" ]] \
  || die "source the environment's env.sh first (hack/env-up.sh)"

args=()
while (($#)); do
  case "$1" in
    --soak)
      minutes="${2%m}"
      args+=(--soak "$minutes")
      shift 2
      ;;
    *) die "unknown argument: $1" ;;
  esac
done

target="${CARGO_TARGET_DIR:-$here/../target}"
(cd "$here/.." && cargo build --features e2e --bin flowline --bin flowline-fault-proxy >&2)
out="${FLOWLINE_CHAOS_OUT:-$FLOWLINE_ENV_DIR/chaos}"
exec "$FLOWLINE_MOTO_PYTHON" "$here/chaos_bench.py" --flowline-bin "$target/debug/flowline" \
  --proxy-bin "$target/debug/flowline-fault-proxy" --out "$out" "${args[@]}"
