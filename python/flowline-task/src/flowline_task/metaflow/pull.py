"""Copies a Flowline run's Metaflow metadata from the datastore into the local metadata of
the current folder, so that Metaflow's client and `resume` see the run:

    export METAFLOW_DEFAULT_DATASTORE=s3 METAFLOW_DATASTORE_SYSROOT_S3=<Flow's datastore root>
    python -m flowline_task.metaflow.pull HelloBatchFlow/fl-<execution name>
    python -c 'from metaflow import Run, namespace; namespace(None); print(Run("HelloBatchFlow/fl-…").data)'

Every attempt of every task stored its metadata in the datastore (as Metaflow's `@batch` does
with local metadata); this merges them all into `./.metaflow`. With a metadata service the
run is there already and nothing needs pulling.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Iterator


def _children(storage: Any, prefix: str) -> Iterator[str]:
    for entry in storage.list_content([prefix]):
        if not entry.is_file:
            yield entry.path.rstrip("/").rsplit("/", 1)[-1]


def pull(pathspec: str) -> int:
    """Returns how many task attempts' metadata were copied."""
    from metaflow import metaflow_config
    from metaflow.datastore import FlowDataStore
    from metaflow.metadata_provider.util import sync_local_metadata_from_datastore
    from metaflow.plugins.datastores.s3_storage import S3Storage

    flow, _, run = pathspec.partition("/")
    if not flow or not run or "/" in run:
        raise SystemExit(f"expected a run pathspec FLOW/RUN_ID, not {pathspec!r}")
    root = metaflow_config.DATASTORE_SYSROOT_S3
    if not root:
        raise SystemExit("METAFLOW_DATASTORE_SYSROOT_S3 is not set: set it to the Flow's datastore root")
    datastore = FlowDataStore(flow, None, storage_impl=S3Storage, ds_root=root)
    storage = datastore._storage_impl
    copied = 0
    for step in sorted(_children(storage, f"{flow}/{run}")):
        for task in sorted(_children(storage, f"{flow}/{run}/{step}")):
            for attempt in range(metaflow_config.MAX_ATTEMPTS):
                try:
                    task_datastore = datastore.get_task_datastore(
                        run, step, task, attempt=attempt, mode="r", allow_not_done=True
                    )
                    if not task_datastore.has_metadata("local_metadata"):
                        continue
                    sync_local_metadata_from_datastore(metaflow_config.DATASTORE_LOCAL_DIR, task_datastore)
                except Exception:  # an attempt that never started has nothing to copy
                    continue
                copied += 1
    if copied == 0:
        raise SystemExit(f"no task metadata of {pathspec} under {root}")
    return copied


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pathspec", help="FLOW/RUN_ID, e.g. HelloBatchFlow/fl-<execution name>")
    args = parser.parse_args(argv)
    copied = pull(args.pathspec)
    print(f"copied the metadata of {copied} task attempts of {args.pathspec} into ./.metaflow", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
