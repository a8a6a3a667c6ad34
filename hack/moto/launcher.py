#!/usr/bin/env python3
"""AWS emulator for Flowline's end-to-end tests and local demo: moto 5.2.5, patched.

    python launcher.py --host 127.0.0.1 --port 5000 [--exec-jobs] [--job-log-dir DIR]
        [--images FILE] [--runtimes FILE]

Prints ``moto ready on http://HOST:PORT`` on stdout once it accepts connections (``--port 0``
picks a free port and prints it). SIGTERM or SIGINT stops it, together with any job process.

Before serving, it switches Batch to moto's Docker-free backend and turns on real execution of
state machines (``{"batch": {"use_docker": false}, "stepfunctions": {"execute_state_machine":
true}}``), and ``POST /moto-api/reset`` returns to that configuration.

moto 5.2.5 falls short of AWS in ways Flowline depends on; each ``patch_*`` function below
closes one gap and explains it. They reach into moto internals, which is why requirements.txt
pins moto: re-check every patch against the new source before moving the pin.

Test controls, read from a Batch job's environment (job definition ``containerProperties`` /
node ranges, overridden by the submission's ``containerOverrides`` / ``nodeOverrides``):

``FLOWLINE_EMULATOR_FAIL=<reason>``
    every attempt of the job fails: status FAILED, statusReason <reason>, container exitCode 1.
``FLOWLINE_EMULATOR_RUN_SECONDS=<n>``
    each attempt stays RUNNING (startedAt set) for n seconds before it ends.
``FLOWLINE_EMULATOR_RUNNABLE_SECONDS=<n>``
    the job waits n seconds in RUNNABLE before it starts.

Each is also read without the ``FLOWLINE_`` prefix, which a Flow's step ``env`` may not use.

Without them a job is SUCCEEDED before SubmitJob returns, as in plain moto.

Batch rules are enforced as AWS enforces them, in both modes (batch_strict.py; the README's emulator
table lists them with their tests). SubmitJob refuses (ClientException, HTTP 400) a
FARGATE job definition on a queue of EC2/SPOT compute environments, the reverse, and a
multi-node job definition on a Fargate queue. A job that cannot start goes FAILED without
running, with AWS's reason as statusReason and container reason: secrets without the job
definition's executionRoleArn, container overrides longer than 8,192 characters, a secret or
SSM parameter that cannot be read (``ResourceInitializationError: ...``), and an image that
``images.json`` (``--images`` / ``FLOWLINE_EMULATOR_IMAGES``) maps to no runtime
(``CannotPullContainerError: ...``). Every image of examples/manifests and tests/e2e is mapped;
the launcher's own tests use ``python:3.12-slim``.

With ``--exec-jobs`` (or ``FLOWLINE_EMULATOR_EXEC_JOBS=1``) each job's command runs as a local
process instead: exit code 0 makes it SUCCEEDED, anything else FAILED. Its output goes to
``<job-log-dir>/<logStreamName>.log`` and to CloudWatch Logs (group ``/aws/batch/job``, stream
``container.logStreamName``). The process gets only what the job's container would get
(task_runtime.py), nothing of the launcher's environment: the job's variables, its resolved
secrets, AWS_BATCH_JOB_ID, AWS_BATCH_JOB_ATTEMPT, AWS_BATCH_JQ_NAME, AWS_BATCH_CE_NAME, AWS_EXECUTION_ENV (plus
AWS_BATCH_JOB_NODE_INDEX, AWS_BATCH_JOB_NUM_NODES, AWS_BATCH_JOB_MAIN_NODE_INDEX per node of a
multi-node job, AWS_BATCH_JOB_ARRAY_INDEX per child of an array job), PATH of the runtime its
image maps to (``<venv>/bin:/usr/local/bin:/usr/bin:/bin``, venvs listed by ``--runtimes`` /
``FLOWLINE_EMULATOR_RUNTIMES`` as install-runtimes.sh prints them; ``--task-bin-dir`` /
``FLOWLINE_EMULATOR_TASK_BIN_DIR`` adds the flowline binary's folder after the runtime's), a fresh HOME and working
directory under ``<job-log-dir>/tasks/``, AWS_ENDPOINT_URL (this emulator), AWS_REGION,
AWS_DEFAULT_REGION, credentials of the job definition's jobRoleArn from STS (none without one;
on AWS they come from the container credentials endpoint instead), and NVIDIA_VISIBLE_DEVICES
naming as many GPUs as it asked for. FLOWLINE_EMULATOR_FAIL still fails the job without running
anything, and FLOWLINE_EMULATOR_RUN_SECONDS becomes a minimum time in RUNNING.

``FLOWLINE_EMULATOR_SYNC_POLL_SECONDS`` (launcher environment) sets how often a ``.sync``
task polls its Batch job (default 0.5 s); load tests raise it so hundreds of executions do not
saturate the emulator with its own polling.

Step Functions beyond moto, in modules beside this one: ``sfn_map.py`` runs a Distributed
Map's items as child executions (MaxConcurrency, DescribeMapRun counts, tolerated failures,
ListExecutions by map run); ``sfn_stop.py`` ends a stopped execution's history at
ExecutionAborted, without a TaskSucceeded for the task that was running.

With ``--enforce-iam`` (or ``FLOWLINE_EMULATOR_ENFORCE_IAM=1``) moto authenticates and
authorizes every request against IAM, and the emulator acts for a principal with its
credentials (state machine role, EventBridge target role): ``iam_mode.py`` says what is
checked and how to set up (administrator key ``FLOWLINEADMINKEY0000`` /
``flowline-admin-secret-key``; ``--iam-free-requests N`` or
``FLOWLINE_EMULATOR_IAM_FREE_REQUESTS`` lets N unchecked requests through first).

Test-only endpoints (JSON answers; none of them is counted as an AWS request):

``POST /flowline-test/fire-rule`` with ``{"name": RULE, "eventBusName": optional, "region":
optional, "accountId": optional, "eventId": optional}``
    delivers a scheduled rule's targets as if its schedule had fired (with ``eventId``: that
    firing again, as EventBridge's at-least-once delivery may). It answers 200 with
    ``{"ruleArn", "eventId", "executionArns"}``, 404 for an unknown rule, 400 for a rule without
    a ScheduleExpression, and 409 (no delivery) for a DISABLED rule. A delivery to a state
    machine that fails (IAM refused, machine missing) goes to the target's
    ``DeadLetterConfig`` queue when its policy lets the rule send, as in AWS (at once: the
    RetryPolicy's retries are not emulated).
``POST /flowline-test/redeliver-s3-event`` with ``{"key": KEY, "detailType": optional}``
    delivers the newest S3 event recorded for that object key (of that detail-type, by default
    "Object Created") to EventBridge again, with the
    same event id, as EventBridge's at-least-once delivery may. Answers ``{"eventId",
    "executionArns"}`` (executions started directly by rules), or 404.
``GET /flowline-test/requests``
    the AWS API requests handled since start or the last reset, as ``{"total": N,
    "operations": {"states:CreateStateMachine": 3, ...}, "byAccessKey": {"AKID": {...}}}``:
    counted per ``service:Operation`` and per access key id (from the SigV4 credential;
    ``anonymous`` for unsigned requests), so a test can count only its own client's calls,
    e.g. to prove that a reconcile that changes nothing makes no writes. Requests that moto's
    Step Functions interpreter makes itself carry the access key ``ak``
    (INTERPRETER_ACCESS_KEY); with ``--enforce-iam``, the access key id of the STS session of
    the state machine's role (``ASIA…``). Operation names come
    from X-Amz-Target (JSON services), ``Action=`` (query services such as IAM and STS), the
    botocore model's request URIs (Batch and other REST services), and method, path and
    sub-resource for S3 (approximate for unusual requests). /moto-api/* is not counted.
``GET /flowline-test/failed-invocations``
    the rule deliveries that failed, as ``{"failedInvocations": [{"ruleArn", "targetId",
    "targetArn", "eventId", "reason"}]}``: to SQS queues that are missing or whose policy does
    not let the rule send, and, with ``--enforce-iam``, to Step Functions when IAM refused.
``POST /flowline-test/requests/reset``
    clears the counters (``/moto-api/reset`` leaves them alone) and answers the empty counts.
"""

from __future__ import annotations

import argparse
import base64
import copy
import fnmatch
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any

import batch_strict
import iam_mode
import sfn_map
import sfn_stop
import task_runtime

LOG = logging.getLogger("flowline.emulator")

ENV_FAIL = "FLOWLINE_EMULATOR_FAIL"
ENV_RUN_SECONDS = "FLOWLINE_EMULATOR_RUN_SECONDS"
ENV_RUNNABLE_SECONDS = "FLOWLINE_EMULATOR_RUNNABLE_SECONDS"
ENV_EXEC_JOBS = "FLOWLINE_EMULATOR_EXEC_JOBS"

EMULATOR_CONFIG = {
    "batch": {"use_docker": False},
    "stepfunctions": {"execute_state_machine": True},
}

DEFAULT_ACCOUNT = "123456789012"
DEFAULT_REGION = "us-east-1"
BATCH_LOG_GROUP = "/aws/batch/job"
ESSENTIAL_EXITED = "Essential container in task exited"
EXECUTION_STOPPED = "Execution stopped"

TERMINAL = ("SUCCEEDED", "FAILED")
# Access key of the clients moto's Step Functions interpreter calls other services with; the
# request counter reports their requests under it.
INTERPRETER_ACCESS_KEY = "ak"


class Settings:
    """Launcher options that the patches read at run time."""

    exec_jobs = False
    job_log_dir = ""
    connect_host = "127.0.0.1"
    port = 5000


SETTINGS = Settings()

# Batch job ids submitted by each Step Functions execution (execution ARN -> job ids), so that
# StopExecution can terminate the jobs it leaves behind.
_EXECUTION_JOBS: dict[str, set[str]] = defaultdict(set)
_EXECUTION_JOBS_LOCK = threading.Lock()
# Executions already stopped: a job whose submission completes after the stop is ended at once.
_STOPPED_EXECUTIONS: set[str] = set()

# Every job process started in --exec-jobs mode, so shutdown and reset can kill them.
_PROCESSES: set[subprocess.Popen] = set()
_PROCESSES_LOCK = threading.Lock()

# Guards insertions into a Batch backend's job table against concurrent snapshots.
_JOBS_LOCK = threading.RLock()


def apply_emulator_config() -> None:
    from moto.core.config import default_user_config

    for section, values in EMULATOR_CONFIG.items():
        default_user_config[section] = dict(values)


def _iso(ts: Any) -> str:
    if isinstance(ts, (int, float)):
        return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(ts)


def _now_ms() -> int:
    return int(time.time() * 1000)


# ---------------------------------------------------------------------------------------------
# Shared helpers: boto clients used by the Step Functions interpreter
# ---------------------------------------------------------------------------------------------

_CLIENTS: dict[tuple[str, str, str], Any] = {}
_CLIENTS_LOCK = threading.Lock()


def patch_interpreter_clients() -> None:
    """The interpreter's service tasks build a fresh boto3 client for every call, against
    ``localhost:$MOTO_PORT``. Creating boto3 clients from many execution threads at once through
    the default session is not thread-safe (sporadic KeyError/credential errors under concurrent
    executions), and ``localhost`` may not be the address the server is bound to. One cached
    client per service and region, pointed at the bound address, avoids both."""
    import importlib
    import pkgutil

    import boto3
    from botocore.config import Config

    import moto.stepfunctions.parser.asl as asl_pkg
    from moto.stepfunctions.parser.asl.component.common.timeouts.timeout import TimeoutSeconds
    from moto.stepfunctions.parser.asl.utils import boto_client as boto_client_module

    original = boto_client_module.boto_client_for
    session = boto3.session.Session()

    def boto_client_for(region: str, service: str, state_credentials: Any = None) -> Any:
        # With --enforce-iam, the state machine role's STS session (iam_mode); else the fixed key.
        role_arn = getattr(state_credentials, "role_arn", None)
        access_key, secret_key, token = iam_mode.interpreter_credentials(role_arn, region) or (
            INTERPRETER_ACCESS_KEY,
            "sk",
            None,
        )
        key = (service, region, access_key)
        with _CLIENTS_LOCK:
            client = _CLIENTS.get(key)
            if client is None:
                host = SETTINGS.connect_host
                if ":" in host:
                    host = f"[{host}]"
                client = session.client(
                    service_name=service,
                    region_name=region,
                    aws_access_key_id=access_key,
                    aws_secret_access_key=secret_key,
                    aws_session_token=token,
                    endpoint_url=f"http://{host}:{SETTINGS.port}",
                    config=Config(
                        parameter_validation=False,
                        retries={"max_attempts": 0, "total_max_attempts": 1},
                        connect_timeout=TimeoutSeconds.DEFAULT_TIMEOUT_SECONDS,
                        read_timeout=TimeoutSeconds.DEFAULT_TIMEOUT_SECONDS,
                        max_pool_connections=50,
                        s3={"addressing_style": "path"},
                    ),
                )
                _CLIENTS[key] = client
            return client

    # Modules bind the function by name at import, so replace it in every interpreter module.
    for info in pkgutil.walk_packages(asl_pkg.__path__, asl_pkg.__name__ + "."):
        try:
            importlib.import_module(info.name)
        except Exception:  # noqa: BLE001 - an optional integration that fails to import is unused
            continue
    for module in list(sys.modules.values()):
        name = getattr(module, "__name__", "") or ""
        if name.startswith("moto.stepfunctions") and getattr(module, "boto_client_for", None) is original:
            module.boto_client_for = boto_client_for


# ---------------------------------------------------------------------------------------------
# Patch 1: batch:submitJob(.sync) Task states
# ---------------------------------------------------------------------------------------------

_SERVICE_MODELS: dict[str, Any] = {}


def _service_operation(service: str, action: str) -> Any:
    """The botocore operation model of ``action`` (any casing) of ``service``."""
    import botocore.session

    model = _SERVICE_MODELS.get(service)
    if model is None:
        model = _SERVICE_MODELS[service] = botocore.session.get_session().get_service_model(service)
    wanted = action.replace("_", "").lower()
    for name in model.operation_names:
        if name.lower() == wanted:
            return model.operation_model(name)
    return None


def _batch_operation(action: str) -> Any:
    return _service_operation("batch", action)


def to_api_shape(value: Any, shape: Any) -> Any:
    """Rewrites ASL's PascalCase request into the API's member names, following the botocore
    input shape and matching member names case-insensitively. Map keys (Parameters, Tags) are
    data and stay as written; names the model does not know pass through unchanged."""
    from botocore.model import ListShape, MapShape, StructureShape

    if isinstance(shape, StructureShape) and isinstance(value, dict):
        members = {name.lower(): (name, member) for name, member in shape.members.items()}
        out = {}
        for key, item in value.items():
            match = members.get(key.lower())
            if match is None:
                out[key] = item
            else:
                out[match[0]] = to_api_shape(item, match[1])
        return out
    if isinstance(shape, ListShape) and isinstance(value, list):
        return [to_api_shape(item, shape.member) for item in value]
    if isinstance(shape, MapShape) and isinstance(value, dict):
        return {key: to_api_shape(item, shape.value) for key, item in value.items()}
    if shape is not None and shape.type_name == "string" and value is not None and not isinstance(value, str):
        return json.dumps(value)
    return value


def to_sfn_shape_in_place(value: Any, shape: Any) -> Any:
    """Rewrites an API response into the PascalCase that Step Functions returns for service
    integrations (member name with its first letter upper-cased). Dicts and lists are rewritten
    in place because moto's .sync resolver keeps a reference into the response it normalises."""
    from botocore.model import ListShape, MapShape, StructureShape

    if isinstance(value, dict) and (shape is None or isinstance(shape, StructureShape)):
        members = shape.members if shape is not None else {}
        items = list(value.items())
        value.clear()
        for key, item in items:
            member = members.get(key)
            new_key = key[:1].upper() + key[1:]
            value[new_key] = to_sfn_shape_in_place(item, member) if member is not None else item
        return value
    if isinstance(shape, ListShape) and isinstance(value, list):
        for i, item in enumerate(value):
            value[i] = to_sfn_shape_in_place(item, shape.member)
        return value
    if isinstance(shape, MapShape) and isinstance(value, dict):
        for key in list(value):
            value[key] = to_sfn_shape_in_place(value[key], shape.value)
        return value
    return value


def patch_sfn_batch_integration() -> None:
    """``arn:aws:states:::batch:submitJob[.sync]`` tasks fail with States.Runtime "'JobName'":
    moto's service-task base class leaves the ``_normalise_parameters`` / ``_normalise_response``
    hooks empty, so ASL's PascalCase parameters reach SubmitJob unconverted and the camelCase
    answers never become the PascalCase that the .sync resolver (and real Step Functions
    output) uses. These hooks convert both ways with botocore's Batch service model. The
    resolver then already behaves as AWS does: on SUCCEEDED the task output is the PascalCase
    job description; on FAILED the task fails with States.TaskFailed and that description as
    Cause. The submit step also records which execution submitted which job (for StopExecution)."""
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_batch as batch_task,
    )

    cls = batch_task.StateTaskServiceBatch

    def _normalise_parameters(self, parameters, boto_service_name=None, service_action_name=None):
        operation = _batch_operation(self._get_boto_service_action(service_action_name))
        if operation is None or operation.input_shape is None:
            return
        converted = to_api_shape(dict(parameters), operation.input_shape)
        parameters.clear()
        parameters.update(converted)

    def _normalise_response(self, response, boto_service_name=None, service_action_name=None):
        operation = _batch_operation(self._get_boto_service_action(service_action_name))
        if operation is None or operation.output_shape is None or not isinstance(response, dict):
            return
        to_sfn_shape_in_place(response, operation.output_shape)

    original_eval = cls._eval_service_task

    def _eval_service_task(self, env, resource_runtime_part, normalised_parameters, state_credentials):
        original_eval(self, env, resource_runtime_part, normalised_parameters, state_credentials)
        try:
            job_id = env.stack[-1].get("jobId")
            execution_arn = env.states.context_object.context_object_data["Execution"]["Id"]
        except Exception:  # noqa: BLE001 - bookkeeping only; never fail the task for it
            return
        if not (job_id and execution_arn):
            return
        with _EXECUTION_JOBS_LOCK:
            stopped = execution_arn in _STOPPED_EXECUTIONS
            if not stopped:
                _EXECUTION_JOBS[execution_arn].add(job_id)
        if stopped:
            # StopExecution arrived while SubmitJob was in flight and could not see this job.
            stop_execution_jobs(execution_arn, {job_id})

    cls._normalise_parameters = _normalise_parameters
    cls._normalise_response = _normalise_response
    cls._eval_service_task = _eval_service_task


def patch_sync_poll_interval() -> None:
    """A ``.sync`` task in moto polls its Batch job every 0.5 s from its own thread; real Step
    Functions waits for the job's events instead. Hundreds of running executions then keep the
    emulator busy answering itself. ``FLOWLINE_EMULATOR_SYNC_POLL_SECONDS`` sets the interval
    (for load tests; the default stays 0.5 s so short tests stay fast)."""
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_callback as callback,
    )

    seconds = _float_env(os.environ, "FLOWLINE_EMULATOR_SYNC_POLL_SECONDS")
    if seconds > 0:
        callback._DELAY_SECONDS_SYNC_CONDITION_CHECK = seconds


def patch_sfn_states_integration() -> None:
    """``arn:aws:states:::states:startExecution`` tasks fail with States.Runtime
    "'StateMachineArn'": as for Batch, moto leaves the request and response normalisation
    empty, so ASL's PascalCase parameters never become StartExecution's members and the answer
    is not PascalCase. These hooks convert both ways with botocore's Step Functions model (an
    ``Input`` object becomes its JSON text, as AWS does)."""
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_sfn as sfn_task,
    )

    cls = sfn_task.StateTaskServiceSfn

    def _normalise_parameters(self, parameters, boto_service_name=None, service_action_name=None):
        action = self._get_boto_service_action(service_action_name)
        operation = _service_operation("stepfunctions", action)
        if operation is None or operation.input_shape is None:
            return
        if action == "start_execution" and not isinstance(parameters.get("Input", ""), str):
            parameters["Input"] = json.dumps(parameters["Input"], separators=(",", ":"))
        converted = to_api_shape(dict(parameters), operation.input_shape)
        parameters.clear()
        parameters.update(converted)

    def _normalise_response(self, response, boto_service_name=None, service_action_name=None):
        operation = _service_operation("stepfunctions", self._get_boto_service_action(service_action_name))
        if operation is None or operation.output_shape is None or not isinstance(response, dict):
            return
        to_sfn_shape_in_place(response, operation.output_shape)
        _timestamps_to_millis_in_place(response)

    cls._normalise_parameters = _normalise_parameters
    cls._normalise_response = _normalise_response


def _timestamps_to_millis_in_place(value: Any) -> None:
    """Step Functions gives timestamps in task results as epoch milliseconds; boto's datetimes
    would also make the execution's output unserialisable."""
    import datetime

    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, item in list(items):
        if isinstance(item, datetime.datetime):
            value[key] = int(item.timestamp() * 1000)
        else:
            _timestamps_to_millis_in_place(item)


# ---------------------------------------------------------------------------------------------
# Batch helpers: effective container properties and environment of a job
# ---------------------------------------------------------------------------------------------


def apply_container_overrides(props: dict | None, overrides: dict | None) -> dict:
    """Container properties after a submission's overrides, as Batch applies them: command
    replaced, environment merged by name (override wins), resourceRequirements merged by type."""
    result = copy.deepcopy(props or {})
    overrides = overrides or {}
    if overrides.get("command") is not None:
        result["command"] = list(overrides["command"])
    if overrides.get("environment"):
        merged = {e.get("name"): e.get("value") for e in result.get("environment") or []}
        for entry in overrides["environment"]:
            merged[entry.get("name")] = entry.get("value")
        result["environment"] = [{"name": k, "value": v} for k, v in merged.items()]
    if overrides.get("resourceRequirements"):
        merged = {r.get("type"): r for r in result.get("resourceRequirements") or []}
        for req in overrides["resourceRequirements"]:
            merged[req.get("type")] = dict(req)
        result["resourceRequirements"] = list(merged.values())
    for key in ("instanceType", "vcpus", "memory"):
        if overrides.get(key) is not None:
            result[key] = overrides[key]
    return result


def _extra(job: Any) -> dict:
    return getattr(job, "flowline_extra", None) or {}


def _num_nodes(job: Any) -> int:
    node_overrides = _extra(job).get("nodeOverrides") or {}
    if node_overrides.get("numNodes"):
        return int(node_overrides["numNodes"])
    return int((job.job_definition.node_properties or {}).get("numNodes") or 1)


def _main_node(job: Any) -> int:
    return int((job.job_definition.node_properties or {}).get("mainNode") or 0)


def _covers(target_nodes: str, index: int, num_nodes: int) -> bool:
    target_nodes = (target_nodes or "").strip()
    if ":" not in target_nodes:
        return target_nodes != "" and int(target_nodes) == index
    start, end = target_nodes.split(":", 1)
    low = int(start) if start.strip() else 0
    high = int(end) if end.strip() else num_nodes - 1
    return low <= index <= high


def node_container(job: Any, index: int) -> dict:
    """Container properties of node ``index`` of a multi-node job, overrides applied."""
    num_nodes = _num_nodes(job)
    container: dict = {}
    for node_range in (job.job_definition.node_properties or {}).get("nodeRangeProperties") or []:
        if _covers(node_range.get("targetNodes", ""), index, num_nodes):
            container = copy.deepcopy(node_range.get("container") or {})
            break
    node_overrides = _extra(job).get("nodeOverrides") or {}
    for override in node_overrides.get("nodePropertyOverrides") or []:
        if _covers(override.get("targetNodes", ""), index, num_nodes):
            container = apply_container_overrides(container, override.get("containerOverrides"))
    return container


def job_container(job: Any, index: int | None = None) -> dict:
    if job.job_definition.type == "multinode":
        return node_container(job, _main_node(job) if index is None else index)
    return apply_container_overrides(job.job_definition.container_properties, job.container_overrides)


def job_environment(job: Any, index: int | None = None) -> dict[str, str]:
    env = {}
    for entry in job_container(job, index).get("environment") or []:
        if entry.get("name"):
            env[entry["name"]] = "" if entry.get("value") is None else str(entry["value"])
    # A Flow's step environment may not use FLOWLINE_ names (the API reserves them), so the
    # job controls are also read without that prefix: EMULATOR_FAIL, EMULATOR_RUN_SECONDS…
    for name in (ENV_FAIL, ENV_RUN_SECONDS, ENV_RUNNABLE_SECONDS):
        alias = name.removeprefix("FLOWLINE_")
        if name not in env and alias in env:
            env[name] = env[alias]
    return env


# ---------------------------------------------------------------------------------------------
# Patch 2: DescribeJobs under concurrency; job descriptions that match AWS
# ---------------------------------------------------------------------------------------------


def patch_batch_describe_jobs() -> None:
    """DescribeJobs answers HTTP 500 under concurrent executions: it iterates the backend's job
    dict while other request threads insert into it ("dictionary changed size during
    iteration"), and each describe appended to the job's own override list (so the environment
    grew with every call). Lookups now go through a snapshot of the table, and a job is
    described under its own lock from copies."""
    from moto.batch.models import BatchBackend, Job

    def describe_jobs(self, jobs):
        with _JOBS_LOCK:
            table = dict(self._jobs)
        if not jobs:
            selected = list(table.values())
        else:
            selected, seen = [], set()
            for ident in jobs:
                job = table.get(ident) or table.get(str(ident).rsplit("/", 1)[-1])
                if job is not None and job.job_id not in seen:
                    seen.add(job.job_id)
                    selected.append(job)
        return [job.describe() for job in selected]

    def _container_details(self):
        details = job_container(self)
        details.setdefault("command", [])
        details.setdefault("environment", [])
        details.setdefault("volumes", [])
        details.setdefault("mountPoints", [])
        details.setdefault("ulimits", [])
        details.setdefault("privileged", False)
        details.setdefault("readonlyRootFilesystem", False)
        details.setdefault("vcpus", self.job_definition._get_resource_requirement("vcpus", 1))
        details.setdefault("memory", self.job_definition._get_resource_requirement("memory", 512))
        if self.exit_code is not None:
            details["exitCode"] = self.exit_code
        reason = getattr(self, "flowline_container_reason", None)
        if reason:
            details["reason"] = reason
        if self.log_stream_name:
            details["logStreamName"] = self.log_stream_name
        return details

    original_describe = Job.describe

    def describe(self):
        ctl = getattr(self, "flowline_ctl", None)
        if self._child_jobs:
            _settle_array_parent(self)
        lock = ctl.lock if ctl is not None else threading.RLock()
        with lock:
            result = copy.deepcopy(original_describe(self))
            started = ctl.started if ctl is not None else True
        if not started:
            result.pop("startedAt", None)
        jd = self.job_definition
        extra = _extra(self)
        retry = extra.get("retryStrategy") or jd.retry_strategy
        if retry:
            result["retryStrategy"] = retry
        propagate = extra.get("propagateTags", jd.propagate_tags)
        if propagate is not None:
            result["propagateTags"] = propagate
        if jd.platform_capabilities:
            result["platformCapabilities"] = jd.platform_capabilities
        timeout = self.timeout or jd.timeout
        if timeout:
            result["timeout"] = timeout
        for key, target in (
            ("shareIdentifier", "shareIdentifier"),
            ("schedulingPriorityOverride", "schedulingPriority"),
        ):
            if extra.get(key) is not None:
                result[target] = extra[key]
        if jd.type == "multinode":
            node_properties = copy.deepcopy(jd.node_properties or {})
            node_properties["numNodes"] = _num_nodes(self)
            result["nodeProperties"] = node_properties
            if self.exit_code is not None:
                result.setdefault("container", {})["exitCode"] = self.exit_code
        return result

    BatchBackend.describe_jobs = describe_jobs
    Job._container_details = _container_details
    Job.describe = describe


# ---------------------------------------------------------------------------------------------
# Patch 3: job definitions round-trip what was registered
# ---------------------------------------------------------------------------------------------

_JOB_DEF_HANDLED = {
    "containerProperties",
    "nodeProperties",
    "eksProperties",
    "jobDefinitionName",
    "parameters",
    "tags",
    "retryStrategy",
    "type",
    "timeout",
    "platformCapabilities",
    "propagateTags",
}


def patch_batch_job_definitions() -> None:
    """DescribeJobDefinitions drops ``nodeProperties`` (multi-node definitions come back as bare
    ``type: multinode``), and a new revision of an existing name is built by moto's ``update``,
    which copies ``platformCapabilities`` / ``propagateTags`` from the previous revision and
    inherits its retryStrategy, parameters and container properties when omitted. AWS stores each
    revision exactly as registered. Fields moto's handler does not read (schedulingPriority,
    ecsProperties, ...) are kept and echoed back as well; null fields are left out as AWS does.
    (retryStrategy.evaluateOnExit[].action is stored lower-cased, which is what AWS returns.)"""
    from moto.batch.exceptions import ClientException
    from moto.batch.models import BatchBackend, JobDefinition
    from moto.batch.responses import BatchResponse

    def register_job_definition(
        self,
        def_name,
        parameters,
        _type,
        tags,
        retry_strategy,
        container_properties,
        node_properties,
        eks_properties,
        timeout,
        platform_capabilities,
        propagate_tags,
    ):
        if def_name is None:
            raise ClientException("jobDefinitionName must be provided")
        if _type == "multinode" and not node_properties:
            raise ClientException("nodeProperties must be provided for multinode job definitions")
        if retry_strategy is not None and "evaluateOnExit" in retry_strategy:
            for rule in retry_strategy["evaluateOnExit"]:
                if "action" in rule:
                    rule["action"] = rule["action"].lower()
        latest = self.get_job_definition_by_name(def_name)
        job_def = JobDefinition(
            def_name,
            parameters,
            _type,
            container_properties,
            node_properties=node_properties,
            eks_properties=eks_properties,
            tags=tags or {},
            retry_strategy=retry_strategy,
            timeout=timeout,
            backend=self,
            platform_capabilities=platform_capabilities,
            propagate_tags=propagate_tags,
            revision=latest.revision if latest is not None else 0,
        )
        self._job_definitions[job_def.arn] = job_def
        return job_def

    original_describe = JobDefinition.describe

    def describe(self):
        result = original_describe(self)
        if self.node_properties is not None:
            result["nodeProperties"] = self.node_properties
        for key, value in (getattr(self, "flowline_extra", None) or {}).items():
            result.setdefault(key, value)
        return {key: value for key, value in result.items() if value is not None}

    original_register = BatchResponse.registerjobdefinition

    def registerjobdefinition(self):
        body = json.loads(self.body or "{}")
        answer = original_register(self)
        extra = {k: v for k, v in body.items() if k not in _JOB_DEF_HANDLED and v is not None}
        if extra:
            job_def = self.batch_backend.get_job_definition_by_arn(json.loads(answer)["jobDefinitionArn"])
            if job_def is not None:
                job_def.flowline_extra = extra
        return answer

    BatchBackend.register_job_definition = register_job_definition
    JobDefinition.describe = describe
    BatchResponse.registerjobdefinition = registerjobdefinition


# ---------------------------------------------------------------------------------------------
# Patch 6 (and 7, 8): Batch job lifecycle
# ---------------------------------------------------------------------------------------------


_JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


class JobControl:
    """Lifecycle state the launcher keeps beside moto's Job object."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.stop = threading.Event()
        self.started = False
        self.attempt = 0
        self.processes: list[subprocess.Popen] = []


def _float_env(env: dict, name: str) -> float:
    try:
        return max(0.0, float(env.get(name) or 0))
    except ValueError:
        LOG.warning("ignoring %s=%r: not a number", name, env.get(name))
        return 0.0


def _retry_strategy(job: Any) -> dict:
    return _extra(job).get("retryStrategy") or job.job_definition.retry_strategy or {}


def _max_attempts(job: Any) -> int:
    try:
        return min(10, max(1, int(_retry_strategy(job).get("attempts") or 1)))
    except (TypeError, ValueError):
        return 1


def _should_retry(job: Any, exit_code: int | None, status_reason: str, container_reason: str) -> bool:
    """Batch's evaluateOnExit: the first rule whose given conditions all match decides; when
    none matches, the job is retried."""
    for rule in _retry_strategy(job).get("evaluateOnExit") or []:
        checks = (
            ("onExitCode", "" if exit_code is None else str(exit_code)),
            ("onStatusReason", status_reason or ""),
            ("onReason", container_reason or ""),
        )
        if all(fnmatch.fnmatchcase(value, rule[key]) for key, value in checks if key in rule):
            return str(rule.get("action", "")).lower() == "retry"
    return True


def _attempt_timeout(job: Any) -> float | None:
    timeout = job.timeout or job.job_definition.timeout or {}
    seconds = timeout.get("attemptDurationSeconds")
    return float(seconds) if seconds else None


def _start_attempt(job: Any, ctl: JobControl) -> None:
    with ctl.lock:
        ctl.attempt += 1
        now = datetime.now()
        if not ctl.started:
            ctl.started = True
        job.job_started_at = now
        if not job.log_stream_name:
            job.log_stream_name = job._stream_name
        job.latest_attempt = {
            "container": {
                "containerInstanceArn": f"arn:aws:ecs:{job.job_definition._region}:{job.job_definition.backend.account_id}:container-instance/flowline-emulator",
                "taskArn": f"arn:aws:ecs:{job.job_definition._region}:{job.job_definition.backend.account_id}:task/flowline-emulator/{uuid.uuid4().hex}",
                "logStreamName": job.log_stream_name,
                "networkInterfaces": [],
            },
            "startedAt": _now_ms(),
        }
        job.attempts.append(job.latest_attempt)
        job.status = "RUNNING"


def _end_attempt(
    job: Any, ctl: JobControl, exit_code: int | None, status_reason: str, container_reason: str | None
) -> None:
    with ctl.lock:
        attempt = job.latest_attempt
        if attempt is None:
            return
        if exit_code is not None:
            attempt["container"]["exitCode"] = exit_code
        if container_reason:
            attempt["container"]["reason"] = container_reason
        attempt["container"]["logStreamName"] = job.log_stream_name
        attempt["statusReason"] = status_reason
        attempt["stoppedAt"] = _now_ms()


def finish_job(
    job: Any, success: bool, reason: str | None, exit_code: int | None, container_reason: str | None = None
) -> bool:
    """Moves a job to SUCCEEDED or FAILED once; later calls are no-ops."""
    ctl: JobControl = job.flowline_ctl
    with ctl.lock:
        if job.job_stopped:
            return False
        job.exit_code = exit_code
        job.job_stopped_reason = reason
        job.flowline_container_reason = container_reason
        attempt = job.latest_attempt
        job._mark_stopped(success=success)
        if attempt is not None:
            attempt.setdefault("statusReason", reason)
            if exit_code is not None:
                attempt["container"].setdefault("exitCode", exit_code)
        ctl.stop.set()
        return True


def stop_job(job: Any, reason: str) -> bool:
    """Ends a job FAILED at once (TerminateJob, CancelJob, StopExecution), killing its process."""
    ctl: JobControl | None = getattr(job, "flowline_ctl", None)
    if ctl is None:
        job.terminate(reason)
        return False
    with ctl.lock:
        if job.job_stopped:
            return False
        ctl.stop.set()
        for proc in ctl.processes:
            _kill(proc)
        if job.latest_attempt is not None and "stoppedAt" not in job.latest_attempt:
            _end_attempt(job, ctl, None, reason, None)
        return finish_job(job, False, reason, None)


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            proc.kill()
        except ProcessLookupError:
            pass


def _settle_array_parent(job: Any) -> None:
    """An array job's parent follows its children: RUNNING once one has started, then
    SUCCEEDED when all succeeded or FAILED when all ended and one failed."""
    ctl = getattr(job, "flowline_ctl", None)
    if ctl is None or job.job_stopped:
        return
    statuses = [child.status for child in job._child_jobs]
    if all(s in TERMINAL for s in statuses):
        failed = sum(1 for s in statuses if s == "FAILED")
        finish_job(
            job, failed == 0, None if failed == 0 else f"{failed} of {len(statuses)} child jobs failed", None
        )
    elif any(s in ("RUNNING",) + TERMINAL for s in statuses):
        with ctl.lock:
            ctl.started = True
            if job.job_started_at.year == 1970:
                job.job_started_at = datetime.now()
            job.status = "RUNNING"


def _wait_dependencies(job: Any, ctl: JobControl) -> str | None:
    """Blocks while a dependency is unfinished; returns a failure reason if one failed."""
    ids = [d.get("jobId") for d in job.depends_on or [] if d.get("jobId")]
    while ids:
        pending = []
        for dep_id in ids:
            dep = job.all_jobs.get(dep_id) or job.all_jobs.get(str(dep_id).rsplit("/", 1)[-1])
            status = dep.status if dep is not None else "SUCCEEDED"
            if status == "FAILED":
                return f"Dependent Job {dep_id} failed"
            if status != "SUCCEEDED":
                pending.append(dep_id)
        ids = pending
        if ids and ctl.stop.wait(0.2):
            return None
    return None


def _run_attempt_held(job: Any, ctl: JobControl, env: dict) -> tuple[int | None, str, str | None] | None:
    """One attempt without a process: held RUNNING for FLOWLINE_EMULATOR_RUN_SECONDS, then
    ends as FLOWLINE_EMULATOR_FAIL says. None means the job was stopped meanwhile."""
    hold = _float_env(env, ENV_RUN_SECONDS)
    limit = _attempt_timeout(job)
    if limit is not None and hold > limit:
        if ctl.stop.wait(limit):
            return None
        return 137, "Job attempt duration exceeded timeout", None
    if hold and ctl.stop.wait(hold):
        return None
    fail = env.get(ENV_FAIL)
    if fail:
        return 1, fail, None
    return 0, ESSENTIAL_EXITED, None


def _node_command(job: Any, container: dict) -> list[str]:
    command = container.get("command") or []
    if isinstance(command, str):
        command = [command]
    return job._add_parameters_to_command(list(command))


def _endpoint() -> str:
    host = SETTINGS.connect_host
    return f"http://[{host}]:{SETTINGS.port}" if ":" in host else f"http://{host}:{SETTINGS.port}"


def _batch_variables(job: Any, ctl: JobControl, node: tuple[int, int, int] | None) -> dict[str, str]:
    """The AWS_BATCH_* variables Batch gives every container of the job."""
    env = {
        "AWS_BATCH_JOB_ID": job.job_id,
        "AWS_BATCH_JOB_ATTEMPT": str(ctl.attempt),
        "AWS_BATCH_JQ_NAME": job.job_queue.name,
        "AWS_BATCH_CE_NAME": "flowline-emulator",
        # What the ECS agent sets in every container (Metaflow's @batch reads it).
        "AWS_EXECUTION_ENV": "AWS_ECS_FARGATE" if "FARGATE" in (getattr(job.job_definition, "platform_capabilities", None) or []) else "AWS_ECS_EC2",
    }
    index = (job.array_properties or {}).get("index")
    if index is not None:
        env["AWS_BATCH_JOB_ARRAY_INDEX"] = str(index)
    if node is not None:
        node_index, num_nodes, main_index = node
        env["AWS_BATCH_JOB_ID"] = f"{job.job_id}#{node_index}"
        env["AWS_BATCH_JOB_NODE_INDEX"] = str(node_index)
        env["AWS_BATCH_JOB_NUM_NODES"] = str(num_nodes)
        env["AWS_BATCH_JOB_MAIN_NODE_INDEX"] = str(main_index)
        env["AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS"] = "127.0.0.1"
    return env


def _process_env(
    job: Any, ctl: JobControl, container: dict, node: tuple[int, int, int] | None
) -> task_runtime.TaskLaunch:
    """What the container of this job (node) would start with; nothing of the launcher's own
    environment (see task_runtime.py). Raises batch_strict.StartError if a secret cannot be read."""
    account, region = job.job_definition.backend.account_id, job.job_definition._region
    variables = {
        entry["name"]: "" if entry.get("value") is None else str(entry["value"])
        for entry in container.get("environment") or []
        if entry.get("name")
    }
    home, cwd = task_runtime.task_dirs(SETTINGS.job_log_dir, job.job_id, ctl.attempt, node[0] if node else None)
    return task_runtime.build_task(
        container=container,
        job_role_arn=container.get("jobRoleArn"),
        variables=variables,
        secrets=batch_strict.resolve_secrets(container, account, region),
        batch_variables=_batch_variables(job, ctl, node),
        endpoint=_endpoint(),
        account=account,
        region=region,
        home=home,
        cwd=cwd,
        session_name=f"batch-{job.job_id}",
    )


def _publish_logs(job: Any, stream: str, path: str) -> None:
    """Copies a job process's output into CloudWatch Logs, where AWS Batch puts it."""
    try:
        from moto.logs.models import logs_backends

        account = job.job_definition.backend.account_id
        backend = logs_backends[account][job.job_definition._region]
        if BATCH_LOG_GROUP not in backend.groups:
            try:
                backend.create_log_group(BATCH_LOG_GROUP, {})
            except Exception:  # noqa: BLE001 - created concurrently by another job
                pass
        backend.ensure_log_stream(BATCH_LOG_GROUP, stream)
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()[-10000:]
        now = _now_ms()
        events = [{"timestamp": now, "message": line or " "} for line in lines]
        for start in range(0, len(events), 1000):
            backend.put_log_events(BATCH_LOG_GROUP, stream, events[start : start + 1000])
    except Exception as err:  # noqa: BLE001 - logs are a convenience; the job result stands
        LOG.warning("could not publish logs of job %s: %s", job.job_id, err)


def _run_attempt_exec(job: Any, ctl: JobControl, env: dict) -> tuple[int | None, str, str | None] | None:
    """One attempt in --exec-jobs mode: the job's command (one process per node) runs locally.
    A multi-node job ends when its main node exits, with the main node's exit code; the other
    nodes get a short grace period and are then killed, as Batch does."""
    fail = env.get(ENV_FAIL)
    if fail:
        return _run_attempt_held(job, ctl, env)
    hold = _float_env(env, ENV_RUN_SECONDS)
    multinode = job.job_definition.type == "multinode"
    num_nodes = _num_nodes(job) if multinode else 1
    main_index = _main_node(job) if multinode else 0
    base_stream = f"{job.job_definition.name}/default/{job.job_id}"
    nodes = []
    for index in range(num_nodes):
        container = job_container(job, index)
        command = _node_command(job, container)
        if not command:
            return (
                None
                if ctl.stop.is_set()
                else (
                    None,
                    "CannotStartContainerError: the job has no command (the emulator runs commands, not images)",
                    None,
                )
            )
        stream = base_stream if not multinode else f"{base_stream}-node-{index}"
        if ctl.attempt > 1:
            stream = f"{stream}-attempt-{ctl.attempt}"
        node = (index, num_nodes, main_index) if multinode else None
        reason = task_runtime.missing_runtime_reason(str(container.get("image") or ""))
        if reason:
            return None if ctl.stop.is_set() else (None, reason, reason)
        try:
            launch = _process_env(job, ctl, container, node)
        except batch_strict.StartError as err:
            return None if ctl.stop.is_set() else (None, err.reason, err.reason)
        nodes.append((index, command, launch, stream))

    with ctl.lock:
        job.log_stream_name = nodes[main_index][3]
        job.latest_attempt["container"]["logStreamName"] = job.log_stream_name
    started = time.monotonic()
    running: dict[int, tuple[subprocess.Popen, str, str]] = {}
    try:
        for index, command, launch, stream in nodes:
            path = os.path.join(SETTINGS.job_log_dir, stream + ".log")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with ctl.lock:
                if ctl.stop.is_set():
                    return None
                with open(path, "ab") as log_file:
                    try:
                        proc = subprocess.Popen(
                            command,
                            env=launch.env,
                            cwd=launch.cwd,
                            stdin=subprocess.DEVNULL,
                            stdout=log_file,
                            stderr=subprocess.STDOUT,
                            start_new_session=True,
                        )
                    except OSError as err:
                        for other, _, _ in running.values():
                            _kill(other)
                        return None, f"CannotStartContainerError: {err}", str(err)
                ctl.processes.append(proc)
            with _PROCESSES_LOCK:
                _PROCESSES.add(proc)
            running[index] = (proc, stream, path)

        limit = _attempt_timeout(job)
        main_proc = running[main_index][0]
        timed_out = False
        while main_proc.poll() is None:
            if ctl.stop.wait(0.1):
                return None
            if limit is not None and time.monotonic() - started > limit:
                timed_out = True
                break
        grace_until = time.monotonic() + 2.0
        for proc, _, _ in running.values():
            if timed_out:
                _kill(proc)
            while proc.poll() is None and time.monotonic() < grace_until:
                time.sleep(0.05)
            _kill(proc)
            proc.wait()
        remaining = hold - (time.monotonic() - started)
        if remaining > 0 and not timed_out and ctl.stop.wait(remaining):
            return None
        if ctl.stop.is_set():
            return None
        if timed_out:
            return 137, "Job attempt duration exceeded timeout", None
        code = main_proc.returncode
        if code < 0:
            code = 128 - code
        return code, ESSENTIAL_EXITED, None
    finally:
        for proc, stream, path in running.values():
            _kill(proc)
            with _PROCESSES_LOCK:
                _PROCESSES.discard(proc)
            _publish_logs(job, stream, path)
        with ctl.lock:
            ctl.processes = [p for p in ctl.processes if p.poll() is None]


def _start_failure(job: Any) -> str | None:
    """Why AWS could not start this job's container(s): see batch_strict.start_failure."""
    if job.job_definition.type == "multinode":
        containers = [job_container(job, index) for index in range(_num_nodes(job))]
        node_overrides = _extra(job).get("nodeOverrides") or {}
        overrides = [o.get("containerOverrides") or {} for o in node_overrides.get("nodePropertyOverrides") or []]
    else:
        containers, overrides = [job_container(job)], [job.container_overrides or {}]
    jd = job.job_definition
    return batch_strict.start_failure(containers, overrides, jd.backend.account_id, jd._region)


def _record_failed_start(job: Any, ctl: JobControl, reason: str) -> None:
    """An attempt whose container never started: no startedAt, and the reason on the container."""
    with ctl.lock:
        ctl.attempt += 1
        job.latest_attempt = {
            "container": {"reason": reason, "logStreamName": job.log_stream_name, "networkInterfaces": []},
            "statusReason": reason,
        }
        job.attempts.append(job.latest_attempt)


def run_lifecycle(job: Any) -> None:
    """Walks a job through PENDING, RUNNABLE, RUNNING and its attempts to SUCCEEDED/FAILED."""
    ctl: JobControl = job.flowline_ctl
    env = job_environment(job)
    try:
        job.status = "PENDING"
        reason = _wait_dependencies(job, ctl)
        if ctl.stop.is_set():
            return
        if reason:
            finish_job(job, False, reason, None)
            return
        job.status = "RUNNABLE"
        runnable = _float_env(env, ENV_RUNNABLE_SECONDS)
        if runnable and ctl.stop.wait(runnable):
            return
        attempts = _max_attempts(job)
        for attempt in range(1, attempts + 1):
            with ctl.lock:
                if ctl.stop.is_set():
                    return
                job.status = "STARTING"
            failure = _start_failure(job)
            if failure is not None:
                _record_failed_start(job, ctl, failure)
                outcome = (None, failure, failure)
            else:
                _start_attempt(job, ctl)
                run = _run_attempt_exec if SETTINGS.exec_jobs else _run_attempt_held
                outcome = run(job, ctl, env)
            if outcome is None:
                return
            exit_code, status_reason, container_reason = outcome
            _end_attempt(job, ctl, exit_code, status_reason, container_reason)
            if exit_code == 0:
                finish_job(job, True, status_reason, 0, container_reason)
                return
            if attempt < attempts and _should_retry(job, exit_code, status_reason, container_reason or ""):
                with ctl.lock:
                    if ctl.stop.is_set():
                        return
                    job.status = "RUNNABLE"
                continue
            finish_job(job, False, status_reason, exit_code, container_reason)
            return
    except Exception as err:  # noqa: BLE001 - a broken job must not stay RUNNING forever
        LOG.exception("emulated job %s crashed", job.job_id)
        if getattr(job, "flowline_ctl", None) is not None:
            finish_job(job, False, f"emulator error: {err}", None)


def _needs_thread(job: Any) -> bool:
    env = job_environment(job)
    return bool(
        SETTINGS.exec_jobs
        or job.depends_on
        or _float_env(env, ENV_RUN_SECONDS)
        or _float_env(env, ENV_RUNNABLE_SECONDS)
    )


def start_lifecycle(job: Any) -> None:
    job.flowline_ctl = JobControl()
    if _needs_thread(job):
        thread = threading.Thread(
            target=run_lifecycle, args=(job,), name=f"flowline-job-{job.job_id}", daemon=True
        )
        thread.start()
    else:
        # Nothing to wait for: settle before SubmitJob returns, as plain moto does.
        run_lifecycle(job)


def patch_batch_jobs() -> None:
    """moto's Docker-free Batch marks every job SUCCEEDED inside SubmitJob, so tests cannot see a
    job fail, stay RUNNABLE/RUNNING, or be terminated; it also drops retryStrategy, nodeOverrides,
    propagateTags, shareIdentifier and schedulingPriorityOverride from the submission. Jobs now
    follow a lifecycle driven by the FLOWLINE_EMULATOR_* variables of the job's environment (see
    the module docstring), honour retryStrategy (attempts, evaluateOnExit), dependsOn and the
    attempt timeout, and, with --exec-jobs, run their command as a local process.
    TerminateJob ends a job FAILED at once (moto only flagged it), and CancelJob does so for jobs
    that have not started yet."""
    from moto.batch.exceptions import ClientException
    from moto.batch.models import BatchBackend, Job
    from moto.batch.responses import BatchResponse
    from moto.batch_simple.models import BatchSimpleBackend

    def submit_job(
        self,
        job_name,
        job_def_id,
        job_queue,
        array_properties,
        depends_on=None,
        container_overrides=None,
        eks_properties_override=None,
        timeout=None,
        parameters=None,
        tags=None,
        flowline_extra=None,
    ):
        # AWS accepts 1-128 characters; moto's JOB_NAME_REGEX wrongly demands at least two.
        if not job_name or _JOB_NAME.match(job_name) is None:
            raise ClientException("Job name should match valid pattern")
        job_def = self.get_job_definition(job_def_id)
        if job_def is None:
            raise ClientException(f"Job definition {job_def_id} does not exist")
        if job_def.status != "ACTIVE":
            raise ClientException(f"Job definition {job_def_id} is not ACTIVE")
        queue = self.get_job_queue(job_queue)
        if queue is None:
            raise ClientException(f"Job queue {job_queue} does not exist")
        refusal = batch_strict.submission_error(job_def, queue)
        if refusal:
            raise ClientException(refusal)
        backend = self.backend
        array_properties = array_properties or {}

        def make(provided_id=None, array=None, job_tags=None):
            job = Job(
                job_name,
                job_def,
                queue,
                backend,
                log_backend=backend.logs_backend,
                container_overrides=container_overrides,
                eks_properties_override=eks_properties_override,
                depends_on=depends_on,
                all_jobs=backend._jobs,
                timeout=timeout,
                array_properties=array if array is not None else array_properties,
                provided_job_id=provided_id,
                parameters=parameters,
                tags=job_tags,
            )
            job.flowline_extra = dict(flowline_extra or {})
            job.log_stream_name = None
            with _JOBS_LOCK:
                backend._jobs[job.job_id] = job
            return job

        job = make(job_tags=tags)
        if array_properties.get("size"):
            job.flowline_ctl = JobControl()
            children = [
                make(f"{job.job_id}:{index}", {"statusSummary": {}, "index": index})
                for index in range(int(array_properties["size"]))
            ]
            job._child_jobs = children
            job.status = "PENDING"
            for child in children:
                start_lifecycle(child)
        else:
            start_lifecycle(job)
        return job_name, job.job_id, job.arn

    def submitjob(self):
        get = self._get_param
        extra = {
            key: get(key)
            for key in (
                "retryStrategy",
                "nodeOverrides",
                "propagateTags",
                "shareIdentifier",
                "schedulingPriorityOverride",
                "ecsPropertiesOverride",
            )
            if get(key) is not None
        }
        kwargs = dict(
            depends_on=get("dependsOn"),
            container_overrides=get("containerOverrides"),
            eks_properties_override=get("eksPropertiesOverride"),
            timeout=get("timeout"),
            array_properties=get("arrayProperties", {}),
            parameters=get("parameters"),
            tags=get("tags"),
        )
        backend = self.batch_backend
        if isinstance(backend, BatchSimpleBackend):
            kwargs["flowline_extra"] = extra
        name, job_id, job_arn = backend.submit_job(
            get("jobName"), get("jobDefinition"), get("jobQueue"), **kwargs
        )
        return json.dumps({"jobId": job_id, "jobName": name, "jobArn": job_arn})

    def terminate_job(self, job_id, reason):
        if not job_id:
            raise ClientException("'jobId' is a required field (cannot be a empty string)")
        if not reason:
            raise ClientException("'reason' is a required field (cannot be a empty string)")
        job = self.get_job_by_id(job_id)
        if job is not None:
            for child in job._child_jobs or []:
                stop_job(child, reason)
            stop_job(job, reason)

    def cancel_job(self, job_id, reason):
        if not job_id:
            raise ClientException("'jobId' is a required field (cannot be an empty string)")
        if not reason:
            raise ClientException("'reason' is a required field (cannot be an empty string)")
        job = self.get_job_by_id(job_id)
        if job is None:
            return
        for target in (job._child_jobs or []) + [job]:
            if target.status in ("SUBMITTED", "PENDING", "RUNNABLE"):
                stop_job(target, reason)

    original_reset = BatchBackend.reset

    def reset(self):
        for job in list(self._jobs.values()):
            if getattr(job, "flowline_ctl", None) is not None:
                stop_job(job, "emulator reset")
        original_reset(self)

    BatchSimpleBackend.submit_job = submit_job
    BatchResponse.submitjob = submitjob
    BatchBackend.terminate_job = terminate_job
    BatchBackend.cancel_job = cancel_job
    BatchBackend.reset = reset


# ---------------------------------------------------------------------------------------------
# Patch 4: EventBridge delivery to Step Functions, schedule-only rules, fire-rule
# ---------------------------------------------------------------------------------------------

_PATH_TOKEN = re.compile(r"\.([A-Za-z0-9_\-/$@]+)|\[(\d+)\]|\['([^']*)'\]|\.\*|\[\*\]")


def eval_event_path(path: str, data: Any) -> tuple[bool, Any]:
    """EventBridge's JSONPath subset (dot notation with dashes, indices, wildcards).
    Returns (found, value)."""
    path = (path or "").strip()
    if not path.startswith("$"):
        return False, None
    values = [data]
    pos = 1
    wildcard = False
    while pos < len(path):
        match = _PATH_TOKEN.match(path, pos)
        if match is None:
            return False, None
        pos = match.end()
        name = match.group(1) if match.group(1) is not None else match.group(3)
        nxt = []
        for value in values:
            if name is not None:
                if isinstance(value, dict) and name in value:
                    nxt.append(value[name])
            elif match.group(2) is not None:
                index = int(match.group(2))
                if isinstance(value, list) and index < len(value):
                    nxt.append(value[index])
            else:
                wildcard = True
                if isinstance(value, dict):
                    nxt.extend(value.values())
                elif isinstance(value, list):
                    nxt.extend(value)
        values = nxt
    if wildcard:
        return True, values
    if not values:
        return False, None
    return True, values[0]


_PLACEHOLDER = re.compile(r"<([A-Za-z0-9_.\-]+)>")
_RAW_JSON_VARIABLES = ("aws.events.event", "aws.events.event.json")


def render_input_template(template: str, values: dict[str, Any]) -> str:
    """Fills an InputTemplate the way EventBridge does: inside a JSON string a placeholder is
    replaced by the text of its value (escaped); outside strings by its JSON (a string value
    gets quotes). ``<aws.events.event>`` / ``<aws.events.event.json>`` insert the event's JSON
    unescaped. A template that is not JSON (plain text) gets raw values. Unknown <...> stay."""
    json_mode = template.lstrip()[:1] in ("{", "[", '"')
    out: list[str] = []
    in_string = False
    escaped = False
    i = 0
    while i < len(template):
        char = template[i]
        if json_mode and in_string and escaped:
            out.append(char)
            escaped = False
            i += 1
            continue
        if json_mode and in_string and char == "\\":
            escaped = True
            out.append(char)
            i += 1
            continue
        if json_mode and char == '"':
            in_string = not in_string
            out.append(char)
            i += 1
            continue
        if char == "<":
            match = _PLACEHOLDER.match(template, i)
            if match and match.group(1) in values:
                name = match.group(1)
                value = values[name]
                if name in _RAW_JSON_VARIABLES:
                    text = json.dumps(value)
                elif not json_mode:
                    text = value if isinstance(value, str) else ("" if value is None else json.dumps(value))
                elif in_string:
                    raw = value if isinstance(value, str) else ("" if value is None else json.dumps(value))
                    text = json.dumps(raw)[1:-1]
                else:
                    text = json.dumps(value)
                out.append(text)
                i = match.end()
                continue
        out.append(char)
        i += 1
    return "".join(out)


def public_event(event: dict) -> dict:
    """The event as targets receive it: ISO time, without moto's internal fields."""
    result = {k: v for k, v in event.items() if k not in ("ingestion-time",)}
    result["time"] = _iso(event.get("time") or time.time())
    return result


def target_input(rule: Any, target: dict, event: dict) -> str | None:
    """The input a target receives: Input, InputPath, InputTransformer or the whole event."""
    if target.get("Input") is not None:
        return target["Input"]
    if target.get("InputPath"):
        found, value = eval_event_path(target["InputPath"], event)
        return json.dumps(value if found else None)
    transformer = target.get("InputTransformer")
    if transformer:
        values: dict[str, Any] = {}
        for name, path in (transformer.get("InputPathsMap") or {}).items():
            found, value = eval_event_path(path, event)
            values[name] = value if found else None
        event_without_detail = {k: v for k, v in event.items() if k != "detail"}
        values.update(
            {
                "aws.events.rule-arn": rule.arn,
                "aws.events.rule-name": rule.name,
                "aws.events.event.ingestion-time": event.get("time"),
                "aws.events.event": event_without_detail,
                "aws.events.event.json": event,
            }
        )
        return render_input_template(transformer.get("InputTemplate") or "", values)
    return json.dumps(event)


def _is_state_machine(arn: str) -> bool:
    parts = arn.split(":")
    return len(parts) >= 7 and parts[2] == "states" and parts[5] == "stateMachine"


def deliver_to_state_machine(rule: Any, target: dict, event: dict) -> str | None:
    from moto.stepfunctions.responses import get_backend

    arn = target["Arn"]
    payload = target_input(rule, target, event)
    try:
        json.loads(payload)
    except (TypeError, ValueError):
        LOG.warning("rule %s: input for %s is not JSON, not delivered: %r", rule.name, arn, payload)
        return None
    refused = iam_mode.may_deliver_to_state_machine(rule, target, event)
    if refused is not None:
        dead_letter(rule, target, event, "AccessDenied", refused)
        return None
    parts = arn.split(":")
    try:
        execution = get_backend(parts[4], parts[3]).start_execution(arn, str(uuid.uuid4()), payload)
    except Exception as err:  # noqa: BLE001 - EventBridge reports a failed invocation, not a 500
        LOG.warning("rule %s: could not start %s: %s", rule.name, arn, err)
        dead_letter(rule, target, event, type(err).__name__, str(getattr(err, "message", err)))
        return None
    return execution.execution_arn


def _policy_lets_rule_send(policy: str | None, queue_arn: str, rule_arn: str) -> bool:
    """Whether a queue policy allows events.amazonaws.com sqs:SendMessage for this rule (an
    Allow whose aws:SourceArn condition, if any, names the rule), as EventBridge needs."""
    try:
        statements = json.loads(policy or "{}").get("Statement", [])
    except ValueError:
        return False
    if isinstance(statements, dict):
        statements = [statements]

    def listed(value: Any) -> list:
        return value if isinstance(value, list) else [value]

    for st in statements:
        principal = st.get("Principal") or {}
        services = listed(principal.get("Service", [])) if isinstance(principal, dict) else []
        actions = listed(st.get("Action", []))
        resources = listed(st.get("Resource", "*"))
        if st.get("Effect") != "Allow" or "events.amazonaws.com" not in services:
            continue
        if not any(a in ("sqs:SendMessage", "sqs:*", "*") for a in actions):
            continue
        if not any(fnmatch.fnmatchcase(queue_arn, r) for r in resources):
            continue
        source_arns = []
        for operator, values in (st.get("Condition") or {}).items():
            if operator in ("ArnEquals", "ArnLike", "StringEquals", "StringLike"):
                for key, value in values.items():
                    if key.lower() == "aws:sourcearn":
                        source_arns.extend(listed(value))
        if not source_arns or any(fnmatch.fnmatchcase(rule_arn, a) for a in source_arns):
            return True
    return False


def _is_queue(arn: str) -> bool:
    parts = arn.split(":")
    return len(parts) >= 6 and parts[2] == "sqs"


def may_deliver_to_queue(rule: Any, target: dict, event: dict) -> bool:
    """Whether EventBridge may deliver to the target (True for targets other than SQS queues):
    an SQS target receives events only when the queue exists and its policy lets
    events.amazonaws.com send from this rule, as in AWS; otherwise the delivery is a failed
    invocation (listed by ``GET /flowline-test/failed-invocations``) and the event is lost."""
    from moto.sqs.models import sqs_backends

    arn = target.get("Arn", "")
    if not _is_queue(arn):
        return True
    parts = arn.split(":")
    try:
        queue = sqs_backends[parts[4]][parts[3]].get_queue(parts[5])
    except Exception:  # noqa: BLE001 - moto's QueueDoesNotExist
        reason = f"queue {arn} does not exist"
    else:
        if _policy_lets_rule_send(queue.policy, arn, rule.arn):
            return True
        reason = f"the policy of {arn} does not let events.amazonaws.com sqs:SendMessage from {rule.arn}"
    iam_mode.record_failed_invocation(rule.arn, target, event, reason)
    LOG.warning("rule %s: not delivered to %s: %s", rule.name, arn, reason)
    return False


def dead_letter(rule: Any, target: dict, event: dict, error_code: str, error_message: str) -> bool:
    """Sends an event the rule could not deliver to the target's dead-letter queue, as
    EventBridge does (after its retries, which are not emulated: at once): the event as the
    body, RULE_ARN, TARGET_ARN, ERROR_CODE and ERROR_MESSAGE as message attributes. Nothing is
    sent when the queue does not exist or its policy does not let the rule send, as in AWS."""
    from moto.sqs.models import sqs_backends

    queue_arn = (target.get("DeadLetterConfig") or {}).get("Arn")
    if not queue_arn:
        return False
    parts = queue_arn.split(":")
    if len(parts) < 6:
        return False
    region, account, name = parts[3], parts[4], parts[5]
    backend = sqs_backends[account][region]
    try:
        queue = backend.get_queue(name)
    except Exception:  # noqa: BLE001 - moto's QueueDoesNotExist
        LOG.warning("rule %s: dead-letter queue %s does not exist; event lost", rule.name, queue_arn)
        return False
    if not _policy_lets_rule_send(queue.policy, queue_arn, rule.arn):
        LOG.warning("rule %s: the policy of %s does not let the rule send; event lost", rule.name, queue_arn)
        return False

    def attribute(value: str) -> dict:
        return {"DataType": "String", "StringValue": value}

    backend.send_message(
        name,
        json.dumps(event),
        message_attributes={
            "RULE_ARN": attribute(rule.arn),
            "TARGET_ARN": attribute(target["Arn"]),
            "ERROR_CODE": attribute(error_code),
            "ERROR_MESSAGE": attribute(error_message[:1000] or error_code),
        },
    )
    return True


def patch_events() -> None:
    """PutEvents answers 500 when a matching rule targets a Step Functions state machine (moto
    raises NotImplementedError for that target type), rules without an EventPattern (schedule
    only) match every event, and DISABLED rules still receive events. Delivery now skips
    disabled rules, never matches events against pattern-less rules, and starts an execution
    for each state-machine target with the input AWS would give it; other target types keep
    moto's handling."""
    from moto.events.models import EventPattern, Rule

    original_send = Rule.send_to_targets

    def send_to_targets(self, original_event, transform_input=True, scheduled=False):
        if self.state != "ENABLED":
            return []
        if not scheduled:
            if not self.event_pattern.get_pattern() or not self.event_pattern.matches_event(original_event):
                return []
        sfn_targets = [t for t in self.targets if _is_state_machine(t.get("Arn", ""))]
        other_targets = [
            t
            for t in self.targets
            if not _is_state_machine(t.get("Arn", "")) and may_deliver_to_queue(self, t, original_event)
        ]
        if other_targets:
            proxy = copy.copy(self)
            proxy.targets = other_targets
            proxy.event_pattern = EventPattern.load(None)  # already matched above
            original_send(proxy, copy.deepcopy(original_event), transform_input)
        event = public_event(original_event)
        started = []
        for target in sfn_targets:
            execution_arn = deliver_to_state_machine(self, target, event)
            if execution_arn:
                started.append(execution_arn)
        return started

    Rule.send_to_targets = send_to_targets


# The S3 events most recently sent to EventBridge, newest last, for redelivery.
_RECENT_S3_EVENTS: list[dict] = []
_RECENT_S3_EVENTS_MAX = 200
_S3_EVENTS_LOCK = threading.Lock()


def _deliver_to_rules(account_id: str, region: str, event: dict) -> list[str]:
    from moto.events.models import events_backends

    started: list[str] = []
    backend = events_backends[account_id][region]
    for event_bus in list(backend.event_buses.values()):
        for rule in list(event_bus.rules.values()):
            started.extend(rule.send_to_targets(copy.deepcopy(event), transform_input=False) or [])
    return started


def patch_s3_eventbridge_events() -> None:
    """moto gives every S3 event sent to EventBridge the same id and sequencer; AWS gives each
    its own id (kept on redelivery) and a sequencer that orders writes to a key. Each event now
    gets a fresh id and an increasing sequencer, and is kept for /flowline-test/redeliver-s3-event."""
    from moto.events.utils import _BASE_EVENT_MESSAGE
    from moto.s3 import notifications

    sequencer = iter(range(1, 1 << 62))

    def send_event_bridge_message(account_id: str, bucket: Any, event_name: str, key: Any) -> None:
        try:
            event = copy.deepcopy(_BASE_EVENT_MESSAGE)
            event["id"] = str(uuid.uuid4())
            event["detail-type"] = notifications._detail_type(event_name)
            event["source"] = "aws.s3"
            event["account"] = account_id
            event["time"] = time.time()
            event["region"] = bucket.region_name
            event["resources"] = [bucket.arn]
            event["detail"] = {
                "version": "0",
                "bucket": {"name": bucket.name},
                "object": {
                    "key": key.name,
                    "size": key.size,
                    "eTag": key.etag.replace('"', ""),
                    "version-id": key.version_id,
                    "sequencer": f"{next(sequencer):016X}",
                },
                "request-id": uuid.uuid4().hex[:16].upper(),
                "requester": account_id,
                "source-ip-address": "127.0.0.1",
                "reason": event_name.split(":")[1],
            }
            with _S3_EVENTS_LOCK:
                _RECENT_S3_EVENTS.append(copy.deepcopy(event))
                del _RECENT_S3_EVENTS[:-_RECENT_S3_EVENTS_MAX]
            _deliver_to_rules(account_id, bucket.region_name, event)
        except Exception as err:  # noqa: BLE001 - asynchronous in AWS: never fails the PutObject
            LOG.warning("could not send an S3 event to EventBridge: %s", err)

    notifications._send_event_bridge_message = send_event_bridge_message


def redeliver_s3_event(body: dict) -> tuple[int, dict]:
    """Delivers a recorded S3 event again, unchanged (same id), as EventBridge's at-least-once
    delivery may: ``{"key": KEY}`` picks the newest event for that object key."""
    key = body.get("key")
    detail_type = body.get("detailType") or "Object Created"
    with _S3_EVENTS_LOCK:
        matches = [
            e
            for e in _RECENT_S3_EVENTS
            if e["detail-type"] == detail_type and (key is None or e["detail"]["object"]["key"] == key)
        ]
    if not matches:
        return 404, {"message": f"no S3 event recorded for key {key!r}"}
    event = matches[-1]
    started = _deliver_to_rules(event["account"], event["region"], event)
    return 200, {"eventId": event["id"], "executionArns": started}


def fire_rule(body: dict) -> tuple[int, dict]:
    """Delivers a scheduled rule's targets as EventBridge does when the schedule fires."""
    from moto.events.models import events_backends

    name = body.get("name")
    if not name:
        return 400, {"message": "name is required"}
    account = body.get("accountId") or DEFAULT_ACCOUNT
    region = body.get("region") or DEFAULT_REGION
    if str(name).startswith("arn:"):
        parts = name.split(":")
        region, account = parts[3], parts[4]
        resource = parts[5].split("/", 1)[1]
        bus, _, name = resource.rpartition("/")
        body = dict(body, eventBusName=body.get("eventBusName") or bus or None)
    backend = events_backends[account][region]
    try:
        rule = backend.describe_rule(name, body.get("eventBusName"))
    except Exception as err:  # noqa: BLE001 - moto's ResourceNotFoundException
        return 404, {"message": str(getattr(err, "message", err))}
    if not rule.scheduled_expression:
        return 400, {"message": f"rule {name} has no ScheduleExpression"}
    if rule.state != "ENABLED":
        return 409, {"message": f"rule {name} is {rule.state}; nothing delivered", "ruleArn": rule.arn}
    now = time.time()
    event = {
        "version": "0",
        # A given id delivers that firing again, as EventBridge's at-least-once delivery may.
        "id": str(body.get("eventId") or uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account,
        "time": now,
        "region": region,
        "resources": [rule.arn],
        "detail": {},
        "ingestion-time": now,
    }
    started = rule.send_to_targets(event, scheduled=True) or []
    return 200, {"ruleArn": rule.arn, "eventId": event["id"], "executionArns": started}


# ---------------------------------------------------------------------------------------------
# Request counter: which AWS operations the server handled, and for which access key
# ---------------------------------------------------------------------------------------------

# JSON-protocol services name the operation in X-Amz-Target as "<prefix>.<Operation>"; the
# prefix names the service where the request carries no SigV4 credential scope.
_TARGET_SERVICES = {
    "AWSStepFunctions": "states",
    "secretsmanager": "secretsmanager",
    "AWSEvents": "events",
    "Logs_20140328": "logs",
    "TrentService": "kms",
    "AmazonSSM": "ssm",
    "DynamoDB_20120810": "dynamodb",
    "AmazonEC2ContainerRegistry_V20150921": "ecr",
}
# SigV4 signing names whose botocore model has another name.
_MODEL_NAMES = {"states": "stepfunctions"}
# Query-protocol actions that are sent unsigned (so without a credential scope) belong to STS.
_UNSIGNED_STS_ACTIONS = {"AssumeRoleWithWebIdentity", "AssumeRoleWithSAML"}
_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/([^,\s]*)")
_UNCOUNTED_PREFIXES = ("/moto-api/", "/flowline-test/")
ANONYMOUS = "anonymous"

# S3 sub-resources ("?tagging") and the operation-name stem of each, for buckets and objects.
_S3_BUCKET_SUBRESOURCES = {
    "accelerate": "BucketAccelerateConfiguration",
    "acl": "BucketAcl",
    "cors": "BucketCors",
    "encryption": "BucketEncryption",
    "lifecycle": "BucketLifecycleConfiguration",
    "logging": "BucketLogging",
    "notification": "BucketNotificationConfiguration",
    "object-lock": "ObjectLockConfiguration",
    "ownershipControls": "BucketOwnershipControls",
    "policy": "BucketPolicy",
    "publicAccessBlock": "PublicAccessBlock",
    "replication": "BucketReplication",
    "requestPayment": "BucketRequestPayment",
    "tagging": "BucketTagging",
    "versioning": "BucketVersioning",
    "website": "BucketWebsite",
}
_S3_OBJECT_SUBRESOURCES = {
    "acl": "ObjectAcl",
    "legal-hold": "ObjectLegalHold",
    "retention": "ObjectRetention",
    "tagging": "ObjectTagging",
}
_S3_VERBS = {"GET": "Get", "PUT": "Put", "DELETE": "Delete"}


class RequestCounter:
    """Counts the AWS API requests the server handles, per operation and per access key id,
    so a test can prove that a reconcile which changes nothing makes no AWS writes. The
    server handles each request on its own thread, hence the lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._total = 0
        self._operations: dict[str, int] = defaultdict(int)
        self._by_key: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def record(self, operation: str, access_key: str) -> None:
        with self._lock:
            self._total += 1
            self._operations[operation] += 1
            self._by_key[access_key][operation] += 1

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "total": self._total,
                "operations": dict(sorted(self._operations.items())),
                "byAccessKey": {key: dict(sorted(ops.items())) for key, ops in sorted(self._by_key.items())},
            }

    def reset(self) -> None:
        with self._lock:
            self._total = 0
            self._operations.clear()
            self._by_key.clear()


REQUESTS = RequestCounter()

_REST_ROUTES: dict[str, list[tuple[str, re.Pattern, tuple[str, ...], int, str]] | None] = {}
_REST_ROUTES_LOCK = threading.Lock()


def _rest_routes(service: str) -> list[tuple[str, re.Pattern, tuple[str, ...], int, str]] | None:
    """(method, path pattern, required query keys, specificity, operation) for every operation
    of a REST service, read from the botocore model's ``http.requestUri``; None for a service
    botocore does not know or that is not REST."""
    with _REST_ROUTES_LOCK:
        if service in _REST_ROUTES:
            return _REST_ROUTES[service]
        routes = None
        try:
            import botocore.session

            model = botocore.session.get_session().get_service_model(_MODEL_NAMES.get(service, service))
            if model.protocol.startswith("rest"):
                routes = []
                for name in model.operation_names:
                    http = model.operation_model(name).http
                    uri, _, query = http.get("requestUri", "/").partition("?")
                    pieces = re.split(r"(\{[^}]+\})", uri)
                    pattern = "".join(
                        re.escape(piece)
                        if not piece.startswith("{")
                        else (".+" if piece.endswith("+}") else "[^/]+")
                        for piece in pieces
                    )
                    keys = tuple(part.split("=", 1)[0] for part in query.split("&") if part)
                    literal = sum(len(piece) for piece in pieces if not piece.startswith("{"))
                    method = http.get("method", "POST")
                    routes.append((method, re.compile(pattern + "/?$"), keys, literal, name))
        except Exception:  # noqa: BLE001 - unknown to botocore: the operation stays unnamed
            routes = None
        _REST_ROUTES[service] = routes
        return routes


def _rest_operation(service: str, method: str, path: str, query: dict[str, list[str]]) -> str | None:
    best = None
    for route_method, pattern, keys, literal, name in _rest_routes(service) or ():
        if route_method != method or not pattern.match(path) or any(k not in query for k in keys):
            continue
        rank = (len(keys), literal)
        if best is None or rank > best[0]:
            best = (rank, name)
    return best[1] if best else None


def _s3_operation(
    method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], host: str
) -> str:
    """S3's operation from method, path and sub-resource: approximate (an unusual request may
    get a neighbouring name), but exact for the everyday bucket and object calls."""
    parts = [p for p in path.split("/") if p] if path.strip("/") else []
    hostname = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if ".s3." in f".{hostname}" and not hostname.startswith("s3."):
        parts = [hostname.split(".s3.", 1)[0]] + parts  # virtual-hosted-style bucket
    elif hostname.endswith(".localhost"):
        parts = [hostname[: -len(".localhost")]] + parts
    verb = _S3_VERBS.get(method, method.title())
    if not parts:
        return "ListBuckets" if method == "GET" else f"{verb}Service"
    if len(parts) == 1:
        for key, stem in _S3_BUCKET_SUBRESOURCES.items():
            if key in query and method in _S3_VERBS:
                return verb + stem
        if method == "GET":
            if "location" in query:
                return "GetBucketLocation"
            if "versions" in query:
                return "ListObjectVersions"
            if "uploads" in query:
                return "ListMultipartUploads"
            return "ListObjectsV2" if query.get("list-type") == ["2"] else "ListObjects"
        if method == "POST" and "delete" in query:
            return "DeleteObjects"
        plain = {"PUT": "CreateBucket", "DELETE": "DeleteBucket", "HEAD": "HeadBucket"}
        return plain.get(method, f"{verb}Bucket")
    for key, stem in _S3_OBJECT_SUBRESOURCES.items():
        if key in query and method in _S3_VERBS:
            return verb + stem
    copy_source = "x-amz-copy-source" in headers
    if method == "PUT":
        if "uploadId" in query:
            return "UploadPartCopy" if copy_source else "UploadPart"
        return "CopyObject" if copy_source else "PutObject"
    if method == "GET":
        if "uploadId" in query:
            return "ListParts"
        return "GetObjectAttributes" if "attributes" in query else "GetObject"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
    if method == "POST":
        if "uploads" in query:
            return "CreateMultipartUpload"
        if "uploadId" in query:
            return "CompleteMultipartUpload"
        if "restore" in query:
            return "RestoreObject"
        return "PostObject"
    return {"HEAD": "HeadObject"}.get(method, f"{verb}Object")


def _form_body(environ: dict) -> dict[str, list[str]]:
    """The form fields of a query-protocol POST. The body is read once and put back, so moto
    reads the same bytes."""
    import io
    from urllib.parse import parse_qs

    content_type = environ.get("CONTENT_TYPE", "")
    if "application/x-www-form-urlencoded" not in content_type:
        return {}
    length = environ.get("CONTENT_LENGTH")
    stream = environ["wsgi.input"]
    if length:
        body = stream.read(int(length))
    elif environ.get("wsgi.input_terminated"):
        body = stream.read()
    else:
        return {}
    environ["wsgi.input"] = io.BytesIO(body)
    return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)


def classify_request(environ: dict) -> tuple[str, str] | None:
    """("service:Operation", access key id) of an AWS API request; None for the emulator's
    own endpoints (/moto-api, /flowline-test), which are not AWS calls."""
    from urllib.parse import parse_qs

    path = environ.get("PATH_INFO", "") or "/"
    if path.startswith(_UNCOUNTED_PREFIXES) or path == "/moto-api":
        return None
    method = environ.get("REQUEST_METHOD", "GET").upper()
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}

    credential = _CREDENTIAL.search(headers.get("authorization", ""))
    access_key, scope = (credential.group(1), credential.group(2)) if credential else (None, "")
    if credential is None and query.get("X-Amz-Credential"):  # presigned URL
        access_key, _, scope = query["X-Amz-Credential"][0].partition("/")
    if access_key is None and headers.get("authorization", "").startswith("AWS "):  # SigV2
        access_key = headers["authorization"][4:].split(":", 1)[0]
    scope_parts = scope.split("/")
    service = scope_parts[2] if len(scope_parts) >= 4 else ""

    target = headers.get("x-amz-target", "")
    if target:
        prefix, _, operation = target.rpartition(".")
        service = _TARGET_SERVICES.get(prefix) or service or prefix.split("_", 1)[0].lower()
        return f"{service}:{operation}", access_key or ANONYMOUS

    action = query.get("Action")
    if action is None and method == "POST":
        action = _form_body(environ).get("Action")
    if action:
        if not service:
            service = "sts" if action[0] in _UNSIGNED_STS_ACTIONS else "unknown"
        return f"{service}:{action[0]}", access_key or ANONYMOUS

    if not service:
        service = "batch" if path.startswith("/v1/") else "s3"
    if service == "s3":
        operation = _s3_operation(method, path, query, headers, headers.get("host", ""))
    else:
        raw = environ.get("RAW_URI") or environ.get("REQUEST_URI") or path
        operation = _rest_operation(service, method, raw.split("?", 1)[0], query) or f"{method} {path}"
    return f"{service}:{operation}", access_key or ANONYMOUS


def count_request(environ: dict) -> None:
    try:
        classified = classify_request(environ)
    except Exception:  # noqa: BLE001 - counting must never fail the request itself
        LOG.exception(
            "could not classify request %s %s", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO")
        )
        classified = ("unknown:unknown", ANONYMOUS)
    if classified is not None:
        REQUESTS.record(*classified)


# ---------------------------------------------------------------------------------------------
# Test endpoints (/flowline-test/...)
# ---------------------------------------------------------------------------------------------

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict"}


class FlowlineTestRoutes:
    """WSGI middleware in front of moto's dispatcher: counts every AWS request (see
    RequestCounter) and serves the /flowline-test/ endpoints."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: dict, start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if not path.startswith("/flowline-test/"):
            count_request(environ)
            return self.app(environ, start_response)
        method = environ.get("REQUEST_METHOD")
        route = path.rstrip("/")
        status, payload = 404, {"message": f"unknown endpoint {path}"}
        handlers = {
            "/flowline-test/fire-rule": fire_rule,
            "/flowline-test/redeliver-s3-event": redeliver_s3_event,
        }
        if route in handlers:
            if method != "POST":
                status, payload = 405, {"message": "POST a JSON body"}
            else:
                try:
                    length = int(environ.get("CONTENT_LENGTH") or 0)
                    body = json.loads(environ["wsgi.input"].read(length) or b"{}")
                    status, payload = handlers[route](body)
                except ValueError as err:
                    status, payload = 400, {"message": f"bad JSON body: {err}"}
        elif route == "/flowline-test/failed-invocations":
            if method != "GET":
                status, payload = 405, {"message": "GET it"}
            else:
                status, payload = 200, {"failedInvocations": iam_mode.failed_invocations()}
        elif route == "/flowline-test/requests":
            if method != "GET":
                status, payload = 405, {"message": "GET it"}
            else:
                status, payload = 200, REQUESTS.snapshot()
        elif route == "/flowline-test/requests/reset":
            if method != "POST":
                status, payload = 405, {"message": "POST it"}
            else:
                REQUESTS.reset()
                status, payload = 200, REQUESTS.snapshot()
        data = json.dumps(payload).encode()
        start_response(
            f"{status} {_REASONS.get(status, 'Error')}",
            [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
        )
        return [data]


# ---------------------------------------------------------------------------------------------
# Patches 5 and 7: Step Functions executions
# ---------------------------------------------------------------------------------------------


def stop_execution_jobs(execution_arn: str, job_ids: set[str]) -> None:
    from moto.batch.models import batch_backends

    if not job_ids:
        return
    parts = execution_arn.split(":")
    backend = batch_backends[parts[4]][parts[3]]
    for job_id in job_ids:
        job = backend.get_job_by_id(job_id)
        if job is not None and job.status not in TERMINAL:
            for child in job._child_jobs or []:
                stop_job(child, EXECUTION_STOPPED)
            stop_job(job, EXECUTION_STOPPED)


def patch_sfn_executions() -> None:
    """StartExecution without a name yields an ARN ending in ``:None`` in the executing backend;
    AWS generates a UUID name. StopExecution leaves the Batch jobs the execution submitted
    running; AWS terminates them, so they end FAILED ("Execution stopped")."""
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend

    original_start = StepFunctionsParserBackend.start_execution

    def start_execution(self, state_machine_arn, name=None, execution_input=None, trace_header=None):
        execution = original_start(
            self, state_machine_arn, name or str(uuid.uuid4()), execution_input, trace_header
        )
        # Step Functions announces a Standard execution's start as well as its end.
        publish_execution_status_change(execution, status="RUNNING")
        return execution

    original_stop = StepFunctionsParserBackend.stop_execution

    def stop_execution(self, execution_arn):
        execution = original_stop(self, execution_arn)
        with _EXECUTION_JOBS_LOCK:
            _STOPPED_EXECUTIONS.add(execution_arn)
            job_ids = set(_EXECUTION_JOBS.pop(execution_arn, set()))
        stop_execution_jobs(execution_arn, job_ids)
        return execution

    StepFunctionsParserBackend.start_execution = start_execution
    StepFunctionsParserBackend.stop_execution = stop_execution

    # A stopped execution is ABORTED for good. moto's worker may still be inside a .sync task
    # when StopExecution arrives; the job terminated by the stop then fails that task and the
    # worker's final state (an error) would turn the execution FAILED.
    from moto.stepfunctions.parser.backend import execution as execution_module

    communication = execution_module.BaseExecutionWorkerCommunication
    original_reflect = communication._reflect_execution_status

    def _reflect_execution_status(self):
        original_reflect(self)
        with _EXECUTION_JOBS_LOCK:
            stopped = self.execution.exec_arn in _STOPPED_EXECUTIONS
        if stopped:
            self.execution.exec_status = execution_module.ExecutionStatus.ABORTED
            # Only what StopExecution was given (see sfn_stop), never the failure the stop caused.
            self.execution.error = getattr(self.execution, "flowline_stop_error", None)
            self.execution.cause = getattr(self.execution, "flowline_stop_cause", None)
        publish_execution_status_change(self.execution)

    communication._reflect_execution_status = _reflect_execution_status


def publish_execution_status_change(execution: Any, status: str | None = None) -> None:
    """Step Functions sends an "Execution Status Change" event to the default event bus when
    a Standard execution starts (RUNNING, without a stopDate) and when it ends; moto sends
    none. The launcher now does, for rules to route (e.g. to an SQS queue)."""
    try:
        arn = execution.exec_arn
        parts = arn.split(":")
        status = status or str(getattr(execution.exec_status, "value", execution.exec_status))
        machine = getattr(getattr(execution, "state_machine", None), "arn", None)
        event = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Step Functions Execution Status Change",
            "source": "aws.states",
            "account": parts[4],
            "time": time.time(),
            "region": parts[3],
            "resources": [arn],
            "detail": {
                "executionArn": arn,
                "stateMachineArn": machine,
                "name": execution.name,
                "status": status,
                "stopDate": None if status == "RUNNING" else _now_ms(),
            },
        }
        _deliver_to_rules(parts[4], parts[3], event)
    except Exception as err:  # noqa: BLE001 - events are best effort in AWS too
        LOG.warning("could not publish an execution status change: %s", err)


def paged(items: list, token: str | None, owner: str, max_results: int, invalid: Any) -> tuple[list, str | None]:
    """One page of ``items`` and the token of the next (``None`` on the last page). Tokens name
    their owner (an ARN), so a token cannot be replayed against another resource; ``invalid``
    is the exception class for a bad token."""
    start = 0
    if token:
        try:
            token_owner, offset = base64.urlsafe_b64decode(token.encode()).decode().rsplit(":", 1)
            start = int(offset)
        except Exception:  # noqa: BLE001
            raise invalid("nextToken is not valid")
        if token_owner != owner:
            raise invalid("nextToken belongs to another resource")
    end = start + max_results
    next_token = base64.urlsafe_b64encode(f"{owner}:{end}".encode()).decode() if end < len(items) else None
    return items[start:end], next_token


def patch_sfn_history_paging() -> None:
    """GetExecutionHistory ignores maxResults, nextToken and reverseOrder and returns every
    event at once; clients that page (the SDKs' paginators) would loop or see duplicates."""
    from moto.core.responses import ActionResult
    from moto.stepfunctions.exceptions import InvalidToken
    from moto.stepfunctions.responses import StepFunctionResponse

    def get_execution_history(self):
        execution_arn = self._get_param("executionArn")
        max_results = self._get_int_param("maxResults") or 100
        reverse = bool(self._get_bool_param("reverseOrder", False))
        token = self._get_param("nextToken")
        history = self.stepfunction_backend.get_execution_history(execution_arn)
        events = list(history.get("events", []) if isinstance(history, dict) else history)
        if reverse:
            events.reverse()
        page, next_token = paged(events, token, execution_arn, max_results, InvalidToken)
        result: dict[str, Any] = {"events": page}
        if next_token:
            result["nextToken"] = next_token
        return ActionResult(result)

    StepFunctionResponse.get_execution_history = get_execution_history


# ---------------------------------------------------------------------------------------------
# Patch 9: Step Functions state machine versions and CreateStateMachine idempotency
# ---------------------------------------------------------------------------------------------

# What an identical CreateStateMachine must repeat, with the value AWS assumes when omitted.
_SFN_CREATE_DEFAULTS = {
    "type": "STANDARD",
    "loggingConfiguration": {"level": "OFF"},
    "tracingConfiguration": {"enabled": False},
    "encryptionConfiguration": {"type": "AWS_OWNED_KEY"},
}


def patch_sfn_versions() -> None:
    """Versions as AWS keeps them, where moto falls short:

    * ListStateMachineVersions is not implemented (HTTP 500); it now lists newest first, paged.
    * StartExecution with a version ARN answers 500 (a version cannot start executions). It now
      runs the version's definition and role as frozen at publish time; the execution belongs
      to the state machine (its ARN, DescribeExecution's stateMachineArn, ListExecutions,
      StopExecution) and DescribeExecution / ListExecutions report ``stateMachineVersionArn``.
      ListExecutions given a version ARN lists that version's executions only.
    * CreateStateMachine with the name of an existing machine returns that machine whatever
      the request says. AWS treats it as idempotent only when definition, type, logging,
      tracing and encryption configuration, publish and versionDescription all match (a
      different roleArn or tags are ignored, and not applied); otherwise it answers
      StateMachineAlreadyExists. Its stateMachineVersionArn is only returned with publish=true.
    * There are no revisions: UpdateStateMachine returns no ``revisionId`` and DescribeStateMachine
      none either. A machine now gets a new revision id when an update changes it (or when it
      is created with publish=true), and a version keeps the revision it was published from.
      As with PublishStateMachineVersion, publishing a revision that already has a version
      returns that version instead of adding another one.
    * DeleteStateMachine leaves the machine's tags behind, so a machine created again under the
      same name starts with the old tags; they now go with it (its versions already did)."""
    from moto.core.exceptions import AWSError
    from moto.core.responses import ActionResult
    from moto.stepfunctions.exceptions import InvalidToken, StateMachineDoesNotExist
    from moto.stepfunctions.models import StateMachine, StateMachineVersion, StepFunctionBackend
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend
    from moto.stepfunctions.responses import StepFunctionResponse
    from moto.utilities.utils import get_partition

    class StateMachineAlreadyExists(AWSError):
        TYPE = "StateMachineAlreadyExists"
        STATUS = 400

    # A version starts executions through the machine it belongs to: name uniqueness is checked
    # against, and the execution recorded in, the machine's own execution list.
    StateMachineVersion._handle_name_input_idempotency = StateMachine._handle_name_input_idempotency
    StateMachineVersion._validate_execution_input = StateMachine._validate_execution_input
    StateMachineVersion.start_execution = StateMachine.start_execution

    original_publish = StateMachine.publish

    def publish(self, description):
        if getattr(self, "flowline_revision", None) is None:
            self.flowline_revision = str(uuid.uuid4())
        latest = self.latest_version
        if latest is not None and getattr(latest, "flowline_revision", None) == self.flowline_revision:
            return
        original_publish(self, description)
        version = self.latest_version
        version.flowline_revision = self.flowline_revision
        version.executions = self.executions
        version.backend = self.backend

    original_update = StateMachine.update

    def update(self, **kwargs):
        changed = any(
            value is not None and getattr(self, key, None) != value for key, value in kwargs.items()
        )
        original_update(self, **kwargs)
        if changed:
            self.flowline_revision = str(uuid.uuid4())

    original_create = StepFunctionBackend.create_state_machine

    def create_state_machine(
        self,
        name,
        definition,
        roleArn,
        tags=None,
        publish=None,
        loggingConfiguration=None,
        tracingConfiguration=None,
        encryptionConfiguration=None,
        version_description=None,
        sm_type=None,
    ):
        wanted = {
            "definition": definition,
            "type": sm_type,
            "loggingConfiguration": loggingConfiguration,
            "tracingConfiguration": tracingConfiguration,
            "encryptionConfiguration": encryptionConfiguration,
        }
        requested = {"publish": bool(publish), "versionDescription": version_description}
        partition = get_partition(self.region_name)
        arn = f"arn:{partition}:states:{self.region_name}:{self.account_id}:stateMachine:{name}"
        existing = next((m for m in self.state_machines if m.arn == arn), None)
        if existing is not None:
            self._validate_name(name)
            self._validate_role_arn(roleArn)
            same = getattr(existing, "flowline_created", requested) == requested and all(
                (value or _SFN_CREATE_DEFAULTS.get(key)) == getattr(existing, key)
                for key, value in wanted.items()
            )
            if not same:
                raise StateMachineAlreadyExists(f"State Machine Already Exists: '{arn}'")
            return existing
        machine = original_create(
            self,
            name,
            definition,
            roleArn,
            tags=tags,
            publish=publish,
            loggingConfiguration=loggingConfiguration,
            tracingConfiguration=tracingConfiguration,
            encryptionConfiguration=encryptionConfiguration,
            version_description=version_description,
            sm_type=sm_type,
        )
        machine.flowline_created = requested
        return machine

    original_delete = StepFunctionBackend.delete_state_machine

    def delete_state_machine(self, arn):
        existed = any(m.arn == arn for m in self.state_machines)
        original_delete(self, arn)
        if existed:
            self.tagger.delete_all_tags_for_resource(arn)

    original_start = StepFunctionsParserBackend.start_execution

    def start_execution(self, state_machine_arn, name=None, execution_input=None, trace_header=None):
        execution = original_start(self, state_machine_arn, name, execution_input, trace_header)
        version = getattr(execution, "state_machine", None)
        if isinstance(version, StateMachineVersion):
            execution.flowline_version_arn = version.arn
            execution.state_machine_arn = version.source_arn
        return execution

    def _version_arn(backend, execution_arn):
        try:
            return getattr(backend.describe_execution(execution_arn), "flowline_version_arn", None)
        except Exception:  # noqa: BLE001 - the answer being built already says what exists
            return None

    original_create_response = StepFunctionResponse.create_state_machine

    def create_state_machine_response(self):
        answer = original_create_response(self)
        if not self._get_param("publish"):
            answer.result.pop("stateMachineVersionArn", None)
        return answer

    original_update_response = StepFunctionResponse.update_state_machine

    def update_state_machine_response(self):
        answer = original_update_response(self)
        machine = self.stepfunction_backend.describe_state_machine(self._get_param("stateMachineArn"))
        revision = getattr(machine, "flowline_revision", None)
        if revision:
            answer.result["revisionId"] = revision
        return answer

    original_describe = StepFunctionResponse._describe_state_machine

    def _describe_state_machine(self, state_machine_arn):
        answer = original_describe(self, state_machine_arn)
        machine = self.stepfunction_backend.describe_state_machine(state_machine_arn)
        revision = getattr(machine, "flowline_revision", None)
        if revision:
            answer.result["revisionId"] = revision
        return answer

    original_describe_execution = StepFunctionResponse.describe_execution

    def describe_execution(self):
        answer = original_describe_execution(self)
        version_arn = _version_arn(self.stepfunction_backend, self._get_param("executionArn"))
        if version_arn:
            answer.result["stateMachineVersionArn"] = version_arn
        return answer

    original_list_executions = StepFunctionResponse.list_executions

    def list_executions(self):
        answer = original_list_executions(self)
        backend = self.stepfunction_backend
        requested = backend.describe_state_machine(self._get_param("stateMachineArn"))
        items = []
        for item in answer.result.get("executions") or []:
            version_arn = _version_arn(backend, item["executionArn"])
            if isinstance(requested, StateMachineVersion):
                if version_arn != requested.arn:
                    continue
                item["stateMachineArn"] = requested.source_arn
            if version_arn:
                item["stateMachineVersionArn"] = version_arn
            items.append(item)
        answer.result["executions"] = items
        return answer

    def list_state_machine_versions(self):
        arn = self._get_param("stateMachineArn")
        machine = self.stepfunction_backend.describe_state_machine(arn)
        if not isinstance(machine, StateMachine):
            raise StateMachineDoesNotExist(f"State Machine Does Not Exist: '{arn}'")
        max_results = self._get_int_param("maxResults") or 100
        token = self._get_param("nextToken")
        versions = sorted(machine.versions.values(), key=lambda v: v.version, reverse=True)
        page, next_token = paged(versions, token, arn, max_results, InvalidToken)
        result: dict[str, Any] = {
            "stateMachineVersions": [
                {"stateMachineVersionArn": v.arn, "creationDate": v.creation_date} for v in page
            ]
        }
        if next_token:
            result["nextToken"] = next_token
        return ActionResult(result)

    StateMachine.publish = publish
    StateMachine.update = update
    StepFunctionBackend.create_state_machine = create_state_machine
    StepFunctionBackend.delete_state_machine = delete_state_machine
    StepFunctionsParserBackend.start_execution = start_execution
    StepFunctionResponse.create_state_machine = create_state_machine_response
    StepFunctionResponse.update_state_machine = update_state_machine_response
    StepFunctionResponse._describe_state_machine = _describe_state_machine
    StepFunctionResponse.describe_execution = describe_execution
    StepFunctionResponse.list_executions = list_executions
    StepFunctionResponse.list_state_machine_versions = list_state_machine_versions


# ---------------------------------------------------------------------------------------------
# Configuration that survives /moto-api/reset
# ---------------------------------------------------------------------------------------------


def patch_reset() -> None:
    """moto keeps its configuration in a module dictionary that /moto-api/reset does not touch,
    so the switches survive a reset as long as no client changed them; re-applying them on reset
    makes every reset return to the launcher's baseline regardless, and also forgets the
    execution-to-job bookkeeping and the cached clients."""
    from moto.moto_api._internal.models import MotoAPIBackend

    original_reset = MotoAPIBackend.reset

    def reset(self):
        original_reset(self)
        apply_emulator_config()
        with _EXECUTION_JOBS_LOCK:
            _EXECUTION_JOBS.clear()
            _STOPPED_EXECUTIONS.clear()
        sfn_map.reset()
        iam_mode.on_reset(DEFAULT_ACCOUNT)
        with _CLIENTS_LOCK:
            _CLIENTS.clear()
        with _S3_EVENTS_LOCK:
            _RECENT_S3_EVENTS.clear()

    MotoAPIBackend.reset = reset


def apply_patches() -> None:
    iam_mode.apply()
    patch_interpreter_clients()
    patch_sfn_batch_integration()
    batch_strict.patch_sfn_submit_job_parameters()
    patch_batch_describe_jobs()
    patch_batch_job_definitions()
    patch_batch_jobs()
    patch_events()
    patch_sfn_states_integration()
    patch_sync_poll_interval()
    patch_s3_eventbridge_events()
    sfn_stop.apply()
    sfn_map.patch_distributed_map()
    # Before the StopExecution wrapper below captures moto's, so that it reaches map children.
    sfn_map.patch_child_lookup()
    patch_sfn_executions()
    patch_sfn_history_paging()
    patch_sfn_versions()
    # Last: it answers ListExecutions(mapRunArn) before the versions patch looks for a machine.
    sfn_map.patch_map_run_responses(paged)
    patch_reset()


def kill_all_processes() -> None:
    with _PROCESSES_LOCK:
        processes = list(_PROCESSES)
    for proc in processes:
        _kill(proc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5000, help="port to bind; 0 picks a free one")
    parser.add_argument(
        "--exec-jobs",
        action="store_true",
        default=os.environ.get(ENV_EXEC_JOBS, "") not in ("", "0", "false", "False"),
        help=f"run Batch job commands as local processes (also {ENV_EXEC_JOBS}=1)",
    )
    parser.add_argument(
        "--job-log-dir", default="", help="where --exec-jobs writes job output (default: a new temp dir)"
    )
    parser.add_argument(
        "--enforce-iam",
        action="store_true",
        default=os.environ.get(iam_mode.ENV_ENFORCE_IAM, "") not in ("", "0", "false", "False"),
        help=f"authenticate and authorize every request against IAM (also {iam_mode.ENV_ENFORCE_IAM}=1); see iam_mode.py",
    )
    parser.add_argument(
        "--iam-free-requests",
        type=int,
        default=int(os.environ.get(iam_mode.ENV_FREE_REQUESTS, "0") or 0),
        help=f"with --enforce-iam, let this many requests through unchecked first (also {iam_mode.ENV_FREE_REQUESTS})",
    )
    parser.add_argument(
        "--images",
        default=os.environ.get(task_runtime.ENV_IMAGES, ""),
        help=f"image-to-runtime mapping (default hack/moto/images.json; also {task_runtime.ENV_IMAGES})",
    )
    parser.add_argument(
        "--runtimes",
        default=os.environ.get(task_runtime.ENV_RUNTIMES, ""),
        help="file of NAME=VENV lines, as install-runtimes.sh prints, for --exec-jobs "
        f"(also {task_runtime.ENV_RUNTIMES})",
    )
    parser.add_argument(
        "--task-bin-dir",
        default=os.environ.get(task_runtime.ENV_TASK_BIN_DIR, ""),
        help="folder holding the flowline binary, put on every task's PATH after its runtime's "
        f"(also {task_runtime.ENV_TASK_BIN_DIR}); without it tasks have no flowline",
    )
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr
    )
    logging.getLogger("werkzeug").setLevel(logging.INFO if args.verbose else logging.WARNING)

    from werkzeug.serving import make_server

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )

    try:
        task_runtime.configure(args.images, args.runtimes, args.task_bin_dir)
    except (OSError, ValueError) as err:
        parser.error(f"cannot read the images or runtimes: {err}")
    LOG.info("job images: %s", task_runtime.describe_configuration())
    SETTINGS.exec_jobs = bool(args.exec_jobs)
    if SETTINGS.exec_jobs:
        if args.job_log_dir:
            SETTINGS.job_log_dir = os.path.abspath(args.job_log_dir)
            os.makedirs(SETTINGS.job_log_dir, exist_ok=True)
        else:
            SETTINGS.job_log_dir = tempfile.mkdtemp(prefix="flowline-emulator-jobs-")
        LOG.info("--exec-jobs: job output goes to %s", SETTINGS.job_log_dir)
    SETTINGS.connect_host = (
        "127.0.0.1" if args.host in ("", "0.0.0.0") else ("::1" if args.host == "::" else args.host)
    )

    apply_emulator_config()
    apply_patches()
    if args.enforce_iam:
        iam_mode.enable(args.iam_free_requests, DEFAULT_ACCOUNT)
        LOG.info("--enforce-iam: requests are checked against IAM; administrator key %s", iam_mode.ADMIN_ACCESS_KEY)

    app = FlowlineTestRoutes(DomainDispatcherApplication(create_backend_app))
    server = make_server(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)
    SETTINGS.port = server.server_port
    # moto's own code (and MOTO_PORT-aware helpers) must call back into this server.
    os.environ["MOTO_PORT"] = str(SETTINGS.port)

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    display_host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"moto ready on http://{display_host}:{SETTINGS.port}", flush=True)
    try:
        server.serve_forever()
    except SystemExit:
        pass
    finally:
        kill_all_processes()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
