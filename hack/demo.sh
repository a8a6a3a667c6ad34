#!/usr/bin/env bash
# The demo: brings up the local environment (kube-apiserver + AWS emulator), builds Flowline,
# installs its CRDs, starts the controller and applies example Flows, which become Ready with
# their job definitions and state machines in the emulator. The environment keeps running
# afterwards so you can explore it; `make env-down` stops it (the controller too).
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

# In the demo the emulator runs each Batch job's command as a local process.
env_file="$(FLOWLINE_EMULATOR_EXEC_JOBS=1 FLOWLINE_TASK_BIN_DIR="$CARGO_TARGET_DIR/debug" "$here/env-up.sh" | tail -n1 | cut -d" " -f2)"
# shellcheck disable=SC1090
source "$env_file"
flowline="$CARGO_TARGET_DIR/debug/flowline"

log "installing the CRDs"
"$flowline" crds | kubectl apply --server-side --force-conflicts -f - >/dev/null
kubectl wait --for=condition=Established --timeout=60s crd/flows.flowline.io crd/runs.flowline.io crd/schedules.flowline.io >/dev/null

# The controller runs beside the environment; env-down stops it with the rest. One replica:
# no leader Lease; its metrics endpoint takes a free loopback port (logged at start).
export FLOWLINE_LEADER_ELECTION=false FLOWLINE_HTTP_ADDR=127.0.0.1:0
# The demo's tasks read and write S3 with credentials of this job role (seeded by
# hack/moto/seed.py); the emulator gives a job without a job role no credentials, as AWS does.
export FLOWLINE_JOB_ROLE="${FLOWLINE_JOB_ROLE:-arn:aws:iam::123456789012:role/flowline-job}"
if ! kill -0 "$(cat "$FLOWLINE_ENV_DIR/pids/flowline-controller.pid" 2>/dev/null)" 2>/dev/null; then
  log "starting the flowline controller (log: $FLOWLINE_ENV_DIR/logs/flowline-controller.log)"
  FLOWLINE_S3_ENDPOINT="$AWS_ENDPOINT_URL" FLOWLINE_S3_FORCE_PATH_STYLE=true \
    setsid "$flowline" controller >"$FLOWLINE_ENV_DIR/logs/flowline-controller.log" 2>&1 </dev/null &
  echo $! >"$FLOWLINE_ENV_DIR/pids/flowline-controller.pid"
else
  log "restarting the flowline controller with the build just made"
  kill -TERM -- "-$(cat "$FLOWLINE_ENV_DIR/pids/flowline-controller.pid")" 2>/dev/null || true
  sleep 1
  FLOWLINE_S3_ENDPOINT="$AWS_ENDPOINT_URL" FLOWLINE_S3_FORCE_PATH_STYLE=true \
    setsid "$flowline" controller >>"$FLOWLINE_ENV_DIR/logs/flowline-controller.log" 2>&1 </dev/null &
  echo $! >"$FLOWLINE_ENV_DIR/pids/flowline-controller.pid"
fi

log "applying the example flows"
kubectl create namespace demo --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl apply -n demo -f examples/manifests/basic-batch.yaml -f examples/manifests/branch-join.yaml -f examples/manifests/foreach.yaml
kubectl wait -n demo --for=condition=Ready --timeout=120s flow/hello-batch flow/branch-join flow/foreach-sweep >/dev/null
echo
kubectl get flows -n demo -o wide
echo
log "what the controller created in AWS for flow/hello-batch:"
kubectl get flow hello-batch -n demo -o jsonpath='{range .status.jobDefinitions[*]}  {.step}: {.arn}{"\n"}{end}  state machine: {.status.stateMachineVersionArn}{"\n"}'
echo

log "running the demo pipeline: a Run whose tasks pass files to each other, stored in S3"
kubectl delete run demo-pipeline-1 -n demo --ignore-not-found --wait=true >/dev/null
kubectl apply -n demo -f examples/manifests/demo.yaml
kubectl wait -n demo --for=jsonpath='{.status.phase}'=Succeeded --timeout=180s run/demo-pipeline-1 >/dev/null \
  || { kubectl get run demo-pipeline-1 -n demo -o yaml >&2; die "the demo Run did not succeed"; }
echo
kubectl get runs -n demo
echo
# The controller set up its execution events rule and queue (--execution-events managed, the
# default): a Run hears that its execution ended from an event, or at its next poll.
event="$(kubectl get run demo-pipeline-1 -n demo -o jsonpath='{.metadata.annotations.flowline\.io/execution-event}')"
log "execution events: rule and queue flowline-execution-events; the Run was woken by event: ${event:-none (its poll came first)}"
log "steps and the artifacts they wrote (status of run/demo-pipeline-1):"
kubectl get run demo-pipeline-1 -n demo -o jsonpath='{range .status.steps[*]}  {.name}: {.phase}, job {.jobIds[0]}{"\n"}{range .artifacts[*]}    {.uri} ({.size} bytes){"\n"}{end}{end}'
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
