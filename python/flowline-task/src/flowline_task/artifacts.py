"""`parameters()`, `save()`, `load()` and `load_all()`.

Serialisation: the artifact's name decides. A name ending in `.json` is written as JSON (UTF-8;
readable by steps in any language; the value must be JSON-serialisable, and loads back as JSON
types: tuples as lists, dict keys as strings). Any other name is written with pickle (any Python
value, read back as it was; Python only, and only load artifacts of a flow you trust). The name
is the file name as given: `save("model.pkl", m)` writes `model.pkl`, `save("model", m)` writes
`model`.

Where: with FLOWLINE_OUTPUT_DIR (set by the `flowline task` wrapper, which uploads it) `save`
writes a file there; without it, straight to S3 under FLOWLINE_ARTIFACT_URI, encrypted as
FLOWLINE_S3_SSE says. `load` reads the parents' artifacts from FLOWLINE_INPUT_DIR when it is
set (see `layout.input_folder`), else from the parents' prefixes in FLOWLINE_INPUT_URIS.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path, PurePosixPath
from typing import Any

from .context import TaskContext
from .errors import ConfigError, FlowlineTaskError, NotFoundError
from .layout import ParentTask, parent_tasks
from .s3 import S3

# Written by the `flowline task` wrapper beside each task's artifacts.
RESERVED = frozenset({"_task.json"})


def parameters(context: TaskContext | None = None) -> dict[str, Any]:
    """The run's parameters, typed (FLOWLINE_PARAMETERS): numbers, booleans, strings and parsed
    JSON. Empty when the variable is unset."""
    context = TaskContext.from_env() if context is None else context
    return dict(context.parameters)


def encode(name: str, obj: Any) -> bytes:
    """The bytes `save(name, obj)` writes (see the module's rule)."""
    if name.endswith(".json"):
        try:
            return json.dumps(obj).encode()
        except (TypeError, ValueError) as err:
            raise FlowlineTaskError(
                f"artifact {name!r} ends in .json but its value is not JSON-serialisable ({err}); "
                "save it under a name without .json to pickle it"
            ) from None
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def decode(name: str, data: bytes) -> Any:
    """The value `load` returns for the bytes of artifact `name`."""
    return json.loads(data) if name.endswith(".json") else pickle.loads(data)


def save(name: str, obj: Any, context: TaskContext | None = None) -> str:
    """Saves `obj` as this task's artifact `name`; returns where it was written (a local path
    under FLOWLINE_OUTPUT_DIR, or an s3:// URL)."""
    context = TaskContext.from_env() if context is None else context
    key = _check_name(name)
    data = encode(name, obj)
    if context.output_dir is not None:
        path = context.output_dir / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return str(path)
    if context.artifact_uri is None:
        raise ConfigError(
            f"cannot save artifact {name!r}: neither FLOWLINE_OUTPUT_DIR nor FLOWLINE_ARTIFACT_URI is set"
        )
    return S3(context=context).put(key, data)


def load(name: str, step: str | None = None, context: TaskContext | None = None) -> Any:
    """Loads artifact `name` of the parent task that saved it; `step` picks the parent step when
    more than one parent has it. Exactly one parent task must hold it: after a foreach or a
    multi-node step, use `load_all`."""
    found = _find(name, step, context)
    if len(found) > 1:
        where = ", ".join(f"{task.step}/{task.task}" for task, _ in found)
        hint = "" if step else " (pass step=...)"
        raise FlowlineTaskError(
            f"artifact {name!r} is in {len(found)} parent tasks ({where}): use load_all{hint}"
        )
    return found[0][1]


def load_all(name: str, step: str | None = None, context: TaskContext | None = None) -> list[Any]:
    """Artifact `name` of every parent task that has it (of `step` only, when given), in
    FLOWLINE_INPUT_URIS order and by task id within a step: a foreach's values in item order."""
    return [value for _, value in _find(name, step, context)]


def _find(name: str, step: str | None, context: TaskContext | None) -> list[tuple[ParentTask, Any]]:
    context = TaskContext.from_env() if context is None else context
    key = _check_name(name)
    s3: S3 | None = None

    def client() -> S3:
        nonlocal s3
        if s3 is None:
            s3 = S3(context=context)
        return s3

    def list_tasks(uri: str) -> list[str]:
        if context.input_dir is not None:
            folder = context.input_dir / parent_step(uri)
            return [p.name for p in folder.iterdir() if p.is_dir()] if folder.is_dir() else []
        step_prefix = S3(uri, context=context, client=client().client)
        return [p.rstrip("/") for p in step_prefix.list_paths() if p.endswith("/")]

    def parent_step(uri: str) -> str:
        return uri.rstrip("/").rsplit("/", 1)[1]

    parents = parent_tasks(context, list_tasks)
    if not parents:
        raise NotFoundError(f"cannot load artifact {name!r}: FLOWLINE_INPUT_URIS names no parent")
    candidates = [p for p in parents if step is None or p.step == step]
    if not candidates:
        steps = ", ".join(sorted({p.step for p in parents}))
        raise NotFoundError(f"cannot load artifact {name!r} of step {step!r}: the parents are {steps}")
    found: list[tuple[ParentTask, Any]] = []
    for task in candidates:
        if task.folder is not None:
            path = task.folder / key
            if path.is_file():
                found.append((task, decode(name, path.read_bytes())))
            continue
        try:
            data = client().get(task.uri + key)
        except NotFoundError:
            continue
        found.append((task, decode(name, data)))
    if not found:
        where = ", ".join(
            str(t.folder / key) if t.folder is not None else t.uri + key for t in candidates
        )
        raise NotFoundError(f"no parent task saved artifact {name!r}; looked at {where}")
    return found


def _check_name(name: str) -> str:
    path = PurePosixPath(name)
    if not name or path.is_absolute() or ".." in path.parts or "\\" in name or name.endswith("/"):
        raise ValueError(
            f"artifact name {name!r} must be a relative path (a/b.json) without '..' or a trailing '/'"
        )
    if str(path) in RESERVED:
        raise ValueError(f"artifact name {name!r} is reserved for the flowline task wrapper")
    return str(path)


__all__ = ["parameters", "save", "load", "load_all", "encode", "decode"]
