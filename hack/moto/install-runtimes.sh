#!/usr/bin/env bash
# Installs the runtimes that stand in for Batch job images in the emulator (see images.json and
# task_runtime.py): each folder runtimes/<name>/ holds a requirements.txt and optionally a site/
# folder of modules. Each becomes a virtualenv in the cache outside the checkout,
# $FLOWLINE_CACHE/runtime-<name>-<hash>, and this prints one NAME=VENV line per runtime on
# stdout (the launcher's --runtimes file); logs go to stderr.
#
# A requirements line may be a local package, as a path relative to the runtime's folder (the
# python runtime installs ../../../../python/flowline-task); pip builds and copies it into the venv.
#
# As in install.sh: the hash covers every file of the runtime's folder and of the local packages
# its requirements name (not their tests), so a change to either builds a new venv; a marker written after a successful install makes warm runs return at once; a lock keeps
# two runs from building the same venv. site/ is copied into the venv and put on its path by a
# .pth file, so a venv does not depend on the checkout it was built from. Each venv gets a
# pip.conf with no-index: a task's `pip install boto3` is satisfied by what is installed, offline,
# and anything else fails at once instead of reaching for the network.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/lib.sh
source "$here/../lib.sh"

command -v python3 >/dev/null || die "python3 is required to install the emulator's runtimes"
mkdir -p "$FLOWLINE_CACHE"

# hash_files DIR: names and contents of every file under DIR, but caches, build outputs and tests.
hash_files() {
  (
    cd "$1"
    find . -type f -not -path '*/__pycache__/*' -not -name '*.pyc' -not -path './tests/*' \
      -not -path './build/*' -not -path './dist/*' -not -path '*.egg-info/*' -print0 \
      | LC_ALL=C sort -z | xargs -0 -r sha256sum
  )
}

# local_packages DIR: the local package folders DIR/requirements.txt names (lines that are paths).
local_packages() {
  sed -n -E 's/^[[:space:]]*((\.\.?)?\/[^[:space:]#]*).*$/\1/p' "$1/requirements.txt" \
    | while read -r path; do
      [[ "$path" == /* ]] || path="$1/$path"
      [[ -d "$path" ]] || die "$1/requirements.txt names $path, which is not a folder"
      echo "$path"
    done
}

# runtime_key DIR: a hash of every file of the runtime and of the local packages it installs
# (names and contents), and of this script.
runtime_key() {
  local packages
  packages="$(local_packages "$1")" || exit 1
  (
    hash_files "$1"
    while read -r package; do
      [[ -n "$package" ]] || continue
      echo "package $(basename "$package")"
      hash_files "$package"
    done <<<"$packages"
    sha256sum <"$here/install-runtimes.sh"
  ) | sha256sum | cut -c1-12
}

# install_runtime NAME DIR VENV
install_runtime() {
  local name="$1" dir="$2" venv="$3"
  log "installing the emulator's runtime '$name' into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  # From the runtime's folder: pip reads a relative path in requirements.txt from the
  # working directory.
  (cd "$dir" && "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    -r requirements.txt) >&2
  if [[ -d "$dir/site" ]]; then
    cp -r "$dir/site" "$venv/flowline-site"
    find "$venv/flowline-site" -name __pycache__ -prune -exec rm -rf {} +
    local site_packages
    site_packages="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    echo "$venv/flowline-site" >"$site_packages/flowline-site.pth"
  fi
  printf '[global]\nno-index = true\ndisable-pip-version-check = true\n' >"$venv/pip.conf"
  "$venv/bin/python" -c 'import boto3' >&2 || die "runtime '$name' was installed into $venv but boto3 does not import"
  touch "$venv/.flowline-complete"
}

for dir in "$here"/runtimes/*/; do
  dir="${dir%/}"
  name="$(basename "$dir")"
  [[ -f "$dir/requirements.txt" ]] || die "runtime '$name' has no requirements.txt ($dir)"
  venv="$FLOWLINE_CACHE/runtime-$name-$(runtime_key "$dir")"
  if [[ ! -f "$venv/.flowline-complete" ]]; then
    exec 9>"$venv.lock"
    flock 9
    [[ -f "$venv/.flowline-complete" ]] || install_runtime "$name" "$dir" "$venv"
    exec 9>&-
  fi
  echo "$name=$venv"
done
