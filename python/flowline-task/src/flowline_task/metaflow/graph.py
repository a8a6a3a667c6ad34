"""Describes a Metaflow flow file as JSON, with Metaflow itself, for `flowline import metaflow`.

    python graph.py FLOW_FILE [--package OUT.tgz]

Prints one JSON document on stdout: the flow's name, its steps (Metaflow's graph: type,
successors, parents, the split a join closes, foreach and `@parallel`), each step's decorators
mapped to what a Flowline step expresses (`@batch`/`@resources` field by field, `@retry`,
`@catch`, `@timeout`, `@environment`), its Parameters with types and defaults, `@schedule` and
S3 `@trigger`s, and `errors` and `warnings` naming what has no Flowline equivalent. Metaflow's
own linter runs first: a flow Metaflow rejects exits 2 with Metaflow's message.

With `--package`, also writes the flow's code package: a gzipped tar of the Python files
beside the flow file (as Metaflow's own package holds) and of this folder's `entrypoint.py`, in
a fixed order with fixed times, so the same code always gives the same bytes.

Standalone on purpose (standard library and Metaflow only): `flowline import metaflow` runs a
copy of this file that it carries.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import inspect
import io
import json
import os
import sys
import tarfile
from pathlib import Path
from typing import Any, Callable, Iterable

# Where the entrypoint lands in the code package; the step's command runs it from there.
ENTRYPOINT_IN_PACKAGE = "_flowline/entrypoint.py"
# Files of the flow's folder that go into the package, as Metaflow's default package suffixes.
PACKAGE_SUFFIXES = (".py", ".R", ".RDS")
# Folders never packaged.
SKIPPED_FOLDERS = {"__pycache__", ".metaflow", ".git", ".venv", "venv", "node_modules"}
# Seconds added to `@timeout` for Batch's attempt duration: Metaflow's own timer fires first
# and raises inside the step, where `@catch` can handle it; Batch's limit is the backstop.
TIMEOUT_GRACE_SECONDS = 60
# Batch's shortest attempt duration.
MIN_BATCH_TIMEOUT = 60

# Step decorators that Flowline expresses (or that Metaflow handles inside the task alone).
HANDLED_STEP_DECORATORS = {
    "step",
    "batch",
    "resources",
    "retry",
    "catch",
    "timeout",
    "environment",
    "parallel",
    "secrets",
    "card",
}
# Step decorators whose effect Flowline cannot give: an error each.
REJECTED_STEP_DECORATORS = {
    "conda": "@conda builds environments with Metaflow's own resolver at deploy time; bake the packages into the step's image (--image) instead",
    "pypi": "@pypi builds environments with Metaflow's own resolver at deploy time; bake the packages into the step's image (--image) instead",
    "kubernetes": "@kubernetes runs a step on Kubernetes; Flowline runs every step on AWS Batch (use @batch)",
}
# Flow decorators that Flowline expresses.
HANDLED_FLOW_DECORATORS = {"schedule", "trigger"}
REJECTED_FLOW_DECORATORS = {
    "project": "@project namespaces deployments by branch; a Flowline Flow is one Kubernetes object: deploy branches as Flows of their own (--name)",
    "conda_base": "@conda_base builds environments with Metaflow's resolver; bake the packages into the image (--image)",
    "pypi_base": "@pypi_base builds environments with Metaflow's resolver; bake the packages into the image (--image)",
    "trigger_on_finish": "@trigger_on_finish needs Metaflow's event backend (Argo Events); Flowline Schedules start on a cron, a rate or an S3 object",
    "exit_hook": "@exit_hook has no Flowline equivalent",
}

# `@batch` attribute -> Flowline `batch` field (same meaning, same unit).
BATCH_FIELDS = {
    "cpu": "cpu",
    "memory": "memory",
    "gpu": "gpu",
    "inferentia": "inferentia",
    "trainium": "trainium",
    "image": "image",
    "queue": "queue",
    "iam_role": "iamRole",
    "execution_role": "executionRole",
    "shared_memory": "sharedMemory",
    "max_swap": "maxSwap",
    "swappiness": "swappiness",
}
# What Metaflow's @batch asks for when nothing says otherwise; @resources never asks for less,
# as in Metaflow (Flowline's own defaults for a step that sets nothing are the same).
BATCH_RESOURCE_DEFAULTS = {"cpu": 1, "memory": 4096}
# `@batch` attributes Flowline cannot express when set (to anything but their default).
BATCH_REJECTED = {
    "efa": "EFA devices",
    "host_volumes": "host volumes",
    "efs_volumes": "EFS volumes",
    "ephemeral_storage": "Fargate ephemeral storage",
    "privileged": "privileged containers",
}
BATCH_WARNED = {
    "log_driver": "the job's log driver (the queue's default, CloudWatch Logs, is used)",
    "log_options": "the job's log options",
    "executable": "the Python executable (the image's python3 runs the step)",
}


class FlowFileError(Exception):
    """The flow file cannot be read or Metaflow rejects it; the message says why."""


def load_flow(path: Path) -> Any:
    """Imports the flow file (as Metaflow does, with its folder on the path) and returns its
    one FlowSpec subclass."""
    from metaflow import FlowSpec

    if not path.is_file():
        raise FlowFileError(f"{path}: no such file")
    sys.path.insert(0, str(path.parent.resolve()))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise FlowFileError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # Metaflow reports bad decorators here, at class creation.
        raise FlowFileError(f"{path}: Metaflow rejects the flow: {error}") from error
    flows = [
        value
        for value in vars(module).values()
        if inspect.isclass(value)
        and issubclass(value, FlowSpec)
        and value is not FlowSpec
        and value.__module__ == module.__name__
    ]
    if len(flows) != 1:
        names = ", ".join(sorted(flow.__name__ for flow in flows)) or "none"
        raise FlowFileError(f"{path}: expected exactly one FlowSpec subclass, found {names}")
    return flows[0]


def lint(flow: Any) -> None:
    """Runs Metaflow's own graph linter; raises with Metaflow's message."""
    from metaflow.lint import linter

    try:
        linter.run_checks(flow._graph)
    except Exception as error:
        line = getattr(error, "line_no", None)
        where = f" (line {line})" if line else ""
        message = getattr(error, "message", None) or str(error)
        raise FlowFileError(f"Metaflow's linter rejects the flow{where}: {message}") from error


def _number(value: Any) -> Any:
    """Metaflow keeps numbers from the command line as strings ("4096"): back to numbers."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        return int(number) if number.is_integer() else number
    return value


def _deco_map(node: Any) -> dict[str, Any]:
    return {deco.name: deco for deco in node.decorators}


def batch_settings(node: Any, problems: Problems) -> dict[str, Any]:
    """`@batch` and `@resources` as a Flowline `batch` object. Metaflow's own rule applies:
    where both set cpu, memory, gpu or shared memory, the larger value wins."""
    decos = _deco_map(node)
    out: dict[str, Any] = {}
    batch = decos.get("batch")
    if batch is not None:
        attributes = batch.attributes
        for name, field in BATCH_FIELDS.items():
            value = attributes.get(name)
            if value is not None:
                out[field] = _number(value)
        for name, what in BATCH_REJECTED.items():
            value = attributes.get(name)
            if value not in (None, False, [], {}, ""):
                problems.error(f"step {node.name}: @batch({name}=...) asks for {what}, which a Flowline step cannot express")
        for name, what in BATCH_WARNED.items():
            if attributes.get(name) not in (None, [], {}, ""):
                problems.warn(f"step {node.name}: @batch({name}=...) is ignored: {what}")
        if attributes.get("use_tmpfs") or attributes.get("tmpfs_size"):
            tmpfs: dict[str, Any] = {}
            if attributes.get("tmpfs_size") is not None:
                tmpfs["size"] = _number(attributes["tmpfs_size"])
            if attributes.get("tmpfs_path"):
                tmpfs["path"] = attributes["tmpfs_path"]
            tmpfs["tempdir"] = bool(attributes.get("tmpfs_tempdir", True))
            out["tmpfs"] = tmpfs
        tags = attributes.get("aws_batch_tags") or {}
        if tags:
            out["tags"] = {str(key): str(value) for key, value in tags.items()}
    resources = decos.get("resources")
    if resources is not None:
        for name, field in (("cpu", "cpu"), ("memory", "memory"), ("gpu", "gpu"), ("shared_memory", "sharedMemory")):
            value = resources.attributes.get(name)
            if value is None:
                continue
            value = max(_number(value), BATCH_RESOURCE_DEFAULTS.get(field, 0))
            out[field] = max(out.get(field, value), value)
        if resources.attributes.get("disk") not in (None, ""):
            problems.warn(f"step {node.name}: @resources(disk=...) is ignored: Batch on EC2 gives a job the instance's disk")
    return out


class Problems:
    """What the conversion could not express: errors stop it, warnings are printed."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def error(self, message: str) -> None:
        self.errors.append(message)

    def warn(self, message: str) -> None:
        self.warnings.append(message)


def _timeout_seconds(attributes: dict[str, Any]) -> int:
    return (
        int(_number(attributes.get("seconds") or 0))
        + 60 * int(_number(attributes.get("minutes") or 0))
        + 3600 * int(_number(attributes.get("hours") or 0))
    )


def step_kind(node: Any, graph: Any) -> str:
    """How the entrypoint finds the step's inputs (see entrypoint.input_paths)."""
    if node.name == graph.start_step:
        return "start"
    parents = sorted(node.in_funcs)
    if node.type == "join" and node.split_parents:
        split = graph[node.split_parents[-1]]
        if split.type == "foreach":
            return "parallel-join" if split.parallel_foreach else "foreach-join"
    if len(parents) == 1 and graph[parents[0]].type == "foreach":
        return "parallel" if graph[parents[0]].parallel_foreach else "foreach-body"
    return "linear"


def describe_step(node: Any, graph: Any, max_attempts: int, problems: Problems) -> dict[str, Any]:
    decos = _deco_map(node)
    for name in decos:
        if name in REJECTED_STEP_DECORATORS:
            problems.error(f"step {node.name}: {REJECTED_STEP_DECORATORS[name]}")
        elif name not in HANDLED_STEP_DECORATORS:
            problems.warn(f"step {node.name}: @{name} has no Flowline equivalent; it runs only where Metaflow runs it inside the task")
    if node.type == "split-switch" or getattr(node, "condition", None):
        problems.error(f"step {node.name}: conditional (switch) transitions cannot be expressed: a Flowline graph is static")
    if node.name in node.out_funcs:
        problems.error(f"step {node.name}: a recursive step cannot be expressed: a Flowline graph has no cycles")

    user_retries = int(_number(decos["retry"].attributes.get("times", 0))) if "retry" in decos else 0
    error_retries = 0
    for deco in node.decorators:
        retry_count = getattr(deco, "step_task_retry_count", None)
        if callable(retry_count):
            user, errors = retry_count()
            error_retries = max(error_retries, int(errors))
    # `minutes_between_retries` is ignored, as Metaflow's own Step Functions deployments do:
    # Batch starts a retry as soon as an attempt failed.
    attempts = user_retries + error_retries + 1
    if attempts > max_attempts:
        problems.error(
            f"step {node.name}: @retry(times={user_retries}){' with @catch' if error_retries else ''} makes {attempts} attempts, more than Metaflow's {max_attempts}"
        )

    step: dict[str, Any] = {
        "name": node.name,
        "type": node.type,
        "kind": step_kind(node, graph),
        "next": list(node.out_funcs),
        "parents": sorted(node.in_funcs),
        "join": node.type == "join",
        "foreach": node.type == "foreach" and not node.parallel_foreach,
        "userCodeRetries": user_retries,
        "retries": user_retries + error_retries,
        "batch": batch_settings(node, problems),
    }
    if step["kind"] in ("foreach-join", "parallel-join"):
        step["split"] = node.split_parents[-1]
        step["splitStep"] = graph[node.split_parents[-1]].out_funcs[0]
    if node.type == "foreach" and node.parallel_foreach:
        step["numParallel"] = int(node.num_parallel)
    if step["kind"] == "parallel":
        if "batch" not in decos:
            problems.error(f"step {node.name}: @parallel needs @batch on the step: Metaflow's multi-node support on Batch comes with it")
        split = graph[step["parents"][0]]
        if not isinstance(split.num_parallel, int) or split.num_parallel < 1:
            problems.error(f"step {split.name}: num_parallel must be a literal integer for a Batch multi-node job")
        step["numNodes"] = int(split.num_parallel) if isinstance(split.num_parallel, int) else 0
    if "timeout" in decos:
        seconds = _timeout_seconds(decos["timeout"].attributes)
        if seconds > 0:
            step["timeoutSeconds"] = max(MIN_BATCH_TIMEOUT, seconds + TIMEOUT_GRACE_SECONDS)
    if "catch" in decos:
        step["catch"] = True
    if "environment" in decos:
        variables = decos["environment"].attributes.get("vars") or {}
        step["env"] = {str(key): str(value) for key, value in variables.items()}
    if "secrets" in decos:
        step["metaflowSecrets"] = True
    return step


def parameter_type(kwargs: dict[str, Any]) -> tuple[str, str | None]:
    """The Flowline type of a Parameter, and a warning when its type has no equivalent."""
    from metaflow.parameters import JSONTypeClass

    kind = kwargs.get("type")
    default = kwargs.get("default")
    if kind is None:
        kind = type(default) if default is not None else str
    if isinstance(kind, JSONTypeClass) or kind is JSONTypeClass:
        return "JSON", None
    if kind is bool:
        return "Bool", None
    if kind is int:
        return "Int", None
    if kind is float:
        return "Float", None
    if kind is str:
        return "String", None
    return "String", f"its type {getattr(kind, '__name__', kind)!r} is passed as a String"


def default_text(value: Any, kind: str) -> str:
    if kind == "Bool":
        return "true" if value else "false"
    if kind == "JSON":
        return value if isinstance(value, str) else json.dumps(value)
    return str(value)


def describe_parameters(flow: Any, problems: Problems) -> list[dict[str, Any]]:
    from metaflow.includefile import IncludeFile

    try:
        from metaflow.user_configs.config_parameters import Config
    except ImportError:  # Metaflow before Configs
        Config = ()  # type: ignore[assignment,misc]
    parameters = []
    for _, parameter in flow._get_parameters():
        name = parameter.name
        if Config and isinstance(parameter, Config):
            problems.error(f"Config {name}: Metaflow Configs are resolved at deploy time; a Flowline Flow cannot carry one (use a Parameter)")
            continue
        if isinstance(parameter, IncludeFile):
            problems.error(f"parameter {name}: IncludeFile uploads a local file when a run starts; pass an S3 URL as a String Parameter instead")
            continue
        kwargs = {**getattr(parameter, "kwargs", {}), **(getattr(parameter, "_override_kwargs", None) or {})}
        kwargs = {key: value for key, value in kwargs.items() if value is not None}
        flowline_name = name.replace("-", "_")
        kind, warning = parameter_type(kwargs)
        if warning:
            problems.warn(f"parameter {name}: {warning}")
        entry: dict[str, Any] = {"name": flowline_name, "type": kind}
        if flowline_name != name:
            entry["metaflowName"] = name
        default = kwargs.get("default")
        if callable(default):
            problems.error(f"parameter {name}: a default computed by a function at deploy time cannot be expressed; give a literal default")
            default = None
        if kwargs.get("required"):
            entry["required"] = True
        elif default is not None:
            entry["default"] = default_text(default, kind)
        if kwargs.get("help"):
            entry["description"] = str(kwargs["help"])[:1024]
        parameters.append(entry)
    return parameters


def five_field_cron(expression: str) -> str:
    """Metaflow passes `cron` to EventBridge as written (six fields, with `?`); Flowline takes
    five-field cron and writes EventBridge's form itself."""
    fields = expression.split()
    if len(fields) == 6:
        fields = fields[:5]
    return " ".join("*" if field == "?" else field for field in fields)


def flow_decorators(flow: Any) -> dict[str, Any]:
    """The flow's decorators by name (Metaflow 2.19 keeps them in the class's flow state)."""
    try:
        from metaflow.flowspec import FlowStateItems

        return dict(flow._flow_state[FlowStateItems.FLOW_DECORATORS])
    except (ImportError, AttributeError, KeyError):
        decorators = getattr(flow, "_flow_decorators", {})
        return dict(decorators) if isinstance(decorators, dict) else {}


def describe_flow_decorators(flow: Any, problems: Problems) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    schedule = trigger = None
    decorators = flow_decorators(flow)
    for name, decos in decorators.items():
        if name in REJECTED_FLOW_DECORATORS:
            problems.error(REJECTED_FLOW_DECORATORS[name])
            continue
        if name not in HANDLED_FLOW_DECORATORS:
            problems.warn(f"@{name} has no Flowline equivalent and is not converted")
            continue
        deco = decos[0] if isinstance(decos, list) else decos
        attributes = deco.attributes
        if name == "schedule":
            if attributes.get("cron"):
                cron = five_field_cron(str(attributes["cron"]))
            elif attributes.get("weekly"):
                cron = "0 0 * * 0"
            elif attributes.get("hourly"):
                cron = "0 * * * *"
            else:
                cron = "0 0 * * *"
            if attributes.get("timezone"):
                problems.warn(f"@schedule(timezone={attributes['timezone']!r}) is ignored: EventBridge schedules are in UTC")
            schedule = {"cron": cron}
        elif name == "trigger":
            trigger = describe_trigger(attributes, problems)
    return schedule, trigger


def describe_trigger(attributes: dict[str, Any], problems: Problems) -> dict[str, Any] | None:
    """`@trigger(event={"name": "s3", "filters": {"bucket": ..., "prefix": ..., "suffix": ...}})`
    becomes a Schedule on S3 object-created events; any other event is an error."""
    events = list(attributes.get("events") or [])
    if attributes.get("event"):
        events.append(attributes["event"])
    if len(events) != 1:
        problems.error(f"@trigger with {len(events)} events cannot be expressed: a Flowline Schedule starts on one S3 event source")
        return None
    event = events[0]
    name = event if isinstance(event, str) else event.get("name")
    filters = {} if isinstance(event, str) else dict(event.get("filters") or {})
    if name != "s3":
        problems.error(f"@trigger(event={name!r}) cannot be expressed: Flowline starts runs on S3 object-created events only (event name 's3')")
        return None
    if not filters.get("bucket"):
        problems.error("@trigger(event='s3') needs the bucket: @trigger(event={'name': 's3', 'filters': {'bucket': ..., 'prefix': ...}})")
        return None
    s3 = {key: str(filters[key]) for key in ("bucket", "prefix", "suffix") if filters.get(key)}
    return {"s3": s3}


def describe(flow: Any, flow_file: str) -> dict[str, Any]:
    """The JSON document of a linted flow."""
    from metaflow import metaflow_config

    graph = flow._graph
    problems = Problems()
    if graph.start_step != "start" or graph.end_step != "end":
        problems.error("the first and last steps must be named start and end")
    max_attempts = int(getattr(metaflow_config, "MAX_ATTEMPTS", 6))
    steps = [describe_step(graph[name], graph, max_attempts, problems) for name in graph.sorted_nodes]
    parameters = describe_parameters(flow, problems)
    schedule, trigger = describe_flow_decorators(flow, problems)
    return {
        "flow": flow.__name__,
        "flowFile": flow_file,
        "steps": steps,
        "parameters": parameters,
        "schedule": schedule,
        "trigger": trigger,
        "errors": problems.errors,
        "warnings": problems.warnings,
    }


def package_members(flow_dir: Path, entrypoint: Path) -> list[tuple[str, Path]]:
    """(name in the package, file) pairs, sorted: the flow folder's Python files and the
    entrypoint."""
    members: list[tuple[str, Path]] = []
    for root, folders, files in os.walk(flow_dir):
        folders[:] = sorted(folder for folder in folders if folder not in SKIPPED_FOLDERS and not folder.startswith("."))
        for name in sorted(files):
            if name.endswith(PACKAGE_SUFFIXES):
                path = Path(root) / name
                members.append((path.relative_to(flow_dir).as_posix(), path))
    members.append((ENTRYPOINT_IN_PACKAGE, entrypoint))
    return sorted(members)


def write_package(members: Iterable[tuple[str, Path]], out: Path) -> None:
    """A reproducible .tgz: fixed order, times, owners and modes."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, path in members:
            data = path.read_bytes()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    with open(out, "wb") as file:
        with gzip.GzipFile(filename="", mode="wb", fileobj=file, mtime=0) as compressed:
            compressed.write(raw.getvalue())


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("flow_file", type=Path)
    parser.add_argument("--package", type=Path, help="write the code package here")
    args = parser.parse_args(argv)
    try:
        flow = load_flow(args.flow_file)
        lint(flow)
        document = describe(flow, args.flow_file.name)
    except FlowFileError as error:
        print(str(error), file=sys.stderr)
        return 2
    if args.package is not None:
        entrypoint = Path(__file__).resolve().parent / "entrypoint.py"
        write_package(package_members(args.flow_file.resolve().parent, entrypoint), args.package)
    out(json.dumps(document, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
