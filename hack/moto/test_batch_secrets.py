"""Batch secrets in the emulator: resolved when a container starts, from Secrets Manager (whole
secret, JSON key, version stage or id) and SSM, only with an execution role, and failing the job
the way AWS does when they cannot be read. A secret's value never reaches the launcher's log.

Run with the emulator's venv:  $(hack/moto/install.sh | tail -n1) -m pytest hack/moto -q
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_launcher import (  # noqa: E402
    ACCOUNT,
    IMAGE,
    REGION,
    batch_env,
    emu,  # noqa: F401 - fixture
    exec_emu,  # noqa: F401 - fixture
    uid,
    wait_job,
)

EXECUTION_ROLE = f"arn:aws:iam::{ACCOUNT}:role/flowline-execution"
DUMP_ENV = "import json, os; json.dump(dict(os.environ), open(os.environ['OUT'], 'w'))"
SECRETS_NEED_ROLE = (
    "ClientException: When you are specifying container secrets, "
    "you must also specify a value for 'executionRoleArn'."
)


def register(batch, secrets: list[dict], command: list[str] | None = None, execution_role: str | None = EXECUTION_ROLE, **container) -> str:
    properties = {
        "image": IMAGE,
        "command": command or ["python3", "-c", DUMP_ENV],
        "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "512"}],
        "secrets": secrets,
        **container,
    }
    if execution_role:
        properties["executionRoleArn"] = execution_role
    return batch.register_job_definition(
        jobDefinitionName=uid("secrets"), type="container", containerProperties=properties
    )["jobDefinitionArn"]


def run(setup: dict, job_def: str, out: Path | None = None) -> dict:
    overrides = {"environment": [{"name": "OUT", "value": str(out)}]} if out else {}
    job_id = setup["batch"].submit_job(
        jobName="secrets", jobQueue=setup["queue"], jobDefinition=job_def, containerOverrides=overrides
    )["jobId"]
    return wait_job(setup["batch"], job_id)


@pytest.fixture(scope="module")
def stored(exec_emu):  # noqa: F811
    """A JSON secret with two versions, a plain one, and SSM parameters."""
    sm, ssm = exec_emu.client("secretsmanager"), exec_emu.client("ssm")
    name = uid("flowline/db")
    first = sm.create_secret(Name=name, SecretString=json.dumps({"user": "u1", "password": "p1", "port": 5432}))
    second = sm.put_secret_value(SecretId=name, SecretString=json.dumps({"user": "u2", "password": "p2"}))
    plain = sm.create_secret(Name=uid("flowline/token"), SecretString="xoxb-plain-token")
    parameter = "/" + uid("flowline/param")
    ssm.put_parameter(Name=parameter, Value="from-ssm", Type="String")
    secure = "/" + uid("flowline/secure")
    ssm.put_parameter(Name=secure, Value="secure-value", Type="SecureString")
    return {
        "json": first["ARN"],
        "v1": first["VersionId"],
        "v2": second["VersionId"],
        "plain": plain["ARN"],
        "parameter": parameter,
        "secure": secure,
    }


def test_secrets_reach_the_task_environment(exec_emu, stored, tmp_path):  # noqa: F811
    setup = batch_env(exec_emu)
    arn = stored["json"]
    job_def = register(
        setup["batch"],
        [
            {"name": "WHOLE", "valueFrom": arn},
            {"name": "PLAIN", "valueFrom": stored["plain"]},
            {"name": "USER", "valueFrom": f"{arn}:user::"},
            {"name": "PASSWORD_CURRENT", "valueFrom": f"{arn}:password:AWSCURRENT:"},
            {"name": "USER_PREVIOUS", "valueFrom": f"{arn}:user:AWSPREVIOUS:"},
            {"name": "USER_V1", "valueFrom": f"{arn}:user::{stored['v1']}"},
            {"name": "PORT_V1", "valueFrom": f"{arn}:port::{stored['v1']}"},
            {"name": "PARAM", "valueFrom": stored["parameter"]},
            {
                "name": "PARAM_ARN",
                "valueFrom": f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{stored['parameter']}",
            },
            {"name": "SECURE", "valueFrom": stored["secure"]},
        ],
    )
    out = tmp_path / "env.json"
    job = run(setup, job_def, out)
    assert job["status"] == "SUCCEEDED", job.get("statusReason")
    env = json.loads(out.read_text())
    assert json.loads(env["WHOLE"]) == {"user": "u2", "password": "p2"}
    assert env["PLAIN"] == "xoxb-plain-token"
    assert env["USER"] == "u2"
    assert env["PASSWORD_CURRENT"] == "p2"
    assert env["USER_PREVIOUS"] == "u1"
    assert env["USER_V1"] == "u1"
    assert env["PORT_V1"] == "5432"
    assert env["PARAM"] == env["PARAM_ARN"] == "from-ssm"
    assert env["SECURE"] == "secure-value"

    launcher_log = (exec_emu.log_dir.parent / "launcher.log").read_text()
    for value in ("xoxb-plain-token", "p1", "p2", "from-ssm", "secure-value"):
        assert value not in launcher_log, f"a secret value reached the launcher's log: {value}"


def test_multinode_secrets_are_per_node(exec_emu, stored, tmp_path):  # noqa: F811
    setup = batch_env(exec_emu)
    script = (
        "import os; e = os.environ; "
        "open(os.path.join(e['OUT'], 'node-' + e['AWS_BATCH_JOB_NODE_INDEX']), 'w').write(e.get('SECRET', '-'))"
    )

    def node(target: str, secrets: list[dict]) -> dict:
        return {
            "targetNodes": target,
            "container": {
                "image": IMAGE,
                "command": ["python3", "-c", script],
                "executionRoleArn": EXECUTION_ROLE,
                "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "512"}],
                "environment": [{"name": "OUT", "value": str(tmp_path)}],
                "secrets": secrets,
            },
        }

    job_def = setup["batch"].register_job_definition(
        jobDefinitionName=uid("mnp-secrets"),
        type="multinode",
        nodeProperties={
            "numNodes": 2,
            "mainNode": 0,
            "nodeRangeProperties": [
                node("0", [{"name": "SECRET", "valueFrom": stored["plain"]}]),
                node("1", [{"name": "SECRET", "valueFrom": f"{stored['json']}:user::"}]),
            ],
        },
    )["jobDefinitionArn"]
    job = run(setup, job_def)
    assert job["status"] == "SUCCEEDED", job.get("statusReason")
    assert (tmp_path / "node-0").read_text() == "xoxb-plain-token"
    assert (tmp_path / "node-1").read_text() == "u2"


@pytest.mark.parametrize("mode", ["held", "exec"])
def test_secrets_without_execution_role_fail_the_job(mode, emu, exec_emu, stored, tmp_path):  # noqa: F811
    emulator = exec_emu if mode == "exec" else emu
    setup = batch_env(emulator)
    secret = emulator.client("secretsmanager").create_secret(Name=uid("flowline/x"), SecretString="v")["ARN"]
    out = tmp_path / "ran"
    job_def = register(
        setup["batch"],
        [{"name": "TOKEN", "valueFrom": secret}],
        command=["python3", "-c", "import os; open(os.environ['OUT'], 'w').write('ran')"],
        execution_role=None,
    )
    job = run(setup, job_def, out)
    assert job["status"] == "FAILED"
    assert job["statusReason"] == SECRETS_NEED_ROLE
    assert job["attempts"][-1]["container"]["reason"] == SECRETS_NEED_ROLE
    assert "startedAt" not in job
    assert not out.exists(), "the job's command ran although its container could not start"


def test_unreadable_secrets_fail_the_job_naming_them(exec_emu, stored, tmp_path):  # noqa: F811
    setup = batch_env(exec_emu)
    missing = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{uid('no/such')}-AbCdEf"
    binary = exec_emu.client("secretsmanager").create_secret(Name=uid("flowline/bin"), SecretBinary=b"\x00\x01")["ARN"]
    cases = {
        missing: missing,
        binary: f"secret {binary} has no SecretString",
        f"{stored['json']}:no_such_key::": "did not contain json key no_such_key",
        f"{stored['json']}:user:NO_SUCH_STAGE:": stored["json"],
        "/no/such/parameter": "invalid parameters: /no/such/parameter",
    }
    for value_from, named in cases.items():
        out = tmp_path / "ran"
        job = run(setup, register(setup["batch"], [{"name": "S", "valueFrom": value_from}]), out)
        assert job["status"] == "FAILED", value_from
        reason = job["statusReason"]
        assert reason.startswith(
            "ResourceInitializationError: unable to pull secrets or registry auth: execution resource retrieval failed: "
        ), reason
        assert named in reason, reason
        assert job["attempts"][-1]["container"]["reason"] == reason
        assert not out.exists()


def test_secret_failure_is_retried_per_retry_strategy(exec_emu, tmp_path):  # noqa: F811
    """A container that could not start is an attempt like any other: Batch retries it."""
    setup = batch_env(exec_emu)
    missing = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{uid('no/such')}-AbCdEf"
    job_def = register(setup["batch"], [{"name": "S", "valueFrom": missing}])
    job_id = setup["batch"].submit_job(
        jobName="retry-secret", jobQueue=setup["queue"], jobDefinition=job_def, retryStrategy={"attempts": 2}
    )["jobId"]
    job = wait_job(setup["batch"], job_id)
    assert job["status"] == "FAILED"
    assert len(job["attempts"]) == 2
    assert all(missing in a["statusReason"] for a in job["attempts"])
