#!/usr/bin/env bash
# Lints and renders charts/flowline with Helm (built by hack/build-tools.sh) under several
# value sets, and checks that values.schema.json rejects what it must. Offline: no cluster is
# needed (tests/e2e/helm.rs installs the chart into the local one).
#
# Usage: hack/chart-check.sh [HELM]   (default: the helm that hack/build-tools.sh links)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/lib.sh
source "$here/lib.sh"
chart="$here/../charts/flowline"

helm="${1:-}"
if [[ -z "$helm" ]]; then
  helm="$("$here/build-tools.sh" | tail -n1)/helm"
fi
# Helm's caches and configuration stay out of $HOME.
helm_home="$(mktemp -d "${TMPDIR:-/tmp}/flowline-helm.XXXXXX")"
trap 'rm -rf "$helm_home"' EXIT
export HELM_CACHE_HOME="$helm_home/cache" HELM_CONFIG_HOME="$helm_home/config" HELM_DATA_HOME="$helm_home/data"

# Each value set: the defaults (cluster-wide), one watched namespace with monitoring and a
# PDB, and a fully configured production-like release.
value_sets=(
  ""
  "--set watchNamespace=team-a --set serviceMonitor.enabled=true --set podDisruptionBudget.enabled=true"
  "--set serviceAccount.roleArn=arn:aws:iam::111122223333:role/flowline --set-string aws.accountId=111122223333
   --set aws.region=eu-west-1 --set flowDefaults.s3Root=s3://ml-artifacts/flowline
   --set flowDefaults.s3ServerSideEncryption=aws:kms --set flowDefaults.s3KmsKeyId=alias/flowline
   --set tenancy.allowedJobQueues={cpu,gpu} --set leaderElection.leaseNamespace=kube-system
   --set image.digest=sha256:0000000000000000000000000000000000000000000000000000000000000000"
)
for values in "${value_sets[@]}"; do
  # shellcheck disable=SC2086 # word splitting of the value set is intended
  "$helm" lint --strict "$chart" $values >/dev/null || die "helm lint failed with: $values"
  # shellcheck disable=SC2086
  rendered="$("$helm" template flowline "$chart" --namespace flowline-system $values)" \
    || die "helm template failed with: $values"
  grep -q '^kind: Deployment$' <<<"$rendered" || die "no Deployment rendered with: $values"
  # The uninstall hook (managed execution events, the default) is rendered.
  grep -q 'helm.sh/hook: pre-delete' <<<"$rendered" || die "no uninstall hook rendered with: $values"
done
log "chart: lint and template passed with ${#value_sets[@]} value sets"

# The hook is left out when the events path is off, uses a queue of one's own, or is turned off.
for values in "--set controller.executionEvents=off" "--set controller.executionEventsQueueUrl=https://sqs.example/q" \
  "--set uninstallHook.enabled=false"; do
  # shellcheck disable=SC2086
  rendered="$("$helm" template flowline "$chart" --namespace flowline-system $values)" \
    || die "helm template failed with: $values"
  if grep -q 'helm.sh/hook' <<<"$rendered"; then
    die "an uninstall hook rendered with: $values"
  fi
done
log "chart: the uninstall hook follows controller.executionEvents and uninstallHook.enabled"

# The schema must reject unknown keys, wrong types and values outside the enums.
for bad in "unknownKey=1" "replicaCount=two" "flowDefaults.s3ServerSideEncryption=DES" \
  "aws.accountId=123" "controller.workers=0" "image.pullPolicy=Sometimes" \
  "flowDefaults.statesRole=" "serviceAccount.roleArn=role/flowline" \
  "controller.executionEvents=on" "uninstallHook.enabled=yes"; do
  if "$helm" template flowline "$chart" --set "$bad" >/dev/null 2>&1; then
    die "values.schema.json accepted $bad"
  fi
done
log "chart: the schema rejects bad values"
