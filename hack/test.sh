#!/usr/bin/env bash
# Runs every test: formatting and lints, unit and integration tests, the Helm chart's lint
# and templates, then the end-to-end tests against a fresh local environment (real
# kube-apiserver + AWS emulator) that is torn down at the end, whatever the outcome. This is
# the README's test command and what CI runs.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/lib.sh
source "$here/lib.sh"
cd "$here/.."

# Build outputs live outside the checkout so fresh clones (and CI) reuse them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$FLOWLINE_CACHE/cargo-target}"
start=$SECONDS

# The control plane's cold build is long: start it now, in parallel with the Rust build.
tools_log="$(mktemp "${TMPDIR:-/tmp}/flowline-build-tools.XXXXXX")"
"$here/build-tools.sh" >"$tools_log" 2>&1 &
tools_pid=$!

log "cargo fmt --check"
cargo fmt --all --check
log "cargo clippy"
cargo clippy --all-targets --features e2e --locked -- -D warnings
log "unit and integration tests"
cargo test --locked
cargo build --locked --features e2e --tests --bins

log "waiting for the control plane binaries"
if ! wait "$tools_pid"; then
  cat "$tools_log" >&2
  die "building the control plane failed"
fi

log "Helm chart: lint, template, schema"
"$here/chart-check.sh" "$(tail -n1 "$tools_log")/helm"

# A separate environment per test run, so a running demo is left alone.
FLOWLINE_ENV_DIR="$(mktemp -d "${TMPDIR:-/tmp}/flowline-test.XXXXXX")"
export FLOWLINE_ENV_DIR
trap '"$here/env-down.sh" || true' EXIT
# shellcheck disable=SC1090
source "$(FLOWLINE_TASK_BIN_DIR="$CARGO_TARGET_DIR/debug" "$here/env-up.sh" | tail -n1 | cut -d" " -f2)"

log "emulator launcher tests"
"$FLOWLINE_MOTO_PYTHON" -m pytest "$here/moto" -q -p no:cacheprovider
# The Python steps' helper, from its source (the emulator's venv has boto3 and pytest); the
# emulator's python runtime installs it with pip, which its exec-mode test imports.
log "Python step helper tests (python/flowline-task)"
PYTHONPATH="$PWD/python/flowline-task/src" "$FLOWLINE_MOTO_PYTHON" -m pytest python/flowline-task -q \
  -p no:cacheprovider
log "end-to-end tests"
cargo test --locked --features e2e --test e2e
log "all tests passed in $((SECONDS - start))s"
