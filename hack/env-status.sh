#!/usr/bin/env bash
# Exits 0 when the environment in $FLOWLINE_ENV_DIR is running and answering.
set -euo pipefail
env_dir="${FLOWLINE_ENV_DIR:-${TMPDIR:-/tmp}/flowline-env}"
[[ -f "$env_dir/env.sh" ]] || { echo "not running: no $env_dir/env.sh"; exit 1; }
for pid_file in "$env_dir"/pids/*.pid; do
  pid="$(cat "$pid_file")"
  kill -0 "$pid" 2>/dev/null || { echo "not running: $(basename "$pid_file" .pid) has exited"; exit 1; }
done
# shellcheck disable=SC1091
source "$env_dir/env.sh"
kubectl get --raw /readyz >/dev/null || { echo "kube-apiserver is not ready"; exit 1; }
curl -sf "$FLOWLINE_AWS_ENDPOINT/moto-api/" >/dev/null || { echo "AWS emulator is not answering"; exit 1; }
echo "running: KUBECONFIG=$KUBECONFIG AWS endpoint $FLOWLINE_AWS_ENDPOINT"
