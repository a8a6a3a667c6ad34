#!/usr/bin/env bash
# The demo: brings up the local environment (kube-apiserver + AWS emulator), builds Flowline,
# installs its CRDs and applies an example Flow and Run. The environment keeps running
# afterwards so you can explore it; `make env-down` stops it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/lib.sh
source "$here/lib.sh"
cd "$here/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$FLOWLINE_CACHE/cargo-target}"
start=$SECONDS

tools_log="$(mktemp "${TMPDIR:-/tmp}/flowline-build-tools.XXXXXX")"
"$here/build-tools.sh" >"$tools_log" 2>&1 &
tools_pid=$!
log "building flowline"
cargo build --locked --bins
wait "$tools_pid" || { cat "$tools_log" >&2; die "building the control plane failed"; }

env_file="$("$here/env-up.sh" | tail -n1 | cut -d" " -f2)"
# shellcheck disable=SC1090
source "$env_file"
flowline="$CARGO_TARGET_DIR/debug/flowline"

log "installing the CRDs"
"$flowline" crds | kubectl apply --server-side --force-conflicts -f - >/dev/null
kubectl wait --for=condition=Established --timeout=60s crd/flows.flowline.io crd/runs.flowline.io crd/schedules.flowline.io >/dev/null

log "applying the example flow"
kubectl create namespace demo --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl apply -n demo -f examples/manifests/basic-batch.yaml
echo
kubectl get flowline -n demo
echo
log "demo ready in $((SECONDS - start))s"
cat <<EOF2

The local environment is running:
  source $env_file        # KUBECONFIG, AWS endpoint and test credentials
  kubectl get flowline -A
  kubectl explain flow.spec.steps.batch
  $flowline render -f examples/manifests/basic-batch.yaml   # what the Flow becomes in AWS
  make env-down            # stop everything
EOF2
