#!/usr/bin/env bash
# Starts Flowline's local environment on loopback, offline:
#   etcd + kube-apiserver (TLS, client-cert users, RBAC) + kube-controller-manager
#   + the AWS emulator (moto, patched by hack/moto/launcher.py), twice: one in the mode
#     FLOWLINE_EMULATOR_EXEC_JOBS says (default: jobs are held, nothing runs; fast), and one that
#     always runs each Batch job's command as a local process (FLOWLINE_AWS_EXEC_ENDPOINT), for
#     tests of what a task receives.
#
# Everything lives in $FLOWLINE_ENV_DIR (default /tmp/flowline-env): certificates, data, logs,
# pid files and env.sh, which exports KUBECONFIG, the AWS endpoint and test credentials.
# hack/env-down.sh stops it all. Running env-up twice reuses a healthy environment.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/lib.sh
source "$here/lib.sh"

env_dir="${FLOWLINE_ENV_DIR:-${TMPDIR:-/tmp}/flowline-env}"

# FLOWLINE_EMULATOR_EXEC_JOBS=1 makes the emulator run each Batch job's command as a local
# process (the demo); a running environment started in the other mode is restarted.
exec_jobs="${FLOWLINE_EMULATOR_EXEC_JOBS:-0}"
if [[ -f "$env_dir/env.sh" ]] && "$here/env-status.sh" >/dev/null 2>&1 \
  && [[ "$(cat "$env_dir/exec-jobs" 2>/dev/null)" == "$exec_jobs" ]]; then
  log "environment already running in $env_dir"
  echo "source $env_dir/env.sh"
  exit 0
fi
# A half-started or crashed environment is cleaned up before starting anew.
[[ -d "$env_dir" ]] && FLOWLINE_ENV_DIR="$env_dir" "$here/env-down.sh" >/dev/null 2>&1 || true

mkdir -p "$env_dir"/{pki,logs,pids,etcd-data}
# The runtimes that stand in for job images (hack/moto/images.json) install while the tools build.
"$here/moto/install-runtimes.sh" >"$env_dir/runtimes.txt" 2>"$env_dir/logs/install-runtimes.log" &
runtimes_pid=$!
bin_dir="$("$here/build-tools.sh" | tail -n1)"
python="$("$here/moto/install.sh" | tail -n1)"
wait "$runtimes_pid" || { cat "$env_dir/logs/install-runtimes.log" >&2; die "installing the emulator's runtimes failed"; }

cd "$env_dir"
# If anything below fails, stop what was started so no process is left behind.
trap 'log "start-up failed; stopping what was started (logs in $env_dir/logs)"; FLOWLINE_ENV_DIR="$env_dir" FLOWLINE_KEEP_ENV_DIR=1 "$here/env-down.sh" >&2 || true' ERR

free_port() {
  "$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
etcd_port="$(free_port)"
etcd_peer_port="$(free_port)"
api_port="$(free_port)"
moto_port="$(free_port)"
moto_exec_port="$(free_port)"

# --- certificates: one CA signs the serving cert and every client-cert user --------------------
pki="$env_dir/pki"
openssl_quiet() { openssl "$@" 2>/dev/null; }
openssl_quiet req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=flowline-local-ca" \
  -keyout "$pki/ca.key" -out "$pki/ca.crt"
cat >"$pki/serving.ext" <<EOF
subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc
extendedKeyUsage=serverAuth
EOF
openssl_quiet req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
  -keyout "$pki/serving.key" -out "$pki/serving.csr"
openssl_quiet x509 -req -in "$pki/serving.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
  -CAcreateserial -days 30 -extfile "$pki/serving.ext" -out "$pki/serving.crt"

# client_cert NAME CN [O]: a client certificate; CN is the user name, O the group.
client_cert() {
  local name="$1" subject="/CN=$2"
  [[ -n "${3:-}" ]] && subject="/O=$3$subject"
  echo "extendedKeyUsage=clientAuth" >"$pki/client.ext"
  openssl_quiet req -newkey rsa:2048 -nodes -subj "$subject" \
    -keyout "$pki/$name.key" -out "$pki/$name.csr"
  openssl_quiet x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -CAcreateserial -days 30 -extfile "$pki/client.ext" -out "$pki/$name.crt"
}
client_cert admin flowline-admin system:masters
client_cert controller-manager system:kube-controller-manager
# A user with no RBAC bindings at all: tests use it to prove that authorization is enforced.
client_cert unprivileged flowline-unprivileged
openssl_quiet genrsa -out "$pki/sa.key" 2048
openssl_quiet rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub"

# write_kubeconfig FILE USER
write_kubeconfig() {
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: flowline-local
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority: $pki/ca.crt
users:
- name: $2
  user:
    client-certificate: $pki/$2.crt
    client-key: $pki/$2.key
contexts:
- name: $2
  context: {cluster: flowline-local, user: $2}
current-context: $2
EOF
}
write_kubeconfig "$env_dir/kubeconfig" admin
write_kubeconfig "$env_dir/controller-manager.kubeconfig" controller-manager
write_kubeconfig "$env_dir/unprivileged.kubeconfig" unprivileged

# start NAME COMMAND...: a background process in its own session, logged, pid recorded.
start() {
  local name="$1"
  shift
  setsid "$@" >"$env_dir/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$env_dir/pids/$name.pid"
}

# wait_until DESCRIPTION SECONDS COMMAND...: polls COMMAND every 0.2 s.
wait_until() {
  local what="$1" seconds="$2"
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      log "$what did not become ready within ${seconds}s"
      return 1
    fi
    sleep 0.2
  done
}

log "starting etcd on 127.0.0.1:$etcd_port"
start etcd "$bin_dir/etcd" --name flowline --data-dir "$env_dir/etcd-data" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" \
  --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" \
  --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
  --initial-cluster "flowline=http://127.0.0.1:$etcd_peer_port" \
  --unsafe-no-fsync --quota-backend-bytes=$((2 * 1024 * 1024 * 1024)) --log-level warn
wait_until etcd 60 curl -sf "http://127.0.0.1:$etcd_port/health"

# The flowline binary tasks run as `flowline task` (a Flow's taskRuntime): only when the caller
# names the folder it was built in (FLOWLINE_TASK_BIN_DIR, e.g. $CARGO_TARGET_DIR/debug), as an
# image has it only when its Dockerfile copies it in. A link, so a rebuilt binary is picked up.
task_bin_args=()
if [[ -n "${FLOWLINE_TASK_BIN_DIR:-}" ]]; then
  mkdir -p "$env_dir/task-bin"
  ln -sfn "$(cd "$FLOWLINE_TASK_BIN_DIR" && pwd)/flowline" "$env_dir/task-bin/flowline"
  task_bin_args=(--task-bin-dir "$env_dir/task-bin")
fi

# start_emulator NAME PORT EXEC_JOBS JOB_LOG_DIR: an emulator with a minimal environment of its
# own; its job processes get only what a Batch container would (see hack/moto/task_runtime.py).
start_emulator() {
  local name="$1" port="$2" exec_jobs="$3" job_logs="$4" extra=()
  mkdir -p "$job_logs"
  [[ -n "${FLOWLINE_EMULATOR_SYNC_POLL_SECONDS:-}" ]] \
    && extra+=("FLOWLINE_EMULATOR_SYNC_POLL_SECONDS=$FLOWLINE_EMULATOR_SYNC_POLL_SECONDS")
  start "$name" env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$env_dir" LANG=C.UTF-8 \
    FLOWLINE_EMULATOR_EXEC_JOBS="$exec_jobs" "${extra[@]}" \
    "$python" "$here/moto/launcher.py" --host 127.0.0.1 --port "$port" \
    --job-log-dir "$job_logs" --runtimes "$env_dir/runtimes.txt" "${task_bin_args[@]}"
}
echo "$exec_jobs" >"$env_dir/exec-jobs"
log "starting the AWS emulator on 127.0.0.1:$moto_port (exec jobs: $exec_jobs)"
start_emulator moto "$moto_port" "$exec_jobs" "$env_dir/job-logs"
log "starting the exec-mode AWS emulator on 127.0.0.1:$moto_exec_port"
start_emulator moto-exec "$moto_exec_port" 1 "$env_dir/exec-job-logs"

log "starting kube-apiserver on 127.0.0.1:$api_port"
start kube-apiserver "$bin_dir/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$etcd_port" \
  --bind-address 127.0.0.1 --secure-port "$api_port" \
  --advertise-address 127.0.0.1 --endpoint-reconciler-type none \
  --cert-dir "$env_dir/pki/apiserver" \
  --tls-cert-file "$pki/serving.crt" --tls-private-key-file "$pki/serving.key" \
  --client-ca-file "$pki/ca.crt" \
  --service-account-issuer https://kubernetes.default.svc \
  --service-account-key-file "$pki/sa.pub" \
  --service-account-signing-key-file "$pki/sa.key" \
  --api-audiences https://kubernetes.default.svc \
  --service-cluster-ip-range 10.96.0.0/16 \
  --authorization-mode RBAC \
  --allow-privileged=false \
  --profiling=false
wait_until kube-apiserver 120 curl -sf --cacert "$pki/ca.crt" \
  --cert "$pki/admin.crt" --key "$pki/admin.key" "https://127.0.0.1:$api_port/readyz"

log "starting kube-controller-manager"
start kube-controller-manager "$bin_dir/kube-controller-manager" \
  --kubeconfig "$env_dir/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$env_dir/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$env_dir/controller-manager.kubeconfig" \
  --controllers garbage-collector-controller,namespace-controller,serviceaccount-controller,serviceaccount-token-controller,root-ca-certificate-publisher-controller \
  --service-account-private-key-file "$pki/sa.key" \
  --root-ca-file "$pki/ca.crt" \
  --use-service-account-credentials=true \
  --leader-elect=false \
  --bind-address 127.0.0.1 --secure-port 0
# The service-account controller creating `default` in kube-system proves it is running.
wait_until kube-controller-manager 120 "$bin_dir/kubectl" --kubeconfig "$env_dir/kubeconfig" \
  get serviceaccount default -n default

wait_until "the AWS emulator" 120 grep -q "moto ready" "$env_dir/logs/moto.log"
wait_until "the exec-mode AWS emulator" 120 grep -q "moto ready" "$env_dir/logs/moto-exec.log"
log "seeding the emulators with the platform's roles, bucket and job queue"
"$python" "$here/moto/seed.py" "http://127.0.0.1:$moto_port"
"$python" "$here/moto/seed.py" "http://127.0.0.1:$moto_exec_port"

cat >"$env_dir/env.sh" <<EOF
# Flowline local environment (hack/env-up.sh). Source this file to use it.
export FLOWLINE_ENV_DIR="$env_dir"
export KUBECONFIG="$env_dir/kubeconfig"
export FLOWLINE_UNPRIVILEGED_KUBECONFIG="$env_dir/unprivileged.kubeconfig"
export PATH="$bin_dir:\$PATH"
export FLOWLINE_BIN_DIR="$bin_dir"
export FLOWLINE_MOTO_PYTHON="$python"
export FLOWLINE_AWS_ENDPOINT="http://127.0.0.1:$moto_port"
# A second emulator that always runs each Batch job's command as a local process (job output in
# $env_dir/exec-job-logs), for tests of what a task receives.
export FLOWLINE_AWS_EXEC_ENDPOINT="http://127.0.0.1:$moto_exec_port"
export AWS_ENDPOINT_URL="http://127.0.0.1:$moto_port"
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
export AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1
EOF
trap - ERR
# FLOWLINE_FAULT_PROXY=1: the fault-injecting proxy too (FLOWLINE_FAULT_PROXY_URL in env.sh).
[[ "${FLOWLINE_FAULT_PROXY:-0}" == 1 ]] && FLOWLINE_ENV_DIR="$env_dir" "$here/fault-proxy.sh"
log "environment ready: kube-apiserver https://127.0.0.1:$api_port, AWS emulator http://127.0.0.1:$moto_port (exec mode: http://127.0.0.1:$moto_exec_port)"
echo "source $env_dir/env.sh"
