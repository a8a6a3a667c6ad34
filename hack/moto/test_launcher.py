"""Tests of the patched AWS emulator (launcher.py), against a real launcher process.

Run with the emulator's venv:  $(hack/moto/install.sh) -m pytest hack/moto -q
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

HERE = Path(__file__).resolve().parent
LAUNCHER = HERE / "launcher.py"
REGION = "us-east-1"
ACCOUNT = "123456789012"
READY = re.compile(r"^moto ready on (http://\S+)$")
# An image that images.json maps to the "python" runtime (an unmapped image cannot be pulled).
IMAGE = "python:3.12-slim"
_RUNTIMES: list[Path] = []


def runtimes_file(tmp_path_factory) -> Path:
    """The runtimes install-runtimes.sh installs (once per test session), as a --runtimes file."""
    if not _RUNTIMES:
        listing = subprocess.run(
            [str(HERE / "install-runtimes.sh")], check=True, capture_output=True, text=True
        ).stdout
        path = tmp_path_factory.mktemp("runtimes") / "runtimes.txt"
        path.write_text(listing)
        _RUNTIMES.append(path)
    return _RUNTIMES[0]


class Emulator:
    def __init__(self, endpoint: str, proc: subprocess.Popen, log_dir: Path | None):
        self.endpoint = endpoint
        self.proc = proc
        self.log_dir = log_dir

    def client(self, service: str, access_key: str = "testing"):
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=access_key,
            aws_secret_access_key="testing",
            # No retries: a 500 from the emulator must surface, not be retried away.
            config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}),
        )

    def post(self, path: str, body: dict | None = None) -> tuple[int, dict]:
        data = json.dumps(body or {}).encode()
        req = urllib.request.Request(
            self.endpoint + path, data=data, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"{}")

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.endpoint + path, timeout=10) as resp:
            return json.loads(resp.read())


def _start(tmp_path_factory, *extra: str) -> Emulator:
    logs = tmp_path_factory.mktemp("emulator")
    log_dir = logs / "jobs" if "--exec-jobs" in extra else None
    args = [sys.executable, str(LAUNCHER), "--host", "127.0.0.1", "--port", "0", *extra]
    if log_dir is not None:
        args += ["--job-log-dir", str(log_dir), "--runtimes", str(runtimes_file(tmp_path_factory))]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLINE_EMULATOR_")}
    stderr = open(logs / "launcher.log", "wb")
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env, start_new_session=True
    )
    stderr.close()
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(30)
    match = READY.match(line[0].strip()) if line else None
    if match is None:
        proc.kill()
        proc.wait()
        pytest.fail(f"launcher did not become ready: {line!r}\n{(logs / 'launcher.log').read_text()}")
    return Emulator(match.group(1), proc, log_dir)


def _stop(emulator: Emulator) -> None:
    emulator.proc.terminate()
    try:
        emulator.proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(emulator.proc.pid, 9)
        emulator.proc.wait()
    assert emulator.proc.returncode is not None


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    emulator = _start(tmp_path_factory)
    yield emulator
    _stop(emulator)


@pytest.fixture(scope="module")
def exec_emu(tmp_path_factory):
    emulator = _start(tmp_path_factory, "--exec-jobs")
    yield emulator
    _stop(emulator)


def wait_for(fn, timeout: float = 15.0, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last value: {last!r}")


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def batch_env(emulator: Emulator) -> dict:
    """A compute environment and a job queue, as moto needs before any job."""
    iam, batch = emulator.client("iam"), emulator.client("batch")
    role = iam.create_role(
        RoleName=uid("batch-role"),
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
    )["Role"]["Arn"]
    ce = batch.create_compute_environment(
        computeEnvironmentName=uid("ce"), type="UNMANAGED", state="ENABLED", serviceRole=role
    )["computeEnvironmentArn"]
    queue = batch.create_job_queue(
        jobQueueName=uid("queue"),
        state="ENABLED",
        priority=1,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": ce}],
    )["jobQueueArn"]
    return {"batch": batch, "queue": queue, "role": role}


def container_def(batch, env: dict | None = None, command: list[str] | None = None, **extra) -> str:
    return batch.register_job_definition(
        jobDefinitionName=uid("jd"),
        type="container",
        containerProperties={
            "image": IMAGE,
            "command": command or ["echo", "hello"],
            "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "512"}],
            "environment": [{"name": k, "value": v} for k, v in (env or {}).items()],
        },
        **extra,
    )["jobDefinitionArn"]


def describe_job(batch, job_id: str) -> dict:
    jobs = batch.describe_jobs(jobs=[job_id])["jobs"]
    assert len(jobs) == 1, jobs
    return jobs[0]


def wait_job(batch, job_id: str, statuses=("SUCCEEDED", "FAILED"), timeout: float = 15.0) -> dict:
    return wait_for(
        lambda: (lambda j: j if j["status"] in statuses else None)(describe_job(batch, job_id)),
        timeout,
        what=f"job {job_id} in {statuses}",
    )


def state_machine(emulator: Emulator, definition: dict, role: str | None = None) -> str:
    sfn = emulator.client("stepfunctions")
    return sfn.create_state_machine(
        name=uid("sm"), definition=json.dumps(definition), roleArn=role or f"arn:aws:iam::{ACCOUNT}:role/sfn"
    )["stateMachineArn"]


def wait_execution(sfn, arn: str, timeout: float = 20.0) -> dict:
    return wait_for(
        lambda: (lambda d: d if d["status"] != "RUNNING" else None)(sfn.describe_execution(executionArn=arn)),
        timeout,
        interval=0.2,
        what=f"execution {arn}",
    )


def batch_task(queue: str, job_def: str, sync: bool = True, **params) -> dict:
    return {
        "Type": "Task",
        "Resource": "arn:aws:states:::batch:submitJob" + (".sync" if sync else ""),
        "Parameters": {"JobName": "step", "JobQueue": queue, "JobDefinition": job_def, **params},
    }


PASS_MACHINE = {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


def test_config_is_set_and_survives_reset(emu):
    assert emu.get("/moto-api/config")["batch"] == {"use_docker": False}
    # A client may switch moto's configuration; a reset returns to the launcher's baseline.
    emu.post(
        "/moto-api/config", {"batch": {"use_docker": True}, "stepfunctions": {"execute_state_machine": False}}
    )
    assert emu.get("/moto-api/config")["batch"] == {"use_docker": True}
    status, _ = emu.post("/moto-api/reset")
    assert status == 200
    assert emu.get("/moto-api/config")["batch"] == {"use_docker": False}

    # After the reset, state machines still execute (the non-executing backend would leave the
    # execution RUNNING forever) and Batch jobs still settle without Docker.
    sfn = emu.client("stepfunctions")
    arn = sfn.start_execution(stateMachineArn=state_machine(emu, PASS_MACHINE), input='{"a": 1}')[
        "executionArn"
    ]
    done = wait_execution(sfn, arn)
    assert done["status"] == "SUCCEEDED"
    assert json.loads(done["output"]) == {"a": 1}
    setup = batch_env(emu)
    job = setup["batch"].submit_job(
        jobName="after-reset", jobQueue=setup["queue"], jobDefinition=container_def(setup["batch"])
    )
    assert wait_job(setup["batch"], job["jobId"])["status"] == "SUCCEEDED"


def test_other_services_answer(emu):
    assert emu.client("sts").get_caller_identity()["Account"] == ACCOUNT
    s3 = emu.client("s3")
    bucket = uid("bucket")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="a/b.json", Body=b"{}")
    assert s3.get_object(Bucket=bucket, Key="a/b.json")["Body"].read() == b"{}"
    secrets = emu.client("secretsmanager")
    secrets.create_secret(Name=uid("token"), SecretString="s3cr3t")
    assert secrets.list_secrets()["SecretList"]
    logs = emu.client("logs")
    group = uid("/flowline/test")
    logs.create_log_group(logGroupName=group)
    assert logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]


# --------------------------------------------------------------------------------------------
# Patch 1: batch:submitJob(.sync)
# --------------------------------------------------------------------------------------------


def test_submit_job_sync_task_succeeds_with_pascal_case_output(emu):
    setup = batch_env(emu)
    batch, sfn = setup["batch"], emu.client("stepfunctions")
    job_def = container_def(batch, env={"FROM_DEF": "def"})
    machine = {
        "StartAt": "Submit",
        "States": {
            "Submit": {
                **batch_task(setup["queue"], job_def, sync=False),
                "ResultPath": "$.submitted",
                "Next": "Run",
            },
            "Run": {
                **batch_task(
                    setup["queue"],
                    job_def,
                    ContainerOverrides={
                        "Command": ["python", "-m", "step"],
                        "Environment.$": "$.env",
                        "ResourceRequirements": [{"Type": "MEMORY", "Value": "2048"}],
                    },
                    Parameters={"inputPath": "s3://bucket/key"},
                    Tags={"flow": "demo"},
                    RetryStrategy={"Attempts": 2},
                    Timeout={"AttemptDurationSeconds": 600},
                ),
                "ResultPath": "$.job",
                "End": True,
            },
        },
    }
    arn = sfn.start_execution(
        stateMachineArn=state_machine(emu, machine),
        input=json.dumps({"env": [{"Name": "STEP", "Value": "train"}]}),
    )["executionArn"]
    done = wait_execution(sfn, arn)
    assert done["status"] == "SUCCEEDED", done
    output = json.loads(done["output"])
    assert set(output["submitted"]) >= {"JobId", "JobName", "JobArn"}
    out = output["job"]
    assert out["Status"] == "SUCCEEDED"
    assert out["JobName"] == "step"
    assert out["Container"]["ExitCode"] == 0
    assert out["StatusReason"] == "Essential container in task exited"
    env = {e["Name"]: e["Value"] for e in out["Container"]["Environment"]}
    assert env["STEP"] == "train" and env["FROM_DEF"] == "def"
    assert env["MANAGED_BY_AWS"] == "STARTED_BY_STEP_FUNCTIONS"
    assert out["Parameters"] == {"inputPath": "s3://bucket/key"}
    assert out["Tags"] == {"flow": "demo"}
    assert out["Attempts"] and "Container" in out["Attempts"][0]

    # The Batch API itself saw the converted request.
    job = describe_job(batch, out["JobId"])
    assert job["container"]["command"] == ["python", "-m", "step"]
    assert {"type": "MEMORY", "value": "2048"} in job["container"]["resourceRequirements"]
    assert job["retryStrategy"] == {"attempts": 2}
    assert job["timeout"] == {"attemptDurationSeconds": 600}


def test_submit_job_sync_task_fails_with_task_failed(emu):
    setup = batch_env(emu)
    sfn = emu.client("stepfunctions")
    job_def = container_def(setup["batch"])
    machine = {
        "StartAt": "Run",
        "States": {
            "Run": {
                **batch_task(
                    setup["queue"],
                    job_def,
                    ContainerOverrides={
                        "Environment": [{"Name": "FLOWLINE_EMULATOR_FAIL", "Value": "disk full"}]
                    },
                ),
                "End": True,
            }
        },
    }
    arn = sfn.start_execution(stateMachineArn=state_machine(emu, machine))["executionArn"]
    done = wait_execution(sfn, arn)
    assert done["status"] == "FAILED"
    events = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
    failed = [e["taskFailedEventDetails"] for e in events if e["type"] == "TaskFailed"]
    assert failed, [e["type"] for e in events]
    assert failed[0]["error"] == "States.TaskFailed"
    cause = json.loads(failed[0]["cause"])
    assert cause["Status"] == "FAILED"
    assert cause["StatusReason"] == "disk full"
    assert cause["Container"]["ExitCode"] == 1
    assert done["error"] == "States.TaskFailed"
    assert json.loads(done["cause"])["StatusReason"] == "disk full"


# --------------------------------------------------------------------------------------------
# Patch 6/7: job fate controls, terminate, stop execution
# --------------------------------------------------------------------------------------------


def test_job_held_runnable_then_running_then_succeeded(emu):
    setup = batch_env(emu)
    batch = setup["batch"]
    # The definition asks for 30 s; the submission's override (3 s) must win.
    job_def = container_def(
        batch, env={"FLOWLINE_EMULATOR_RUN_SECONDS": "30", "FLOWLINE_EMULATOR_RUNNABLE_SECONDS": "1"}
    )
    start = time.monotonic()
    job_id = batch.submit_job(
        jobName="held",
        jobQueue=setup["queue"],
        jobDefinition=job_def,
        containerOverrides={"environment": [{"name": "FLOWLINE_EMULATOR_RUN_SECONDS", "value": "3"}]},
    )["jobId"]
    first = describe_job(batch, job_id)
    assert first["status"] in ("PENDING", "RUNNABLE")
    assert "startedAt" not in first
    running = wait_job(batch, job_id, ("RUNNING", "SUCCEEDED", "FAILED"), timeout=5)
    assert running["status"] == "RUNNING"
    assert running["startedAt"] > 0
    assert time.monotonic() - start >= 0.9
    done = wait_job(batch, job_id, timeout=10)
    assert done["status"] == "SUCCEEDED"
    assert time.monotonic() - start >= 3.9
    assert done["container"]["exitCode"] == 0
    assert done["stoppedAt"] >= done["startedAt"]


def test_terminate_held_job_fails_it_immediately(emu):
    setup = batch_env(emu)
    batch = setup["batch"]
    job_def = container_def(batch, env={"FLOWLINE_EMULATOR_RUN_SECONDS": "60"})
    job_id = batch.submit_job(jobName="long", jobQueue=setup["queue"], jobDefinition=job_def)["jobId"]
    wait_job(batch, job_id, ("RUNNING",), timeout=5)
    batch.terminate_job(jobId=job_id, reason="user asked")
    job = describe_job(batch, job_id)
    assert job["status"] == "FAILED"
    assert job["statusReason"] == "user asked"


def test_stop_execution_terminates_its_batch_job(emu):
    setup = batch_env(emu)
    batch, sfn = setup["batch"], emu.client("stepfunctions")
    job_def = container_def(batch, env={"FLOWLINE_EMULATOR_RUN_SECONDS": "60"})
    machine = {"StartAt": "Run", "States": {"Run": {**batch_task(setup["queue"], job_def), "End": True}}}
    arn = sfn.start_execution(stateMachineArn=state_machine(emu, machine))["executionArn"]
    listed = wait_for(
        lambda: batch.list_jobs(jobQueue=setup["queue"], jobStatus="RUNNING")["jobSummaryList"],
        what="running job",
    )
    job_id = listed[0]["jobId"]
    sfn.stop_execution(executionArn=arn)
    job = wait_job(batch, job_id, timeout=5)
    assert job["status"] == "FAILED"
    assert job["statusReason"] == "Execution stopped"
    assert wait_execution(sfn, arn)["status"] == "ABORTED"


# --------------------------------------------------------------------------------------------
# Patch 3: job definitions
# --------------------------------------------------------------------------------------------


def test_multinode_job_definition_round_trips(emu):
    batch = emu.client("batch")
    node_properties = {
        "numNodes": 3,
        "mainNode": 0,
        "nodeRangeProperties": [
            {
                "targetNodes": "0",
                "container": {
                    "image": "flowline/main",
                    "command": ["main"],
                    "resourceRequirements": [
                        {"type": "VCPU", "value": "2"},
                        {"type": "MEMORY", "value": "1024"},
                    ],
                },
            },
            {
                "targetNodes": "1:",
                "container": {
                    "image": "flowline/worker",
                    "command": ["worker"],
                    "resourceRequirements": [
                        {"type": "VCPU", "value": "1"},
                        {"type": "MEMORY", "value": "512"},
                    ],
                },
            },
        ],
    }
    name = uid("mnp")
    batch.register_job_definition(
        jobDefinitionName=name,
        type="multinode",
        nodeProperties=node_properties,
        tags={"team": "ml"},
        propagateTags=True,
        retryStrategy={"attempts": 3, "evaluateOnExit": [{"onExitCode": "137", "action": "RETRY"}]},
        timeout={"attemptDurationSeconds": 3600},
        platformCapabilities=["EC2"],
        schedulingPriority=7,
    )
    jd = batch.describe_job_definitions(jobDefinitionName=name)["jobDefinitions"][0]
    assert jd["type"] == "multinode"
    assert jd["nodeProperties"] == node_properties
    assert jd["tags"] == {"team": "ml"}
    assert jd["propagateTags"] is True
    assert jd["retryStrategy"]["attempts"] == 3
    assert jd["retryStrategy"]["evaluateOnExit"][0]["onExitCode"] == "137"
    assert jd["timeout"] == {"attemptDurationSeconds": 3600}
    assert jd["platformCapabilities"] == ["EC2"]
    assert jd["schedulingPriority"] == 7


def test_container_job_definition_round_trips_and_revisions_are_independent(emu):
    batch = emu.client("batch")
    name = uid("jd")
    container = {
        "image": "flowline/step",
        "command": ["run"],
        "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "512"}],
        "environment": [{"name": "A", "value": "1"}],
        "secrets": [
            {"name": "TOKEN", "valueFrom": "arn:aws:secretsmanager:us-east-1:123456789012:secret:tok"}
        ],
        "linuxParameters": {
            "sharedMemorySize": 256,
            "maxSwap": 1024,
            "swappiness": 10,
            "tmpfs": [{"containerPath": "/scratch", "size": 64, "mountOptions": ["rw"]}],
            "devices": [
                {"hostPath": "/dev/fuse", "containerPath": "/dev/fuse", "permissions": ["READ", "WRITE"]}
            ],
        },
    }
    batch.register_job_definition(
        jobDefinitionName=name,
        type="container",
        containerProperties=container,
        propagateTags=True,
        platformCapabilities=["EC2"],
        retryStrategy={"attempts": 2},
        timeout={"attemptDurationSeconds": 60},
        tags={"v": "1"},
    )
    batch.register_job_definition(
        jobDefinitionName=name,
        type="container",
        containerProperties=container,
        propagateTags=False,
        platformCapabilities=["FARGATE"],
    )
    defs = {
        d["revision"]: d for d in batch.describe_job_definitions(jobDefinitionName=name)["jobDefinitions"]
    }
    first, second = defs[1], defs[2]
    for key in ("secrets", "linuxParameters", "environment", "command", "image"):
        assert first["containerProperties"][key] == container[key], key
    assert first["propagateTags"] is True and first["platformCapabilities"] == ["EC2"]
    assert first["retryStrategy"] == {"attempts": 2} and first["timeout"] == {"attemptDurationSeconds": 60}
    assert first["tags"] == {"v": "1"}
    assert second["propagateTags"] is False
    assert second["platformCapabilities"] == ["FARGATE"]
    assert "retryStrategy" not in second and "timeout" not in second


# --------------------------------------------------------------------------------------------
# Patch 4: EventBridge
# --------------------------------------------------------------------------------------------


def executions(sfn, arn: str) -> list[dict]:
    return sfn.list_executions(stateMachineArn=arn)["executions"]


def test_put_events_delivers_transformed_input_to_state_machine(emu):
    events, sfn = emu.client("events"), emu.client("stepfunctions")
    target_sm = state_machine(emu, PASS_MACHINE)
    scheduled_sm = state_machine(emu, PASS_MACHINE)
    disabled_sm = state_machine(emu, PASS_MACHINE)
    rule = uid("on-run")
    pattern = json.dumps({"source": ["flowline.test"], "detail-type": ["Run"]})
    events.put_rule(Name=rule, EventPattern=pattern)
    events.put_targets(
        Rule=rule,
        Targets=[
            {
                "Id": "sm",
                "Arn": target_sm,
                "RoleArn": f"arn:aws:iam::{ACCOUNT}:role/events",
                "InputTransformer": {
                    "InputPathsMap": {
                        "flow": "$.detail.flow",
                        "n": "$.detail.count",
                        "src": "$.source",
                        "kind": "$.detail-type",
                    },
                    "InputTemplate": '{"flow": <flow>, "count": <n>, "msg": "run <flow> from <src>", "kind": <kind>, "rule": "<aws.events.rule-name>"}',
                },
            }
        ],
    )
    schedule_rule = uid("nightly")
    events.put_rule(Name=schedule_rule, ScheduleExpression="rate(1 day)")
    events.put_targets(Rule=schedule_rule, Targets=[{"Id": "sm", "Arn": scheduled_sm}])
    disabled_rule = uid("off")
    events.put_rule(Name=disabled_rule, EventPattern=pattern, State="DISABLED")
    events.put_targets(Rule=disabled_rule, Targets=[{"Id": "sm", "Arn": disabled_sm}])

    answer = events.put_events(
        Entries=[
            {
                "Source": "flowline.test",
                "DetailType": "Run",
                "Detail": json.dumps({"flow": "f1", "count": 2}),
            },
            {
                "Source": "flowline.other",
                "DetailType": "Run",
                "Detail": json.dumps({"flow": "nope", "count": 0}),
            },
        ]
    )
    assert answer["FailedEntryCount"] == 0
    started = wait_for(lambda: executions(sfn, target_sm), what="execution from the rule")
    time.sleep(0.3)  # a wrongly matched second event would have started by now
    assert len(executions(sfn, target_sm)) == 1
    got = json.loads(sfn.describe_execution(executionArn=started[0]["executionArn"])["input"])
    assert got == {"flow": "f1", "count": 2, "msg": "run f1 from flowline.test", "kind": "Run", "rule": rule}
    assert executions(sfn, scheduled_sm) == [], "a schedule-only rule matched an event"
    assert executions(sfn, disabled_sm) == [], "a disabled rule received an event"


def test_input_transformer_rendering_and_paths():
    sys.path.insert(0, str(HERE))
    import launcher

    event = {
        "source": "s",
        "detail-type": "Run",
        "detail": {"q": 'say "hi"', "n": 1, "items": [{"id": "a"}, {"id": "b"}]},
    }
    assert launcher.eval_event_path("$.detail-type", event) == (True, "Run")
    assert launcher.eval_event_path("$.detail.items[1].id", event) == (True, "b")
    assert launcher.eval_event_path("$.detail.items[*].id", event) == (True, ["a", "b"])
    assert launcher.eval_event_path("$.detail.missing", event) == (False, None)
    values = {"q": 'say "hi"', "n": 1, "obj": {"k": [1]}, "none": None, "aws.events.event.json": event}
    rendered = launcher.render_input_template(
        '{"q": <q>, "text": "<q> x<n>", "obj": <obj>, "none": <none>, "e": <aws.events.event.json>, "keep": "<other>"}',
        values,
    )
    assert json.loads(rendered) == {
        "q": 'say "hi"',
        "text": 'say "hi" x1',
        "obj": {"k": [1]},
        "none": None,
        "e": event,
        "keep": "<other>",
    }
    assert launcher.render_input_template("<q> is <n>", values) == 'say "hi" is 1'
    rule = type("Rule", (), {"arn": "arn:aws:events:us-east-1:123456789012:rule/r", "name": "r"})()
    assert (
        json.loads(launcher.target_input(rule, {"InputPath": "$.detail.items"}, event))
        == event["detail"]["items"]
    )
    assert launcher.target_input(rule, {"Input": '{"c": 1}'}, event) == '{"c": 1}'
    assert json.loads(launcher.target_input(rule, {}, event)) == event


def test_fire_rule_delivers_scheduled_event(emu):
    events, sfn = emu.client("events"), emu.client("stepfunctions")
    plain_sm = state_machine(emu, PASS_MACHINE)
    const_sm = state_machine(emu, PASS_MACHINE)
    rule = uid("cron")
    rule_arn = events.put_rule(Name=rule, ScheduleExpression="cron(0 3 * * ? *)")["RuleArn"]
    events.put_targets(
        Rule=rule,
        Targets=[{"Id": "a", "Arn": plain_sm}, {"Id": "b", "Arn": const_sm, "Input": '{"const": 1}'}],
    )

    status, body = emu.post("/flowline-test/fire-rule", {"name": rule})
    assert status == 200, body
    assert body["ruleArn"] == rule_arn and len(body["executionArns"]) == 2
    plain = json.loads(
        sfn.describe_execution(executionArn=wait_for(lambda: executions(sfn, plain_sm))[0]["executionArn"])[
            "input"
        ]
    )
    assert plain["detail-type"] == "Scheduled Event"
    assert plain["source"] == "aws.events"
    assert plain["resources"] == [rule_arn]
    assert plain["detail"] == {}
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", plain["time"])
    const = json.loads(
        sfn.describe_execution(executionArn=executions(sfn, const_sm)[0]["executionArn"])["input"]
    )
    assert const == {"const": 1}

    events.disable_rule(Name=rule)
    status, _ = emu.post("/flowline-test/fire-rule", {"name": rule})
    assert status == 409
    assert len(executions(sfn, plain_sm)) == 1
    assert emu.post("/flowline-test/fire-rule", {"name": uid("missing")})[0] == 404


def test_s3_events_have_own_ids_and_a_redelivery_starts_no_second_named_execution(emu):
    """S3 → EventBridge → a trigger machine that starts the target under a name from the event
    id: each object gets one execution, and a redelivered event (same id) none more."""
    s3, events, sfn = emu.client("s3"), emu.client("events"), emu.client("stepfunctions")
    bucket = uid("landing")
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={"EventBridgeConfiguration": {}}
    )
    target = state_machine(emu, PASS_MACHINE)
    trigger = state_machine(
        emu,
        {
            "StartAt": "Start",
            "States": {
                "Start": {
                    "Type": "Task",
                    "Resource": "arn:aws:states:::states:startExecution",
                    "Parameters": {
                        "StateMachineArn": target,
                        "Name.$": "States.Format('s3_{}', $.eventId)",
                        "Input": {"trigger": {"bucket.$": "$.bucket", "key.$": "$.key"}},
                    },
                    "Catch": [{"ErrorEquals": ["StepFunctions.ExecutionAlreadyExistsException"], "Next": "Dup"}],
                    "End": True,
                },
                "Dup": {"Type": "Succeed"},
            },
        },
    )
    rule = uid("s3")
    events.put_rule(
        Name=rule,
        EventPattern=json.dumps(
            {
                "source": ["aws.s3"],
                "detail-type": ["Object Created"],
                "detail": {"bucket": {"name": [bucket]}, "object": {"key": [{"wildcard": "in/*.csv"}]}},
            }
        ),
    )
    events.put_targets(
        Rule=rule,
        Targets=[
            {
                "Id": "t",
                "Arn": trigger,
                "InputTransformer": {
                    "InputPathsMap": {"eventId": "$.id", "bucket": "$.detail.bucket.name", "key": "$.detail.object.key"},
                    "InputTemplate": '{"eventId": <eventId>, "bucket": <bucket>, "key": <key>}',
                },
            }
        ],
    )
    s3.put_object(Bucket=bucket, Key="in/a.csv", Body=b"1")
    s3.put_object(Bucket=bucket, Key="in/b.csv", Body=b"2")
    s3.put_object(Bucket=bucket, Key="in/c.txt", Body=b"3")  # filtered out by the pattern
    started = wait_for(lambda: len(executions(sfn, target)) == 2 and executions(sfn, target), what="two executions")
    names = {e["name"] for e in started}
    assert all(re.fullmatch(r"s3_[0-9a-f-]{36}", n) for n in names), names
    assert len(names) == 2, "each event has its own id"

    status, body = emu.post("/flowline-test/redeliver-s3-event", {"key": "in/a.csv"})
    assert status == 200, body
    assert f"s3_{body['eventId']}" in names
    wait_for(lambda: len(executions(sfn, trigger)) == 3, what="the redelivery reaching the trigger machine")
    for e in executions(sfn, trigger):
        wait_execution(sfn, e["executionArn"])
    assert len(executions(sfn, target)) == 2, "a redelivered event starts no second execution"
    first = next(e for e in started if e["name"] == f"s3_{body['eventId']}")
    assert json.loads(sfn.describe_execution(executionArn=first["executionArn"])["input"]) == {
        "trigger": {"bucket": bucket, "key": "in/a.csv"}
    }
    assert emu.post("/flowline-test/redeliver-s3-event", {"key": "nothing"})[0] == 404


def test_executions_send_status_change_events_when_they_start_and_end(emu):
    sqs, events, sfn = emu.client("sqs"), emu.client("events"), emu.client("stepfunctions")
    queue = uid("execution-events")
    url = sqs.create_queue(QueueName=queue)["QueueUrl"]
    machine = state_machine(emu, PASS_MACHINE)
    rule = uid("status")
    events.put_rule(
        Name=rule,
        EventPattern=json.dumps(
            {
                "source": ["aws.states"],
                "detail-type": ["Step Functions Execution Status Change"],
                "detail": {"stateMachineArn": [machine]},
            }
        ),
    )
    queue_arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{queue}"
    events.put_targets(Rule=rule, Targets=[{"Id": "q", "Arn": queue_arn}])
    # Without a queue policy letting the rule send, AWS delivers nothing: a failed invocation.
    refused = sfn.start_execution(stateMachineArn=machine)["executionArn"]
    assert wait_execution(sfn, refused)["status"] == "SUCCEEDED"
    rule_arn = events.describe_rule(Name=rule)["Arn"]
    # Two events per execution (RUNNING, then SUCCEEDED), each a failed invocation.
    failed = wait_for(
        lambda: [f for f in emu.get("/flowline-test/failed-invocations")["failedInvocations"] if f["ruleArn"] == rule_arn][1:],
        what="failed invocations of the rule",
    )
    assert failed[0]["targetArn"] == queue_arn and "policy" in failed[0]["reason"]
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)
    # A policy for another rule does not help; one naming this rule does.
    def policy(source: str) -> str:
        return json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "events.amazonaws.com"},
                        "Action": "sqs:SendMessage",
                        "Resource": queue_arn,
                        "Condition": {"ArnEquals": {"aws:SourceArn": source}},
                    }
                ],
            }
        )

    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": policy(rule_arn + "-other")})
    other = sfn.start_execution(stateMachineArn=machine)["executionArn"]
    assert wait_execution(sfn, other)["status"] == "SUCCEEDED"
    wait_for(
        lambda: len([f for f in emu.get("/flowline-test/failed-invocations")["failedInvocations"] if f["ruleArn"] == rule_arn]) == 4,
        what="the second execution's failed invocations",
    )
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": policy(rule_arn)})
    arn = sfn.start_execution(stateMachineArn=machine)["executionArn"]
    assert wait_execution(sfn, arn)["status"] == "SUCCEEDED"
    received = []

    def both_events():
        for message in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1, MaxNumberOfMessages=10).get("Messages", []):
            received.append(json.loads(message["Body"])["detail"])
        return len(received) >= 2

    wait_for(both_events, what="the start and end events in the queue")
    # Events carry no order (a standard queue neither): a short execution's end may come first.
    by_status = {d["status"]: d for d in received}
    assert sorted(by_status) == ["RUNNING", "SUCCEEDED"] and len(received) == 2
    assert all(d["executionArn"] == arn for d in received)
    assert by_status["RUNNING"]["stopDate"] is None and by_status["SUCCEEDED"]["stopDate"]


def test_map_run_iterations_are_listed_and_their_history_read(emu):
    sfn = emu.client("stepfunctions")
    machine = state_machine(
        emu,
        {
            "StartAt": "Each",
            "States": {
                "Each": {
                    "Type": "Map",
                    "ItemsPath": "$.items",
                    "ItemProcessor": {
                        "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                        "StartAt": "Work",
                        "States": {"Work": {"Type": "Pass", "End": True}},
                    },
                    "End": True,
                }
            },
        },
    )
    arn = sfn.start_execution(stateMachineArn=machine, input=json.dumps({"items": [1, 2, 3]}))["executionArn"]
    assert wait_execution(sfn, arn)["status"] == "SUCCEEDED"
    events = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
    map_run = next(e for e in events if e["type"] == "MapRunStarted")["mapRunStartedEventDetails"]["mapRunArn"]
    assert sfn.describe_map_run(mapRunArn=map_run)["itemCounts"]["succeeded"] == 3
    # One child execution per item (test_map_runs.py covers them in depth).
    children = sfn.list_executions(mapRunArn=map_run)["executions"]
    assert len(children) == 3 and all(c["status"] == "SUCCEEDED" for c in children)
    for child in children:
        child_events = sfn.get_execution_history(executionArn=child["executionArn"], maxResults=1000)["events"]
        assert sum(1 for e in child_events if e["type"] == "PassStateEntered") == 1
    with pytest.raises(sfn.exceptions.ResourceNotFound):
        sfn.list_executions(mapRunArn=map_run + "x")


# --------------------------------------------------------------------------------------------
# Patch 5 and history paging
# --------------------------------------------------------------------------------------------


def test_unnamed_start_execution_gets_uuid_name(emu):
    sfn = emu.client("stepfunctions")
    arn = sfn.start_execution(stateMachineArn=state_machine(emu, PASS_MACHINE))["executionArn"]
    name = arn.rsplit(":", 1)[-1]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", name), arn
    assert sfn.describe_execution(executionArn=arn)["name"] == name


def test_execution_history_pages(emu):
    sfn = emu.client("stepfunctions")
    chain = {
        "StartAt": "S0",
        "States": {
            f"S{i}": {"Type": "Pass", **({"Next": f"S{i + 1}"} if i < 3 else {"End": True})} for i in range(4)
        },
    }
    arn = sfn.start_execution(stateMachineArn=state_machine(emu, chain))["executionArn"]
    assert wait_execution(sfn, arn)["status"] == "SUCCEEDED"
    full = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
    assert len(full) >= 8
    paged, token = [], None
    while True:
        kwargs = {"nextToken": token} if token else {}
        page = sfn.get_execution_history(executionArn=arn, maxResults=3, **kwargs)
        assert len(page["events"]) <= 3
        paged += page["events"]
        token = page.get("nextToken")
        if not token:
            break
    assert [e["id"] for e in paged] == [e["id"] for e in full]
    newest = sfn.get_execution_history(executionArn=arn, maxResults=1, reverseOrder=True)["events"]
    assert newest[0]["type"] == "ExecutionSucceeded"


# --------------------------------------------------------------------------------------------
# Patch 2: concurrency
# --------------------------------------------------------------------------------------------


def test_concurrent_describe_jobs_never_fails(emu):
    setup = batch_env(emu)
    batch, sfn = setup["batch"], emu.client("stepfunctions")
    job_def = container_def(batch)
    machine = {"StartAt": "Run", "States": {"Run": {**batch_task(setup["queue"], job_def), "End": True}}}
    sm = state_machine(emu, machine)
    errors: list[BaseException] = []
    # A big job table widens the window in which a lookup walks it while a submission grows it.
    first = batch.submit_job(
        jobName="c", jobQueue=setup["queue"], jobDefinition=job_def, arrayProperties={"size": 3000}
    )
    job_ids: list[str] = [first["jobId"]]
    stop = threading.Event()

    def submitter():
        client = emu.client("batch")
        while not stop.is_set():
            try:
                job_ids.append(
                    client.submit_job(
                        jobName="c",
                        jobQueue=setup["queue"],
                        jobDefinition=job_def,
                        arrayProperties={"size": 50},
                    )["jobId"]
                )
            except Exception as err:  # noqa: BLE001
                errors.append(err)

    def describer():
        client = emu.client("batch")
        while not stop.is_set():
            try:
                ids = job_ids[-5:] or ["none"]
                client.describe_jobs(jobs=ids)
            except Exception as err:  # noqa: BLE001
                errors.append(err)

    threads = [threading.Thread(target=submitter) for _ in range(4)] + [
        threading.Thread(target=describer) for _ in range(16)
    ]
    for thread in threads:
        thread.start()
    arns = [sfn.start_execution(stateMachineArn=sm)["executionArn"] for _ in range(6)]
    time.sleep(2.5)
    stop.set()
    for thread in threads:
        thread.join(20)
    assert not errors, errors[:3]
    assert len(job_ids) > 20
    for arn in arns:
        assert wait_execution(sfn, arn)["status"] == "SUCCEEDED"


# --------------------------------------------------------------------------------------------
# Request counter
# --------------------------------------------------------------------------------------------


def test_classify_request_names_operations():
    sys.path.insert(0, str(HERE))
    import launcher

    def classify(method, path, query="", body=b"", **headers):
        environ = {
            "REQUEST_METHOD": method,
            "PATH_INFO": urllib.parse.unquote(path),
            "RAW_URI": path + (f"?{query}" if query else ""),
            "QUERY_STRING": query,
            "wsgi.input": io.BytesIO(body),
            "CONTENT_LENGTH": str(len(body)) if body else "",
        }
        for name, value in headers.items():
            key = name.upper()
            environ[key if key == "CONTENT_TYPE" else "HTTP_" + key] = value
        return launcher.classify_request(environ), environ

    def signed(service):
        scope = f"AKID1/20250101/us-east-1/{service}/aws4_request"
        return {"authorization": f"AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=host, Signature=00"}

    arn = "arn%3Aaws%3Abatch%3Aus-east-1%3A123456789012%3Ajob-definition%2Fjd%3A1"
    form = "application/x-www-form-urlencoded; charset=utf-8"
    presigned = "X-Amz-Credential=AKID2%2F20250101%2Fus-east-1%2Fs3%2Faws4_request"
    sfn, batch, s3 = signed("states"), signed("batch"), signed("s3")
    # (method, path, query, body, headers) -> (operation, access key)
    cases = [
        ("POST", "/", "", b"{}", {"x_amz_target": "AWSStepFunctions.CreateStateMachine", **sfn}),
        ("POST", "/", "", b"{}", {"x_amz_target": "secretsmanager.DescribeSecret"}),
        ("POST", "/", "", b"{}", {"x_amz_target": "AWSEvents.PutRule"}),
        ("POST", "/v1/registerjobdefinition", "", b"{}", batch),
        ("POST", "/v1/describejobqueues", "", b"{}", {}),
        ("GET", f"/v1/tags/{arn}", "", b"", batch),
        ("POST", f"/v1/tags/{arn}", "", b"{}", batch),
        ("DELETE", f"/v1/tags/{arn}", "tagKeys=a", b"", batch),
        ("PUT", "/bucket", "", b"", s3),
        ("PUT", "/bucket/a/b.json", "", b"{}", s3),
        ("PUT", "/bucket/a/c.json", "", b"", {"x_amz_copy_source": "/bucket/a/b.json", **s3}),
        ("GET", "/bucket/a/b.json", "", b"", s3),
        ("HEAD", "/bucket/a/b.json", "", b"", s3),
        ("DELETE", "/bucket/a/b.json", "", b"", s3),
        ("GET", "/bucket", "list-type=2&prefix=a", b"", s3),
        ("PUT", "/bucket", "tagging=", b"<x/>", s3),
        ("GET", "/bucket/k", presigned, b"", {}),
        ("GET", "/", "", b"", {"host": "bucket.s3.amazonaws.com", **s3}),
        ("POST", "/", "", b"Action=CreateRole&Version=2010-05-08", {"content_type": form, **signed("iam")}),
        ("POST", "/", "", b"Action=AssumeRoleWithWebIdentity&Version=2011-06-15", {"content_type": form}),
        ("GET", "/", "Action=GetCallerIdentity", b"", signed("sts")),
    ]
    expected = [
        ("states:CreateStateMachine", "AKID1"),
        ("secretsmanager:DescribeSecret", "anonymous"),
        ("events:PutRule", "anonymous"),
        ("batch:RegisterJobDefinition", "AKID1"),
        ("batch:DescribeJobQueues", "anonymous"),
        ("batch:ListTagsForResource", "AKID1"),
        ("batch:TagResource", "AKID1"),
        ("batch:UntagResource", "AKID1"),
        ("s3:CreateBucket", "AKID1"),
        ("s3:PutObject", "AKID1"),
        ("s3:CopyObject", "AKID1"),
        ("s3:GetObject", "AKID1"),
        ("s3:HeadObject", "AKID1"),
        ("s3:DeleteObject", "AKID1"),
        ("s3:ListObjectsV2", "AKID1"),
        ("s3:PutBucketTagging", "AKID1"),
        ("s3:GetObject", "AKID2"),
        ("s3:ListObjects", "AKID1"),
        ("iam:CreateRole", "AKID1"),
        ("sts:AssumeRoleWithWebIdentity", "anonymous"),
        ("sts:GetCallerIdentity", "AKID1"),
    ]
    for (method, path, query, body, headers), want in zip(cases, expected, strict=True):
        got, environ = classify(method, path, query, body, **headers)
        assert got == want, (method, path, query, headers)
        # The body stays readable for moto after the form was parsed.
        assert environ["wsgi.input"].read() == body
    for path in ("/moto-api/reset", "/moto-api/", "/flowline-test/requests"):
        assert classify("POST", path)[0] is None


def requests_of(emu: Emulator, key: str) -> dict:
    return emu.get("/flowline-test/requests")["byAccessKey"].get(key, {})


def test_request_counter_counts_operations_per_access_key(emu):
    key = uid("AKIDCOUNT")
    sfn, batch, s3 = emu.client("stepfunctions", key), emu.client("batch", key), emu.client("s3", key)
    iam, sts, secrets = emu.client("iam", key), emu.client("sts", key), emu.client("secretsmanager", key)
    status, _ = emu.post("/flowline-test/requests/reset")
    assert status == 200

    arn = sfn.create_state_machine(
        name=uid("sm"), definition=json.dumps(PASS_MACHINE), roleArn=f"arn:aws:iam::{ACCOUNT}:role/sfn"
    )["stateMachineArn"]
    sfn.describe_state_machine(stateMachineArn=arn)
    sfn.describe_state_machine(stateMachineArn=arn)
    job_def = container_def(batch)
    batch.describe_job_definitions(jobDefinitions=[job_def])
    batch.tag_resource(resourceArn=job_def, tags={"a": "b"})
    batch.list_tags_for_resource(resourceArn=job_def)
    batch.untag_resource(resourceArn=job_def, tagKeys=["a"])
    bucket = uid("bucket")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="a/b.json", Body=b"{}")
    s3.head_object(Bucket=bucket, Key="a/b.json")
    s3.get_object(Bucket=bucket, Key="a/b.json")["Body"].read()
    s3.list_objects_v2(Bucket=bucket, Prefix="a/")
    s3.delete_object(Bucket=bucket, Key="a/b.json")
    iam.create_role(RoleName=uid("role"), AssumeRolePolicyDocument="{}")
    sts.get_caller_identity()
    secrets.create_secret(Name=uid("counted"), SecretString="x")
    with pytest.raises(secrets.exceptions.ResourceNotFoundException):
        secrets.describe_secret(SecretId=uid("missing"))
    # The emulator's own endpoints are not AWS calls.
    emu.get("/moto-api/config")
    emu.get("/flowline-test/requests")

    snapshot = emu.get("/flowline-test/requests")
    assert snapshot["byAccessKey"][key] == {
        "batch:DescribeJobDefinitions": 1,
        "batch:ListTagsForResource": 1,
        "batch:RegisterJobDefinition": 1,
        "batch:TagResource": 1,
        "batch:UntagResource": 1,
        "iam:CreateRole": 1,
        "s3:CreateBucket": 1,
        "s3:DeleteObject": 1,
        "s3:GetObject": 1,
        "s3:HeadObject": 1,
        "s3:ListObjectsV2": 1,
        "s3:PutObject": 1,
        "secretsmanager:CreateSecret": 1,
        "secretsmanager:DescribeSecret": 1,
        "states:CreateStateMachine": 1,
        "states:DescribeStateMachine": 2,
        "sts:GetCallerIdentity": 1,
    }
    for operation, count in snapshot["byAccessKey"][key].items():
        assert snapshot["operations"][operation] >= count
    assert snapshot["total"] == sum(snapshot["operations"].values())
    assert snapshot["total"] == sum(sum(ops.values()) for ops in snapshot["byAccessKey"].values())

    # A pass that only reads shows up as reads only: no write operation was counted.
    emu.post("/flowline-test/requests/reset")
    sfn.describe_state_machine(stateMachineArn=arn)
    sfn.list_tags_for_resource(resourceArn=arn)
    batch.describe_job_definitions(jobDefinitionName=job_def.rsplit("/", 1)[1].split(":")[0], status="ACTIVE")
    assert requests_of(emu, key) == {
        "batch:DescribeJobDefinitions": 1,
        "states:DescribeStateMachine": 1,
        "states:ListTagsForResource": 1,
    }

    status, cleared = emu.post("/flowline-test/requests/reset")
    assert status == 200 and key not in cleared["byAccessKey"]
    assert requests_of(emu, key) == {}


def test_request_counter_is_exact_under_concurrency(emu):
    key = uid("AKIDCONC")
    emu.post("/flowline-test/requests/reset")
    errors: list[BaseException] = []

    def worker():
        try:
            client = emu.client("stepfunctions", key)
            for _ in range(25):
                client.list_state_machines(maxResults=1)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert requests_of(emu, key) == {"states:ListStateMachines": 200}


def test_request_counter_sees_the_interpreters_own_calls(emu):
    setup = batch_env(emu)
    sfn = emu.client("stepfunctions")
    machine = {
        "StartAt": "Run",
        "States": {"Run": {**batch_task(setup["queue"], container_def(setup["batch"])), "End": True}},
    }
    arn = sfn.start_execution(stateMachineArn=state_machine(emu, machine))["executionArn"]
    assert wait_execution(sfn, arn)["status"] == "SUCCEEDED"
    # Step Functions calls Batch over HTTP with its own credentials, and those calls count too.
    assert requests_of(emu, "ak").get("batch:SubmitJob", 0) >= 1


# --------------------------------------------------------------------------------------------
# Patch 9: state machine versions, CreateStateMachine idempotency
# --------------------------------------------------------------------------------------------


def pass_result(value) -> str:
    state = {"Type": "Pass", "Result": {"v": value}, "End": True}
    return json.dumps({"StartAt": "P", "States": {"P": state}})


def test_state_machine_versions_are_frozen_listed_and_runnable(emu):
    sfn = emu.client("stepfunctions")
    role, other_role = f"arn:aws:iam::{ACCOUNT}:role/sfn", f"arn:aws:iam::{ACCOUNT}:role/other"
    created = sfn.create_state_machine(name=uid("sm"), definition=pass_result(1), roleArn=role, publish=True)
    arn = created["stateMachineArn"]
    assert created["stateMachineVersionArn"] == f"{arn}:1"

    updated = sfn.update_state_machine(stateMachineArn=arn, definition=pass_result(2), publish=True)
    assert updated["stateMachineVersionArn"] == f"{arn}:2"
    assert updated["revisionId"]
    role_only = sfn.update_state_machine(stateMachineArn=arn, roleArn=other_role, publish=True)
    assert role_only["stateMachineVersionArn"] == f"{arn}:3"
    assert role_only["revisionId"] != updated["revisionId"]
    # Publishing a revision that already has a version adds no version.
    again = sfn.update_state_machine(
        stateMachineArn=arn, definition=pass_result(2), roleArn=other_role, publish=True
    )
    assert again["stateMachineVersionArn"] == f"{arn}:3"
    assert again["revisionId"] == role_only["revisionId"]

    latest = sfn.describe_state_machine(stateMachineArn=arn)
    assert latest["stateMachineArn"] == arn
    assert json.loads(latest["definition"]) == json.loads(pass_result(2))
    assert latest["roleArn"] == other_role
    assert latest["revisionId"] == role_only["revisionId"]
    first = sfn.describe_state_machine(stateMachineArn=f"{arn}:1")
    assert first["stateMachineArn"] == f"{arn}:1"
    assert json.loads(first["definition"]) == json.loads(pass_result(1))
    assert first["roleArn"] == role
    second = sfn.describe_state_machine(stateMachineArn=f"{arn}:2")
    assert json.loads(second["definition"]) == json.loads(pass_result(2)) and second["roleArn"] == role
    assert second["revisionId"] == updated["revisionId"]

    versions = sfn.list_state_machine_versions(stateMachineArn=arn)["stateMachineVersions"]
    assert [v["stateMachineVersionArn"] for v in versions] == [f"{arn}:3", f"{arn}:2", f"{arn}:1"]
    paged, token = [], None
    while True:
        kwargs = {"nextToken": token} if token else {}
        page = sfn.list_state_machine_versions(stateMachineArn=arn, maxResults=2, **kwargs)
        paged += [v["stateMachineVersionArn"] for v in page["stateMachineVersions"]]
        token = page.get("nextToken")
        if not token:
            break
    assert paged == [f"{arn}:3", f"{arn}:2", f"{arn}:1"]

    on_v1 = sfn.start_execution(stateMachineArn=f"{arn}:1", input="{}")["executionArn"]
    on_latest = sfn.start_execution(stateMachineArn=arn, input="{}")["executionArn"]
    execution_prefix = arn.replace(":stateMachine:", ":execution:")
    assert on_v1.rsplit(":", 1)[0] == on_latest.rsplit(":", 1)[0] == execution_prefix
    v1_run, latest_run = wait_execution(sfn, on_v1), wait_execution(sfn, on_latest)
    assert json.loads(v1_run["output"]) == {"v": 1}
    assert v1_run["stateMachineArn"] == arn
    assert v1_run["stateMachineVersionArn"] == f"{arn}:1"
    assert json.loads(latest_run["output"]) == {"v": 2}
    assert "stateMachineVersionArn" not in latest_run

    listed = {e["executionArn"]: e for e in sfn.list_executions(stateMachineArn=arn)["executions"]}
    assert set(listed) == {on_v1, on_latest}
    assert listed[on_v1]["stateMachineVersionArn"] == f"{arn}:1"
    only_v1 = sfn.list_executions(stateMachineArn=f"{arn}:1")["executions"]
    assert [e["executionArn"] for e in only_v1] == [on_v1]
    assert only_v1[0]["stateMachineArn"] == arn


def test_create_state_machine_is_idempotent_only_for_the_same_machine(emu):
    sfn = emu.client("stepfunctions")
    name, role = uid("sm"), f"arn:aws:iam::{ACCOUNT}:role/sfn"
    first = sfn.create_state_machine(name=name, definition=pass_result(1), roleArn=role, publish=True)
    same = sfn.create_state_machine(name=name, definition=pass_result(1), roleArn=role, publish=True)
    assert same["stateMachineArn"] == first["stateMachineArn"]
    assert same["stateMachineVersionArn"] == first["stateMachineVersionArn"]
    # A different role alone is ignored, and not applied.
    other_role = sfn.create_state_machine(
        name=name, definition=pass_result(1), roleArn=f"arn:aws:iam::{ACCOUNT}:role/other", publish=True
    )
    assert other_role["stateMachineArn"] == first["stateMachineArn"]
    assert sfn.describe_state_machine(stateMachineArn=first["stateMachineArn"])["roleArn"] == role
    for kwargs in ({"definition": pass_result(2), "publish": True}, {"definition": pass_result(1)}):
        with pytest.raises(sfn.exceptions.StateMachineAlreadyExists):
            sfn.create_state_machine(name=name, roleArn=role, **kwargs)
    versions = sfn.list_state_machine_versions(stateMachineArn=first["stateMachineArn"])
    versions = versions["stateMachineVersions"]
    assert [v["stateMachineVersionArn"] for v in versions] == [first["stateMachineVersionArn"]]
    # Without publish, the answer names no version, even once the machine has one.
    plain = uid("sm")
    unpublished = sfn.create_state_machine(name=plain, definition=pass_result(1), roleArn=role)
    assert "stateMachineVersionArn" not in unpublished
    sfn.update_state_machine(
        stateMachineArn=unpublished["stateMachineArn"],
        roleArn=f"arn:aws:iam::{ACCOUNT}:role/other",
        publish=True,
    )
    repeated = sfn.create_state_machine(name=plain, definition=pass_result(1), roleArn=role)
    assert repeated["stateMachineArn"] == unpublished["stateMachineArn"]
    assert "stateMachineVersionArn" not in repeated


def test_state_machine_tags_and_delete_take_versions_and_tags_along(emu):
    sfn = emu.client("stepfunctions")
    name, role = uid("sm"), f"arn:aws:iam::{ACCOUNT}:role/sfn"
    arn = sfn.create_state_machine(
        name=name,
        definition=pass_result(1),
        roleArn=role,
        publish=True,
        tags=[{"key": "owner", "value": "a"}],
    )["stateMachineArn"]
    sfn.tag_resource(resourceArn=arn, tags=[{"key": "flow", "value": "f"}, {"key": "owner", "value": "b"}])
    sfn.untag_resource(resourceArn=arn, tagKeys=["flow"])
    assert sfn.list_tags_for_resource(resourceArn=arn)["tags"] == [{"key": "owner", "value": "b"}]

    sfn.delete_state_machine(stateMachineArn=arn)
    for target in (arn, f"{arn}:1"):
        with pytest.raises(sfn.exceptions.StateMachineDoesNotExist):
            sfn.describe_state_machine(stateMachineArn=target)
    with pytest.raises(sfn.exceptions.StateMachineDoesNotExist):
        sfn.list_state_machine_versions(stateMachineArn=arn)

    again = sfn.create_state_machine(name=name, definition=pass_result(2), roleArn=role, publish=True)
    assert again["stateMachineVersionArn"] == f"{arn}:1"
    assert sfn.list_tags_for_resource(resourceArn=arn)["tags"] == []


# --------------------------------------------------------------------------------------------
# Secrets Manager and Batch lookups as Flowline makes them (plain moto)
# --------------------------------------------------------------------------------------------


def test_secrets_are_found_by_name_with_their_full_arn(emu):
    secrets = emu.client("secretsmanager")
    name = uid("flowline/db")
    created = secrets.create_secret(Name=name, SecretString='{"host": "h", "port": 5432}')
    described = secrets.describe_secret(SecretId=name)
    # The ARN ends in the random 6-character suffix Secrets Manager appends to the name.
    expected = rf"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{re.escape(name)}-[A-Za-z0-9]{{6}}"
    assert re.fullmatch(expected, described["ARN"]), described["ARN"]
    assert described["ARN"] == created["ARN"] and described["Name"] == name
    assert secrets.describe_secret(SecretId=described["ARN"])["Name"] == name
    for secret_id in (name, described["ARN"]):
        value = secrets.get_secret_value(SecretId=secret_id)["SecretString"]
        assert json.loads(value) == {"host": "h", "port": 5432}
    missing = uid("flowline/missing")
    with pytest.raises(secrets.exceptions.ResourceNotFoundException):
        secrets.describe_secret(SecretId=missing)
    with pytest.raises(secrets.exceptions.ResourceNotFoundException):
        secrets.get_secret_value(SecretId=missing)


def test_job_definition_and_queue_lookups(emu):
    setup = batch_env(emu)
    batch = setup["batch"]
    first = container_def(batch)
    name = first.rsplit("/", 1)[1].split(":")[0]
    second = batch.register_job_definition(
        jobDefinitionName=name,
        type="container",
        containerProperties={"image": "i", "command": ["true"], "vcpus": 1, "memory": 256},
    )["jobDefinitionArn"]
    assert second == first[: -len(":1")] + ":2"
    other = container_def(batch)

    batch.deregister_job_definition(jobDefinition=first)
    active = batch.describe_job_definitions(jobDefinitionName=name, status="ACTIVE")["jobDefinitions"]
    assert [(d["jobDefinitionArn"], d["status"]) for d in active] == [(second, "ACTIVE")]
    every = batch.describe_job_definitions(jobDefinitionName=name)["jobDefinitions"]
    every = sorted((d["jobDefinitionArn"], d["status"]) for d in every)
    assert every == [(first, "INACTIVE"), (second, "ACTIVE")]
    # A revision that never existed is left out, not an error.
    wanted = [first, other, f"{other[:-2]}:9"]
    by_arn = batch.describe_job_definitions(jobDefinitions=wanted)["jobDefinitions"]
    by_arn = sorted((d["jobDefinitionArn"], d["status"]) for d in by_arn)
    assert by_arn == sorted([(first, "INACTIVE"), (other, "ACTIVE")])

    missing = [uid("queue"), f"arn:aws:batch:{REGION}:{ACCOUNT}:job-queue/{uid('queue')}"]
    assert batch.describe_job_queues(jobQueues=missing)["jobQueues"] == []
    found = batch.describe_job_queues(jobQueues=[setup["queue"], *missing])["jobQueues"]
    assert [q["jobQueueArn"] for q in found] == [setup["queue"]]


# --------------------------------------------------------------------------------------------
# Patch 8: --exec-jobs
# --------------------------------------------------------------------------------------------


def test_exec_job_exit_code_fails_job(exec_emu):
    setup = batch_env(exec_emu)
    batch = setup["batch"]
    job_def = container_def(batch, command=["python3", "-c", "import sys; print('bye'); sys.exit(3)"])
    job_id = batch.submit_job(jobName="exit3", jobQueue=setup["queue"], jobDefinition=job_def)["jobId"]
    job = wait_job(batch, job_id)
    assert job["status"] == "FAILED"
    assert job["statusReason"] == "Essential container in task exited"
    assert job["container"]["exitCode"] == 3


def test_exec_job_runs_command_with_environment_and_logs(exec_emu, tmp_path):
    setup = batch_env(exec_emu)
    batch = setup["batch"]
    marker = tmp_path / "marker.txt"
    script = (
        "import os; "
        "open(os.environ['MARKER'], 'w').write(os.environ['AWS_BATCH_JOB_ID'] + ' ' + os.environ['AWS_BATCH_JOB_ATTEMPT'] + ' ' + os.environ['STEP']); "
        "print('hello from the job')"
    )
    job_def = container_def(batch, env={"STEP": "from-def"}, command=["python3", "-c", script])
    job_id = batch.submit_job(
        jobName="marker",
        jobQueue=setup["queue"],
        jobDefinition=job_def,
        containerOverrides={
            "environment": [{"name": "MARKER", "value": str(marker)}, {"name": "STEP", "value": "train"}]
        },
    )["jobId"]
    job = wait_job(batch, job_id)
    assert job["status"] == "SUCCEEDED", job
    assert job["container"]["exitCode"] == 0
    assert marker.read_text() == f"{job_id} 1 train"
    stream = job["container"]["logStreamName"]
    assert "hello from the job" in (exec_emu.log_dir / f"{stream}.log").read_text()
    logs = exec_emu.client("logs").get_log_events(logGroupName="/aws/batch/job", logStreamName=stream)
    assert any("hello from the job" in e["message"] for e in logs["events"])


def test_exec_multinode_job_runs_every_node(exec_emu, tmp_path):
    setup = batch_env(exec_emu)
    batch = setup["batch"]
    script = (
        "import os; e = os.environ; "
        "open(os.path.join(e['OUT'], 'node-' + e['AWS_BATCH_JOB_NODE_INDEX']), 'w')"
        ".write(e['AWS_BATCH_JOB_NUM_NODES'] + ' ' + e['AWS_BATCH_JOB_MAIN_NODE_INDEX'] + ' ' + e['ROLE'])"
    )
    container = {
        "image": IMAGE,
        "command": ["python3", "-c", script],
        "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "512"}],
        "environment": [{"name": "OUT", "value": str(tmp_path)}],
    }
    job_def = batch.register_job_definition(
        jobDefinitionName=uid("mnp"),
        type="multinode",
        nodeProperties={
            "numNodes": 2,
            "mainNode": 0,
            "nodeRangeProperties": [
                {
                    "targetNodes": "0",
                    "container": {
                        **container,
                        "environment": container["environment"] + [{"name": "ROLE", "value": "main"}],
                    },
                },
                {
                    "targetNodes": "1:",
                    "container": {
                        **container,
                        "environment": container["environment"] + [{"name": "ROLE", "value": "worker"}],
                    },
                },
            ],
        },
    )["jobDefinitionArn"]
    job_id = batch.submit_job(
        jobName="mnp",
        jobQueue=setup["queue"],
        jobDefinition=job_def,
        nodeOverrides={"numNodes": 3},
    )["jobId"]
    job = wait_job(batch, job_id)
    assert job["status"] == "SUCCEEDED", job
    assert job["nodeProperties"]["numNodes"] == 3
    assert (tmp_path / "node-0").read_text() == "3 0 main"
    assert (tmp_path / "node-1").read_text() == "3 0 worker"
    assert (tmp_path / "node-2").read_text() == "3 0 worker"


def test_exec_job_retries_per_retry_strategy(exec_emu, tmp_path):
    setup = batch_env(exec_emu)
    batch = setup["batch"]
    out = tmp_path / "attempts"
    script = "import os, sys; open(os.environ['OUT'], 'a').write(os.environ['AWS_BATCH_JOB_ATTEMPT'] + '\\n'); sys.exit(4)"
    job_def = container_def(batch, env={"OUT": str(out)}, command=["python3", "-c", script])
    job_id = batch.submit_job(
        jobName="retry", jobQueue=setup["queue"], jobDefinition=job_def, retryStrategy={"attempts": 2}
    )["jobId"]
    job = wait_job(batch, job_id)
    assert job["status"] == "FAILED"
    assert out.read_text().split() == ["1", "2"]
    assert len(job["attempts"]) == 2
    assert all(a["container"]["exitCode"] == 4 for a in job["attempts"])


def test_a_refired_schedule_event_starts_no_second_named_execution_and_undeliverable_events_are_dead_lettered(emu):
    """A cron rule → a trigger machine naming the execution after the event id: firing the same
    event again (at-least-once delivery) starts nothing more. A delivery that fails goes to the
    target's dead-letter queue, only when the queue's policy lets that rule send."""
    events, sfn, sqs = emu.client("events"), emu.client("stepfunctions"), emu.client("sqs")
    target = state_machine(emu, PASS_MACHINE)
    trigger = state_machine(
        emu,
        {
            "StartAt": "Start",
            "States": {
                "Start": {
                    "Type": "Task",
                    "Resource": "arn:aws:states:::states:startExecution",
                    "Parameters": {"StateMachineArn": target, "Name.$": "States.Format('schedule_{}', $.eventId)", "Input": {}},
                    "Retry": [
                        {"ErrorEquals": ["StepFunctions.ExecutionAlreadyExistsException"], "MaxAttempts": 0},
                        {"ErrorEquals": ["States.ALL"], "IntervalSeconds": 1, "MaxAttempts": 2, "BackoffRate": 2.0, "MaxDelaySeconds": 5, "JitterStrategy": "FULL"},
                    ],
                    "Catch": [{"ErrorEquals": ["StepFunctions.ExecutionAlreadyExistsException"], "Next": "Dup"}],
                    "End": True,
                },
                "Dup": {"Type": "Succeed"},
            },
        },
    )
    rule = uid("cron")
    rule_arn = events.put_rule(Name=rule, ScheduleExpression="rate(1 hour)")["RuleArn"]
    queue_url = sqs.create_queue(QueueName=rule)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_targets(
        Rule=rule,
        Targets=[
            {
                "Id": "t",
                "Arn": trigger,
                "InputTransformer": {"InputPathsMap": {"eventId": "$.id"}, "InputTemplate": '{"eventId": <eventId>}'},
                "DeadLetterConfig": {"Arn": queue_arn},
                "RetryPolicy": {"MaximumRetryAttempts": 24, "MaximumEventAgeInSeconds": 3600},
            }
        ],
    )
    listed = events.list_targets_by_rule(Rule=rule)["Targets"][0]
    assert listed["DeadLetterConfig"] == {"Arn": queue_arn}
    assert listed["RetryPolicy"] == {"MaximumRetryAttempts": 24, "MaximumEventAgeInSeconds": 3600}

    status, first = emu.post("/flowline-test/fire-rule", {"name": rule})
    assert status == 200, first
    status, again = emu.post("/flowline-test/fire-rule", {"name": rule, "eventId": first["eventId"]})
    assert status == 200 and again["eventId"] == first["eventId"]
    wait_for(lambda: len(executions(sfn, trigger)) == 2 and all(e["status"] != "RUNNING" for e in executions(sfn, trigger)))
    started = executions(sfn, target)
    assert [e["name"] for e in started] == [f"schedule_{first['eventId']}"]
    assert {e["status"] for e in executions(sfn, trigger)} == {"SUCCEEDED"}

    # Undeliverable (the trigger machine is gone): without a policy letting the rule send,
    # the event is lost; with one, it is dead-lettered with the error.
    sfn.delete_state_machine(stateMachineArn=trigger)
    emu.post("/flowline-test/fire-rule", {"name": rule})
    assert "Messages" not in sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=0)
    policy = {
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
            }
        ]
    }
    sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"Policy": json.dumps(policy)})
    status, lost = emu.post("/flowline-test/fire-rule", {"name": rule})
    assert status == 200 and lost["executionArns"] == []
    messages = sqs.receive_message(QueueUrl=queue_url, MessageAttributeNames=["All"], WaitTimeSeconds=0)["Messages"]
    assert len(messages) == 1
    assert json.loads(messages[0]["Body"])["id"] == lost["eventId"]
    attributes = messages[0]["MessageAttributes"]
    assert attributes["RULE_ARN"]["StringValue"] == rule_arn
    assert attributes["TARGET_ARN"]["StringValue"] == trigger
    assert attributes["ERROR_CODE"]["StringValue"]
