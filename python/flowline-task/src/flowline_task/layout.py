"""Where a parent task's artifacts are: its S3 prefix, and its folder under FLOWLINE_INPUT_DIR
when the `flowline task` wrapper downloaded them.

`parent_tasks` is the one place that knows the wrapper's folder layout; change `input_folder`
if the wrapper's layout changes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .context import TaskContext
from .errors import ConfigError


@dataclass(frozen=True)
class ParentPrefix:
    """One entry of FLOWLINE_INPUT_URIS: a task's prefix (`.../<run>/<step>/<task>/`), or a
    whole step's (`.../<run>/<step>/`, across a foreach boundary) whose tasks are listed."""

    uri: str
    step: str
    task: str | None


@dataclass(frozen=True)
class ParentTask:
    step: str
    task: str
    uri: str  # the task's prefix, ending in "/"
    folder: Path | None  # its folder under FLOWLINE_INPUT_DIR; None without the wrapper


def parent_prefixes(context: TaskContext) -> list[ParentPrefix]:
    """FLOWLINE_INPUT_URIS, each split into step and task by its place below the run's prefix
    (FLOWLINE_ARTIFACT_URI without its `<step>/<task>/`)."""
    if not context.input_uris:
        return []
    if context.artifact_uri is None:
        raise ConfigError("FLOWLINE_ARTIFACT_URI is unset: the parents' steps cannot be told apart")
    run = context.artifact_uri.rstrip("/").rsplit("/", 2)[0] + "/"
    found = []
    for uri in context.input_uris:
        parts = uri[len(run) :].rstrip("/").split("/") if uri.startswith(run) else []
        if len(parts) not in (1, 2) or not all(parts):
            raise ConfigError(
                f"FLOWLINE_INPUT_URIS holds {uri!r}, which is not a step or task prefix of this "
                f"run ({run}<step>/ or {run}<step>/<task>/)"
            )
        found.append(ParentPrefix(uri, parts[0], parts[1] if len(parts) == 2 else None))
    return found


def input_folder(input_dir: Path, step: str, task: str, alone: bool) -> Path:
    """The wrapper's layout: a parent task's artifacts are in `<input dir>/<step>/` when it is
    the only parent task of its step, else in `<input dir>/<step>/<task id>/` (the tasks of a
    foreach, the nodes of a multi-node step)."""
    return input_dir / step if alone else input_dir / step / task


def parent_tasks(context: TaskContext, list_tasks: Callable[[str], list[str]]) -> list[ParentTask]:
    """Every parent task, in FLOWLINE_INPUT_URIS order and, within a step, by task id (a
    foreach's tasks in item order). A whole-step prefix is expanded with `list_tasks(uri)`, the
    task ids under it, of which only this task's relatives count (inside an outer foreach the
    step also holds the other outer iterations' tasks): see `related`."""
    tasks: list[tuple[str, str, str]] = []
    for prefix in parent_prefixes(context):
        if prefix.task is not None:
            tasks.append((prefix.step, prefix.task, prefix.uri))
        else:
            ids = sorted(
                (t for t in list_tasks(prefix.uri) if related(context.task_id, t)),
                key=task_order,
            )
            tasks += [(prefix.step, task, f"{prefix.uri}{task}/") for task in ids]
    per_step: dict[str, int] = {}
    for step, _, _ in tasks:
        per_step[step] = per_step.get(step, 0) + 1
    whole_steps = {p.step for p in parent_prefixes(context) if p.task is None}
    return [
        ParentTask(
            step,
            task,
            uri,
            None
            if context.input_dir is None
            else input_folder(
                context.input_dir, step, task, per_step[step] == 1 and step not in whole_steps
            ),
        )
        for step, task, uri in tasks
    ]


def related(task_id: str | None, other: str) -> bool:
    """Whether task `other` of a whole-step parent belongs to task `task_id`: an iteration it
    joins (`<task id>-<index>`: join `0-1` takes `0-1-0`, never `0-0-0`), or the split it is an
    iteration of (body `0-1-0` takes split `0-1`). Any task, without a FLOWLINE_TASK_ID."""
    if task_id is None:
        return True

    def indexes(rest: str) -> bool:
        return all(part.isdigit() for part in rest.split("-"))

    if other.startswith(f"{task_id}-"):
        index = other[len(task_id) + 1 :]
        return index.isdigit()
    if task_id.startswith(f"{other}-"):
        return indexes(task_id[len(other) + 1 :])
    return False


def task_order(task: str) -> list[tuple[int, object]]:
    """Sorts task ids naturally: `0-2` before `0-10`, `0-node-1` before `0-node-10`."""
    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", task) if p]
