#!/usr/bin/env bash
# Builds the local control plane's binaries (kube-apiserver, kube-controller-manager, kubectl,
# etcd, etcdctl) from the Go module proxy into a cache outside the checkout.
#
# The pins live in hack/kube/go.mod and hack/etcd/go.mod (wrapper modules: k8s.io/kubernetes
# cannot be `go install`ed directly because of its replace directives). A build is skipped when
# the cached binaries were built from the same go.mod/go.sum, so warm runs take milliseconds.
#
# Prints the binary directory on stdout (last line); logs go to stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/lib.sh
source "$here/lib.sh"

build_set() {
  local name="$1" moddir="$2" ldflags="$3"
  shift 3
  local key
  # The key covers everything that changes the output: the pins and the build flags.
  key="$( (cat "$moddir/go.mod" "$moddir/go.sum"; echo "$ldflags $*") | sha256sum | cut -c1-16)"
  local out="$FLOWLINE_CACHE/bin/$name-$key"
  if [[ -f "$out/.complete" ]]; then
    echo "$out"
    return 0
  fi
  log "building $name ($*) into $out — a cold build takes 15-30 minutes on 2 cores"
  rm -rf "$out.tmp"
  mkdir -p "$out.tmp"
  (
    cd "$moddir"
    CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath \
      -tags selinux,notest,grpcnotrace \
      -ldflags "-s -w $ldflags" \
      -o "$out.tmp/" "$@"
  ) >&2
  touch "$out.tmp/.complete"
  rm -rf "$out"
  mv "$out.tmp" "$out"
  # Builds for older pins are dead weight: keep only this one.
  find "$FLOWLINE_CACHE/bin" -mindepth 1 -maxdepth 1 -name "$name-*" ! -name "$(basename "$out")" -exec rm -rf {} +
  echo "$out"
}

kube_version="$(grep -oE 'k8s\.io/kubernetes v[0-9]+\.[0-9]+\.[0-9]+' "$here/kube/go.mod" | head -n1 | cut -d' ' -f2)"
[[ -n "$kube_version" ]] || die "no k8s.io/kubernetes version in hack/kube/go.mod"
kube_minor="$(echo "$kube_version" | cut -d. -f2)"
kube_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  kube_ldflags+=" -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$kube_minor"
  kube_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

kube_dir="$(build_set kube "$here/kube" "$kube_ldflags" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kubectl)"
etcd_dir="$(build_set etcd "$here/etcd" "" \
  go.etcd.io/etcd/server/v3 \
  go.etcd.io/etcd/etcdctl/v3)"

# One stable directory of links so scripts and tests need a single PATH entry.
mkdir -p "$FLOWLINE_CACHE/bin/current"
for f in "$kube_dir"/* "$etcd_dir"/*; do
  ln -sfn "$f" "$FLOWLINE_CACHE/bin/current/$(basename "$f")"
done
# etcd's server main package builds as "server": link it under its usual name.
ln -sfn "$etcd_dir/server" "$FLOWLINE_CACHE/bin/current/etcd"
echo "$FLOWLINE_CACHE/bin/current"
