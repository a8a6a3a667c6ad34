#!/usr/bin/env bash
# Exits 0 when the environment in $FLOWLINE_ENV_DIR is running and answering.
set -euo pipefail
env_dir="${FLOWLINE_ENV_DIR:-${TMPDIR:-/tmp}/flowline-env}"
[[ -f "$env_dir/env.sh" ]] || { echo "not running: no $env_dir/env.sh"; exit 1; }
for name in etcd kube-apiserver kube-controller-manager moto moto-exec; do
  pid="$(cat "$env_dir/pids/$name.pid" 2>/dev/null)" || { echo "not running: no $name"; exit 1; }
  kill -0 "$pid" 2>/dev/null || { echo "not running: $name has exited"; exit 1; }
done
# shellcheck disable=SC1091
source "$env_dir/env.sh"
kubectl get --raw /readyz >/dev/null || { echo "kube-apiserver is not ready"; exit 1; }
curl -sf "$FLOWLINE_AWS_ENDPOINT/moto-api/" >/dev/null || { echo "AWS emulator is not answering"; exit 1; }
[[ -n "${FLOWLINE_AWS_EXEC_ENDPOINT:-}" ]] || { echo "not running: env.sh has no exec-mode emulator"; exit 1; }
curl -sf "$FLOWLINE_AWS_EXEC_ENDPOINT/moto-api/" >/dev/null || { echo "exec-mode AWS emulator is not answering"; exit 1; }
echo "running: KUBECONFIG=$KUBECONFIG AWS endpoint $FLOWLINE_AWS_ENDPOINT (exec mode: $FLOWLINE_AWS_EXEC_ENDPOINT)"
