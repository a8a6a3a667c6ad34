# Shared by the hack/ scripts: cache locations and logging.
# Caches live outside the checkout so a fresh clone reuses them and nothing built is committed.
FLOWLINE_CACHE="${FLOWLINE_CACHE:-$HOME/.cache/flowline}"
export FLOWLINE_CACHE
log() { printf '[flowline %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
