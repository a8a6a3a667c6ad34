#!/usr/bin/env bash
# Builds the local control plane's binaries (kube-apiserver, kube-controller-manager, kubectl,
# etcd, etcdctl) and the chart tools (helm, and `lua`, which runs Argo CD health scripts) from
# the Go module proxy into a cache outside the checkout.
#
# The pins live in hack/kube/go.mod, hack/etcd/go.mod and hack/helm/go.mod (wrapper modules:
# k8s.io/kubernetes cannot be `go install`ed directly because of its replace directives) and
# hack/lua (a small program of ours). A build is skipped when the cached binaries were built
# from the same go.mod/go.sum (and sources), so warm runs take milliseconds.
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
  # The key covers everything that changes the output: the pins, the module's own sources
  # (hack/lua has some; the wrapper modules have none) and the build flags.
  key="$( (cat "$moddir/go.mod" "$moddir/go.sum"
    find "$moddir" -maxdepth 1 -name '*.go' -print0 | sort -z | xargs -0 -r cat
    echo "$ldflags $*") | sha256sum | cut -c1-16)"
  local out="$FLOWLINE_CACHE/bin/$name-$key"
  if [[ -f "$out/.complete" ]]; then
    echo "$out"
    return 0
  fi
  log "building $name ($*) into $out (cold: kube 15-30 minutes on 2 cores, etcd and helm a few)"
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

# Helm, stamped like upstream's Makefile does: its own version, and the Kubernetes version its
# client libraries speak (the default capabilities of `helm template` and `helm lint`).
helm_version="$(grep -oE '^\s*helm\.sh/helm/v3 v[0-9.]+' "$here/helm/go.mod" | head -n1 | awk '{print $2}')"
[[ -n "$helm_version" ]] || die "no helm.sh/helm/v3 version in hack/helm/go.mod"
helm_kube_minor="$(grep -oE '^\s*k8s\.io/client-go v0\.[0-9]+' "$here/helm/go.mod" | head -n1 | cut -d. -f3)"
[[ -n "$helm_kube_minor" ]] || die "no k8s.io/client-go version in hack/helm/go.mod"
helm_ldflags="-X helm.sh/helm/v3/internal/version.version=$helm_version"
helm_ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  helm_ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$helm_kube_minor"
done
helm_dir="$(build_set helm "$here/helm" "$helm_ldflags" helm.sh/helm/v3/cmd/helm)"
# hack/lua: runs an Argo CD health script (charts/flowline/health/) against an object.
lua_dir="$(build_set lua "$here/lua" "" .)"

# One stable directory of links so scripts and tests need a single PATH entry.
mkdir -p "$FLOWLINE_CACHE/bin/current"
for f in "$kube_dir"/* "$etcd_dir"/* "$helm_dir"/* "$lua_dir"/*; do
  ln -sfn "$f" "$FLOWLINE_CACHE/bin/current/$(basename "$f")"
done
# etcd's server main package builds as "server": link it under its usual name.
ln -sfn "$etcd_dir/server" "$FLOWLINE_CACHE/bin/current/etcd"
echo "$FLOWLINE_CACHE/bin/current"
