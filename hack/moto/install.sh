#!/usr/bin/env bash
# Installs the AWS emulator (moto, pinned in requirements.txt) into a virtualenv in the cache
# outside the checkout and prints the venv's python as the last stdout line; logs go to stderr.
#
# The venv's name carries a hash of requirements.txt, so changing a pin builds a new venv and
# an unchanged file reuses the old one. A marker file written after a successful install makes
# warm runs return at once; an interrupted install leaves no marker and is redone.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/lib.sh
source "$here/../lib.sh"

req="$here/requirements.txt"
key="$(sha256sum "$req" | cut -c1-12)"
venv="$FLOWLINE_CACHE/moto-venv-$key"
marker="$venv/.flowline-complete"

if [[ -f "$marker" && -x "$venv/bin/python" ]]; then
  echo "$venv/bin/python"
  exit 0
fi

command -v python3 >/dev/null || die "python3 is required to install the AWS emulator"
mkdir -p "$FLOWLINE_CACHE"
# Two test runs starting at once must not build the same venv over each other.
exec 9>"$venv.lock"
flock 9
if [[ -f "$marker" && -x "$venv/bin/python" ]]; then
  echo "$venv/bin/python"
  exit 0
fi
log "installing the AWS emulator (moto) into $venv"
rm -rf "$venv"
python3 -m venv "$venv" >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
  -r "$req" >&2
"$venv/bin/python" -c 'import moto.server, moto.batch_simple.models, moto.stepfunctions.parser.models' >&2 \
  || die "moto was installed into $venv but does not import"
touch "$marker"
log "AWS emulator ready"
echo "$venv/bin/python"
