"""What each step of a Flow converted by `flowline import metaflow` runs: Metaflow's own task
runtime, `python FLOW step NAME …`, with its ids and inputs derived from Flowline's task
variables.

    python3 entrypoint.py --code-dir DIR --flow-file flow.py --step NAME --kind KIND \
        --flow CLASS [--parents a,b] [--split STEP] [--foreach] [--num-parallel N] [--user-code-retries N]

* run id: `fl-<FLOWLINE_RUN_ID>` (the execution name); task id: `t<FLOWLINE_TASK_ID>`, since
  Metaflow's local metadata ignores all-digit task ids. A multi-node step's node 0 is
  Metaflow's control task `control-t<task>` and node i its worker `t<task>-node-<i>`.
* retry count: `AWS_BATCH_JOB_ATTEMPT - 1` (Batch retries; `@catch`'s extra attempt runs
  Metaflow's fallback).
* `--input-paths` by the step's KIND: `start` reads the parameters task, created by `init`
  once (a retried start finds it done and reuses it); `linear` (a branch join too) reads each
  parent's task of the same id; `foreach-body` the split's task (its id without the last
  `-<index>`) with `--split-index FLOWLINE_FOREACH_INDEX`; `foreach-join` every body task,
  counted from the split's `foreach.json`; `parallel` the split's task, `--ubf-context`
  control on node 0 and task elsewhere; `parallel-join` the control task and every worker.
* Metaflow's datastore is `FLOWLINE_DATASTORE_ROOT` (S3), with Flowline's S3 endpoint,
  encryption and retry settings; parameters reach `init` as `METAFLOW_INIT_<NAME>` from
  `FLOWLINE_PARAM_<NAME>`. `@secrets` are resolved by Metaflow itself in the task.
* After the step: a foreach split writes its item list (`[0, …, _foreach_num_splits - 1]`) to
  `FLOWLINE_ARTIFACT_URI/foreach.json`; the task's stdout and stderr are saved as Metaflow
  logs and, with local metadata, the task's metadata is copied to the datastore (as Metaflow's
  `@batch` does) so that `pull.py` can hand it to a reader.

Exits with the step's exit code (125 when the step succeeded but what follows failed, as
`flowline task` does). Standalone: the code package carries this file to images that hold
Metaflow and nothing of Flowline.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from typing import IO, Any, Mapping, Sequence

RUN_PREFIX = "fl-"
TASK_PREFIX = "t"
PARAMS_SUFFIX = "-params"
WRAPPER_FAILED = 125
KINDS = ("start", "linear", "foreach-body", "foreach-join", "parallel", "parallel-join")
# Who the runs belong to in Metaflow's namespaces (`user:flowline`), unless METAFLOW_USER is set.
DEFAULT_USER = "flowline"


class EntrypointError(Exception):
    """A task variable or argument is missing or malformed; the message names it."""


@dataclass(frozen=True)
class Step:
    """The step as the converter described it (the command's arguments)."""

    flow_file: str
    flow: str
    name: str
    kind: str
    parents: tuple[str, ...] = ()
    split: str | None = None
    foreach: bool = False
    num_parallel: int = 0
    user_code_retries: int = 0


@dataclass(frozen=True)
class Task:
    """This task's place, from Flowline's task variables."""

    run_id: str
    task_id: str
    attempt: int
    datastore_root: str
    artifact_uri: str | None
    foreach_index: int | None
    node_index: int | None
    parameters: Mapping[str, str] = field(default_factory=dict)

    @property
    def metaflow_run(self) -> str:
        return RUN_PREFIX + self.run_id

    @property
    def retry_count(self) -> int:
        return self.attempt - 1


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "")
    if not value:
        raise EntrypointError(f"{name} is not set: this runs as a step of a Flowline Flow")
    return value


def _integer(env: Mapping[str, str], name: str, default: int | None = None) -> int | None:
    value = env.get(name, "")
    if value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise EntrypointError(f"{name} is {value!r}, not an integer") from None


def task_from_env(env: Mapping[str, str]) -> Task:
    parameters = {
        name[len("FLOWLINE_PARAM_") :]: value
        for name, value in env.items()
        if name.startswith("FLOWLINE_PARAM_") and value != ""
    }
    return Task(
        run_id=_required(env, "FLOWLINE_RUN_ID"),
        task_id=_required(env, "FLOWLINE_TASK_ID"),
        attempt=_integer(env, "AWS_BATCH_JOB_ATTEMPT", 1) or 1,
        datastore_root=_required(env, "FLOWLINE_DATASTORE_ROOT").rstrip("/"),
        artifact_uri=env.get("FLOWLINE_ARTIFACT_URI") or None,
        foreach_index=_integer(env, "FLOWLINE_FOREACH_INDEX"),
        node_index=_integer(env, "AWS_BATCH_JOB_NODE_INDEX"),
        parameters=parameters,
    )


def node_base(task_id: str) -> str:
    """`0-node-2` -> `0`: the multi-node step's own task id."""
    base, sep, _ = task_id.rpartition("-node-")
    return base if sep else task_id


def metaflow_task_id(step: Step, task: Task) -> str:
    if step.kind == "parallel":
        base = TASK_PREFIX + node_base(task.task_id)
        node = task.node_index or 0
        return f"control-{base}" if node == 0 else f"{base}-node-{node}"
    return TASK_PREFIX + task.task_id


def params_task_id(task: Task) -> str:
    return TASK_PREFIX + task.task_id + PARAMS_SUFFIX


def input_paths(step: Step, task: Task, foreach_count: int | None = None) -> list[str]:
    """Metaflow's `--input-paths` of this task, as `run/step/task` pathspecs."""
    run = task.metaflow_run
    own = TASK_PREFIX + task.task_id
    if step.kind == "start":
        return [f"{run}/_parameters/{params_task_id(task)}"]
    if step.kind == "linear":
        return [f"{run}/{parent}/{own}" for parent in step.parents]
    (parent,) = step.parents or (None,)
    if parent is None:
        raise EntrypointError(f"step {step.name}: --parents is required for kind {step.kind}")
    if step.kind == "foreach-body":
        split_task, sep, _ = task.task_id.rpartition("-")
        if not sep:
            raise EntrypointError(f"FLOWLINE_TASK_ID {task.task_id!r} of a foreach task has no '-<index>'")
        return [f"{run}/{parent}/{TASK_PREFIX}{split_task}"]
    if step.kind == "foreach-join":
        if foreach_count is None:
            raise EntrypointError(f"step {step.name}: the foreach's item count is unknown")
        return [f"{run}/{parent}/{own}-{index}" for index in range(foreach_count)]
    if step.kind == "parallel":
        return [f"{run}/{parent}/{TASK_PREFIX}{node_base(task.task_id)}"]
    if step.kind == "parallel-join":
        if step.num_parallel < 1:
            raise EntrypointError(f"step {step.name}: --num-parallel is required for kind parallel-join")
        return [f"{run}/{parent}/control-{own}"] + [
            f"{run}/{parent}/{own}-node-{node}" for node in range(1, step.num_parallel)
        ]
    raise EntrypointError(f"unknown step kind {step.kind!r}; expected one of {', '.join(KINDS)}")


def metaflow_environment(env: Mapping[str, str], task: Task) -> dict[str, str]:
    """The variables Metaflow reads, from Flowline's (what is already set wins, so a Flow's
    `env` can override any of them)."""
    out: dict[str, str] = {
        "METAFLOW_DEFAULT_DATASTORE": "s3",
        "METAFLOW_DATASTORE_SYSROOT_S3": task.datastore_root,
        "METAFLOW_DEFAULT_METADATA": "service" if env.get("METAFLOW_SERVICE_URL") else "local",
        "METAFLOW_USER": DEFAULT_USER,
        # As Metaflow's own Batch jobs say: @parallel then uses the multi-node job's nodes
        # instead of starting its workers as local processes.
        "METAFLOW_RUNTIME_ENVIRONMENT": "aws-batch",
    }
    for flowline, metaflow in (
        ("FLOWLINE_S3_ENDPOINT", "METAFLOW_S3_ENDPOINT_URL"),
        ("FLOWLINE_S3_SSE", "METAFLOW_S3_SERVER_SIDE_ENCRYPTION"),
        ("FLOWLINE_S3_RETRY_COUNT", "METAFLOW_S3_RETRY_COUNT"),
        ("FLOWLINE_S3_WORKER_COUNT", "METAFLOW_S3_WORKER_COUNT"),
        ("FLOWLINE_TEMPDIR", "METAFLOW_TEMPDIR"),
    ):
        if env.get(flowline):
            out[metaflow] = env[flowline]
    for name, value in task.parameters.items():
        out[f"METAFLOW_INIT_{name}"] = value
    return {name: value for name, value in out.items() if not env.get(name)}


def top_level_options(task: Task, metadata: str) -> list[str]:
    return [
        "--quiet",
        "--no-pylint",
        f"--metadata={metadata}",
        "--environment=local",
        "--datastore=s3",
        f"--datastore-root={task.datastore_root}",
        "--event-logger=nullSidecarLogger",
        "--monitor=nullSidecarMonitor",
    ]


def init_command(python: str, step: Step, task: Task, metadata: str) -> list[str]:
    return [
        python,
        step.flow_file,
        *top_level_options(task, metadata),
        "init",
        "--run-id",
        task.metaflow_run,
        "--task-id",
        params_task_id(task),
    ]


def step_command(python: str, step: Step, task: Task, metadata: str, foreach_count: int | None = None) -> list[str]:
    command = [
        python,
        step.flow_file,
        *top_level_options(task, metadata),
        "step",
        step.name,
        "--run-id",
        task.metaflow_run,
        "--task-id",
        metaflow_task_id(step, task),
        "--retry-count",
        str(task.retry_count),
        "--max-user-code-retries",
        str(step.user_code_retries),
        "--input-paths",
        ",".join(input_paths(step, task, foreach_count)),
    ]
    if step.kind == "foreach-body":
        if task.foreach_index is None:
            raise EntrypointError("FLOWLINE_FOREACH_INDEX is not set in a foreach task")
        command += ["--split-index", str(task.foreach_index)]
    if step.kind == "parallel":
        node = task.node_index or 0
        command += ["--split-index", str(node), "--ubf-context", "ubf_control" if node == 0 else "ubf_task"]
    return command


def split_s3(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise EntrypointError(f"{uri!r} is not an s3:// URI")
    bucket, _, key = uri[len("s3://") :].partition("/")
    return bucket, key


def s3_client(env: Mapping[str, str]) -> Any:
    import boto3
    from botocore.config import Config

    endpoint = env.get("FLOWLINE_S3_ENDPOINT") or None
    retries = _integer(env, "FLOWLINE_S3_RETRY_COUNT", 7) or 0
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        config=Config(
            s3={"addressing_style": "path"} if endpoint else {},
            retries={"max_attempts": retries + 1, "mode": "standard"},
        ),
    )


def sse_arguments(env: Mapping[str, str]) -> dict[str, str]:
    sse = env.get("FLOWLINE_S3_SSE", "")
    if not sse:
        return {}
    out = {"ServerSideEncryption": sse}
    if sse == "aws:kms" and env.get("FLOWLINE_S3_KMS_KEY_ID"):
        out["SSEKMSKeyId"] = env["FLOWLINE_S3_KMS_KEY_ID"]
    return out


def foreach_count(env: Mapping[str, str], step: Step, task: Task) -> int:
    """How many tasks the foreach ran: the length of the list its split wrote."""
    if not step.split:
        raise EntrypointError(f"step {step.name}: --split is required for kind foreach-join")
    uri = f"{task.datastore_root}/{task.run_id}/{step.split}/{task.task_id}/foreach.json"
    bucket, key = split_s3(uri)
    body = s3_client(env).get_object(Bucket=bucket, Key=key)["Body"].read()
    items = json.loads(body)
    if not isinstance(items, list):
        raise EntrypointError(f"{uri} holds no JSON list")
    return len(items)


class Tee:
    """Copies a child's stream to ours and, as Metaflow's log lines, to a file."""

    def __init__(self, source: IO[bytes], sink: IO[bytes], log_path: str) -> None:
        self.thread = threading.Thread(target=self._copy, args=(source, sink, log_path), daemon=True)
        self.thread.start()

    @staticmethod
    def _copy(source: IO[bytes], sink: IO[bytes], log_path: str) -> None:
        from metaflow.mflog.mflog import decorate

        with open(log_path, "ab", buffering=0) as log:
            for line in iter(source.readline, b""):
                log.write(decorate(b"task", line))
                sink.write(line)
                sink.flush()


def run_logged(command: Sequence[str], env: Mapping[str, str], cwd: str, logs: tuple[str, str]) -> int:
    print("flowline metaflow: " + " ".join(shlex.quote(part) for part in command), file=sys.stderr, flush=True)
    child = subprocess.Popen(list(command), env=dict(env), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout is not None and child.stderr is not None
    tees = [Tee(child.stdout, sys.stdout.buffer, logs[0]), Tee(child.stderr, sys.stderr.buffer, logs[1])]
    code = child.wait()
    for tee in tees:
        tee.thread.join()
    return code


def task_datastore(flow: str, task: Task, step_name: str, task_id: str, mode: str) -> Any:
    from metaflow.datastore import FlowDataStore
    from metaflow.plugins.datastores.s3_storage import S3Storage

    datastore = FlowDataStore(flow, None, storage_impl=S3Storage, ds_root=task.datastore_root)
    return datastore.get_task_datastore(
        task.metaflow_run, step_name, task_id, attempt=task.retry_count if mode == "w" else None, mode=mode
    )


def parameters_exist(flow: str, task: Task) -> bool:
    """Whether `init` already made this run's parameters task (a retried start)."""
    try:
        task_datastore(flow, task, "_parameters", params_task_id(task), "r")
    except Exception:
        return False
    return True


def write_foreach_list(env: Mapping[str, str], flow: str, step: Step, task: Task) -> None:
    if not task.artifact_uri:
        raise EntrypointError("FLOWLINE_ARTIFACT_URI is not set: the foreach list has nowhere to go")
    datastore = task_datastore(flow, task, step.name, metaflow_task_id(step, task), "r")
    count = int(datastore["_foreach_num_splits"])
    bucket, key = split_s3(task.artifact_uri.rstrip("/") + "/foreach.json")
    s3_client(env).put_object(
        Bucket=bucket, Key=key, Body=json.dumps(list(range(count))).encode(), **sse_arguments(env)
    )
    print(f"flowline metaflow: foreach over {count} items", file=sys.stderr, flush=True)


def save_logs_and_metadata(flow: str, step: Step, task: Task, task_id: str, metadata: str, code_dir: str) -> None:
    from metaflow.metadata_provider.util import sync_local_metadata_to_datastore
    from metaflow.mflog import TASK_LOG_SOURCE

    datastore = task_datastore(flow, task, step.name, task_id, "w")
    logs = {}
    for stream in ("stdout", "stderr"):
        path = os.path.join(code_dir, f".flowline-{stream}.log")
        if os.path.exists(path):
            with open(path, "rb") as file:
                logs[stream] = file.read()
    datastore.save_logs(TASK_LOG_SOURCE, logs)
    if metadata == "local" and os.path.isdir(os.path.join(code_dir, ".metaflow")):
        cwd = os.getcwd()
        os.chdir(code_dir)
        try:
            sync_local_metadata_to_datastore(".metaflow", datastore)
        finally:
            os.chdir(cwd)


def copy_task_metadata(flow: str, task: Task, step_name: str, task_id: str, code_dir: str) -> bool:
    """Copies what a task's attempts stored of their local metadata into `code_dir/.metaflow`;
    whether there was any."""
    import io
    import tarfile
    import tempfile

    from metaflow import metaflow_config
    from metaflow.datastore import FlowDataStore
    from metaflow.metadata_provider.util import copy_tree
    from metaflow.plugins.datastores.s3_storage import S3Storage

    datastore = FlowDataStore(flow, None, storage_impl=S3Storage, ds_root=task.datastore_root)
    found = False
    for attempt in range(int(metaflow_config.MAX_ATTEMPTS)):
        try:
            attempt_store = datastore.get_task_datastore(
                task.metaflow_run, step_name, task_id, attempt=attempt, mode="r", allow_not_done=True
            )
            if not attempt_store.has_metadata("local_metadata"):
                continue
            key = attempt_store.load_metadata(["local_metadata"])["local_metadata"]
            _, tarball = next(attempt_store.parent_datastore.load_data([key]))
        except Exception:  # an attempt that never ran stored nothing
            continue
        with tempfile.TemporaryDirectory() as scratch:
            with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
                tar.extractall(scratch, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
            copy_tree(os.path.join(scratch, ".metaflow"), os.path.join(code_dir, ".metaflow"), update=True)
        found = True
    return found


class WorkerMirror:
    """On a multi-node step's control node with local metadata: Metaflow's `@batch` makes the
    control task wait until it sees every worker finished, through the metadata, which each
    worker writes in its own container. This copies the workers' metadata from the datastore
    (where their entrypoints store it) into the control's, every two seconds."""

    def __init__(self, flow: str, task: Task, step: Step, code_dir: str) -> None:
        base = TASK_PREFIX + node_base(task.task_id)
        nodes = int(os.environ.get("AWS_BATCH_JOB_NUM_NODES", "1") or 1)
        self.pending = {f"{base}-node-{node}" for node in range(1, nodes)}
        self.args = (flow, task, step.name)
        self.code_dir = code_dir
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        flow, task, step_name = self.args
        while self.pending and not self.done.wait(2.0):
            for task_id in sorted(self.pending):
                try:
                    if copy_task_metadata(flow, task, step_name, task_id, self.code_dir):
                        self.pending.discard(task_id)
                except Exception as error:  # keep trying: the worker may still be running
                    print(f"flowline metaflow: worker {task_id}'s metadata: {error}", file=sys.stderr, flush=True)

    def stop(self) -> None:
        self.done.set()
        self.thread.join(timeout=10)


def parse_args(argv: Sequence[str]) -> tuple[str, Step]:
    parser = argparse.ArgumentParser(description="Runs one step of a Metaflow flow as a Flowline task")
    parser.add_argument("--code-dir", required=True)
    parser.add_argument("--flow-file", required=True)
    parser.add_argument("--flow", required=True, help="the FlowSpec class")
    parser.add_argument("--step", required=True)
    parser.add_argument("--kind", required=True, choices=KINDS)
    parser.add_argument("--parents", default="")
    parser.add_argument("--split")
    parser.add_argument("--foreach", action="store_true")
    parser.add_argument("--num-parallel", type=int, default=0)
    parser.add_argument("--user-code-retries", type=int, default=0)
    args = parser.parse_args(list(argv))
    step = Step(
        flow_file=args.flow_file,
        flow=args.flow,
        name=args.step,
        kind=args.kind,
        parents=tuple(parent for parent in args.parents.split(",") if parent),
        split=args.split,
        foreach=args.foreach,
        num_parallel=args.num_parallel,
        user_code_retries=args.user_code_retries,
    )
    return args.code_dir, step


class Clock:
    """Seconds spent in each phase, printed at the end (the entrypoint's own cost)."""

    def __init__(self) -> None:
        import time

        self.now = time.monotonic
        self.last = self.now()
        self.phases: list[tuple[str, float]] = []

    def lap(self, phase: str) -> None:
        now = self.now()
        self.phases.append((phase, now - self.last))
        self.last = now

    def report(self) -> None:
        laps = ", ".join(f"{phase} {seconds:.2f}s" for phase, seconds in self.phases)
        print(f"flowline metaflow: timing: {laps}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    clock = Clock()
    code = _main(argv, clock)
    clock.report()
    return code


def _main(argv: Sequence[str] | None, clock: Clock) -> int:
    code_dir, step = parse_args(sys.argv[1:] if argv is None else argv)
    code_dir = os.path.abspath(code_dir)
    try:
        task = task_from_env(os.environ)
        # Metaflow reads its configuration when it is imported: set it first, for this process
        # (the datastore calls below) and the step's.
        os.environ.update(metaflow_environment(os.environ, task))
        metadata = os.environ["METAFLOW_DEFAULT_METADATA"]
        flow = step.flow
        count = foreach_count(os.environ, step, task) if step.kind == "foreach-join" else None
        command = step_command(sys.executable, step, task, metadata, count)
    except EntrypointError as error:
        print(f"flowline metaflow: {error}", file=sys.stderr, flush=True)
        return WRAPPER_FAILED
    task_id = metaflow_task_id(step, task)
    env = dict(os.environ)
    logs = (os.path.join(code_dir, ".flowline-stdout.log"), os.path.join(code_dir, ".flowline-stderr.log"))
    env.update(
        {
            "MF_PATHSPEC": f"{flow}/{task.metaflow_run}/{step.name}/{task_id}",
            "MF_ATTEMPT": str(task.retry_count),
            "MF_DATASTORE": "s3",
            "MF_DATASTORE_ROOT": task.datastore_root,
            "MFLOG_STDOUT": logs[0],
            "MFLOG_STDERR": logs[1],
        }
    )
    clock.lap("setup")
    if step.kind == "start" and not parameters_exist(flow, task):
        code = subprocess.call(init_command(sys.executable, step, task, metadata), env=env, cwd=code_dir)
        if code != 0:
            print(f"flowline metaflow: `init` of the run's parameters failed ({code})", file=sys.stderr, flush=True)
            return code
        if metadata == "local":
            save_params_metadata(flow, task, code_dir)
        clock.lap("init")
    mirror = None
    if step.kind == "parallel" and (task.node_index or 0) == 0 and metadata == "local":
        mirror = WorkerMirror(flow, task, step, code_dir)
    try:
        code = run_logged(command, env, code_dir, logs)
    finally:
        if mirror is not None:
            mirror.stop()
    clock.lap("step")
    failed_after = False
    if code == 0 and step.foreach:
        try:
            write_foreach_list(os.environ, flow, step, task)
        except Exception as error:  # the Map state would fail on a missing list: say why here
            print(f"flowline metaflow: the foreach list was not written: {error}", file=sys.stderr, flush=True)
            failed_after = True
    try:
        save_logs_and_metadata(flow, step, task, task_id, metadata, code_dir)
    except Exception as error:  # logs and metadata are for readers; the step's outcome stands
        print(f"flowline metaflow: logs or metadata were not saved: {error}", file=sys.stderr, flush=True)
    clock.lap("foreach list, logs and metadata")
    if code == 0 and failed_after:
        return WRAPPER_FAILED
    return code


def save_params_metadata(flow: str, task: Task, code_dir: str) -> None:
    """The parameters task's metadata, copied to its own datastore so readers find it even
    when start is retried in a fresh container."""
    from metaflow.metadata_provider.util import sync_local_metadata_to_datastore

    datastore = task_datastore(flow, Task(**{**task.__dict__, "attempt": 1}), "_parameters", params_task_id(task), "w")
    cwd = os.getcwd()
    os.chdir(code_dir)
    try:
        sync_local_metadata_to_datastore(".metaflow", datastore)
    finally:
        os.chdir(cwd)


if __name__ == "__main__":
    sys.exit(main())
