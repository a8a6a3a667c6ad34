"""What Batch refuses at SubmitJob (a job definition's platform against the queue's compute
environments), what fails a job at start (container overrides longer than ECS takes), and
multi-node node overrides reaching each node's process, submitted directly or by a Step
Functions ``batch:submitJob.sync`` task with ASL's PascalCase parameters.

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
    batch_env,
    batch_task,
    container_def,
    emu,  # noqa: F401 - fixture
    exec_emu,  # noqa: F401 - fixture
    state_machine,
    uid,
    wait_execution,
    wait_job,
)

EXECUTION_ROLE = f"arn:aws:iam::{ACCOUNT}:role/flowline-execution"


def fargate_queue(emulator, service_role: str) -> str:
    """A job queue whose only compute environment is managed Fargate capacity."""
    ec2, batch = emulator.client("ec2"), emulator.client("batch")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName=uid("sg"), Description="batch", VpcId=vpc)["GroupId"]
    ce = batch.create_compute_environment(
        computeEnvironmentName=uid("fargate"),
        type="MANAGED",
        state="ENABLED",
        serviceRole=service_role,
        computeResources={"type": "FARGATE", "maxvCpus": 16, "subnets": [subnet], "securityGroupIds": [group]},
    )["computeEnvironmentArn"]
    return batch.create_job_queue(
        jobQueueName=uid("fargate-queue"),
        state="ENABLED",
        priority=1,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": ce}],
    )["jobQueueArn"]


def fargate_def(batch) -> str:
    return batch.register_job_definition(
        jobDefinitionName=uid("fargate"),
        type="container",
        platformCapabilities=["FARGATE"],
        containerProperties={
            "image": IMAGE,
            "command": ["echo", "hi"],
            "executionRoleArn": EXECUTION_ROLE,
            "resourceRequirements": [{"type": "VCPU", "value": "0.25"}, {"type": "MEMORY", "value": "512"}],
        },
    )["jobDefinitionArn"]


def multinode_def(batch, command: list[str], environment: list[dict] | None = None) -> str:
    container = {
        "image": IMAGE,
        "command": command,
        "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "512"}],
        "environment": environment or [],
    }
    return batch.register_job_definition(
        jobDefinitionName=uid("mnp"),
        type="multinode",
        nodeProperties={
            "numNodes": 2,
            "mainNode": 0,
            "nodeRangeProperties": [{"targetNodes": "0:", "container": container}],
        },
    )["jobDefinitionArn"]


def test_platform_capabilities_must_match_the_queue(emu):  # noqa: F811
    setup = batch_env(emu)
    batch, ec2_queue = setup["batch"], setup["queue"]
    fargate = fargate_queue(emu, setup["role"])
    on_fargate, on_ec2 = fargate_def(batch), container_def(batch)

    refusals = {
        (on_fargate, ec2_queue): "requires platform capability FARGATE",
        (on_ec2, fargate): "requires platform capability EC2",
        (multinode_def(batch, ["true"]), fargate): "multi-node parallel jobs are not supported on Fargate",
    }
    for (job_def, queue), message in refusals.items():
        with pytest.raises(batch.exceptions.ClientException) as caught:
            batch.submit_job(jobName="refused", jobQueue=queue, jobDefinition=job_def)
        error = caught.value.response
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert message in error["Error"]["Message"] and job_def in error["Error"]["Message"], error["Error"]

    for job_def, queue in ((on_fargate, fargate), (on_ec2, ec2_queue)):
        job_id = batch.submit_job(jobName="fits", jobQueue=queue, jobDefinition=job_def)["jobId"]
        assert wait_job(batch, job_id)["status"] == "SUCCEEDED"


def test_container_overrides_longer_than_ecs_takes_fail_the_job(emu):  # noqa: F811
    """AWS accepts the submission; the job fails when Batch hands the overrides to ECS."""
    setup = batch_env(emu)
    batch, job_def = setup["batch"], container_def(setup["batch"])

    def overrides(size: int) -> dict:
        body = {"environment": [{"name": "BIG", "value": ""}]}
        body["environment"][0]["value"] = "x" * (size - len(json.dumps(body, separators=(",", ":"))))
        assert len(json.dumps(body, separators=(",", ":"))) == size
        return body

    at_limit = batch.submit_job(jobName="fits", jobQueue=setup["queue"], jobDefinition=job_def, containerOverrides=overrides(8192))
    assert wait_job(batch, at_limit["jobId"])["status"] == "SUCCEEDED"
    over = batch.submit_job(jobName="too-long", jobQueue=setup["queue"], jobDefinition=job_def, containerOverrides=overrides(8193))
    job = wait_job(batch, over["jobId"])
    assert job["status"] == "FAILED"
    assert job["statusReason"] == "Container Overrides length must be at most 8192"
    assert "startedAt" not in job


def node_script() -> str:
    return (
        "import os; e = os.environ; "
        "open(os.path.join(e['OUT'], 'node-' + e['AWS_BATCH_JOB_NODE_INDEX']), 'w')"
        ".write(e.get('ROLE', '-') + ' ' + e.get('SHARED', '-') + ' ' + e['AWS_BATCH_JOB_NUM_NODES'])"
    )


NODE_OVERRIDES = {
    "numNodes": 3,
    "nodePropertyOverrides": [
        {"targetNodes": "0:", "containerOverrides": {"environment": [{"name": "SHARED", "value": "all"}]}},
        {"targetNodes": "0", "containerOverrides": {"environment": [{"name": "ROLE", "value": "main"}]}},
        {"targetNodes": "1:2", "containerOverrides": {"environment": [{"name": "ROLE", "value": "worker"}]}},
    ],
}


def assert_nodes(out: Path) -> None:
    assert (out / "node-0").read_text() == "main all 3"
    assert (out / "node-1").read_text() == "worker all 3"
    assert (out / "node-2").read_text() == "worker all 3"


def test_node_overrides_reach_each_node(exec_emu, tmp_path):  # noqa: F811
    setup = batch_env(exec_emu)
    batch = setup["batch"]
    job_def = multinode_def(batch, ["python3", "-c", node_script()], [{"name": "OUT", "value": str(tmp_path)}])
    job_id = batch.submit_job(jobName="mnp", jobQueue=setup["queue"], jobDefinition=job_def, nodeOverrides=NODE_OVERRIDES)[
        "jobId"
    ]
    job = wait_job(batch, job_id, timeout=30)
    assert job["status"] == "SUCCEEDED", job.get("statusReason")
    assert_nodes(tmp_path)

    # A command override replaces the command of the nodes it targets only.
    marker = tmp_path / "command"
    commands = {
        "nodePropertyOverrides": [
            {
                "targetNodes": "1",
                "containerOverrides": {"command": ["python3", "-c", f"open({str(marker)!r}, 'w').write('overridden')"]},
            }
        ]
    }
    job_id = batch.submit_job(jobName="mnp-cmd", jobQueue=setup["queue"], jobDefinition=job_def, nodeOverrides=commands)[
        "jobId"
    ]
    assert wait_job(batch, job_id, timeout=30)["status"] == "SUCCEEDED"
    assert marker.read_text() == "overridden"


def test_node_overrides_in_pascal_case_from_step_functions_reach_each_node(exec_emu, tmp_path):  # noqa: F811
    setup = batch_env(exec_emu)
    job_def = multinode_def(setup["batch"], ["python3", "-c", node_script()], [{"name": "OUT", "value": str(tmp_path)}])
    pascal = {
        "NumNodes": 3,
        "NodePropertyOverrides": [
            {
                "TargetNodes": o["targetNodes"],
                "ContainerOverrides": {
                    "Environment": [{"Name": e["name"], "Value": e["value"]} for e in o["containerOverrides"]["environment"]]
                },
            }
            for o in NODE_OVERRIDES["nodePropertyOverrides"]
        ],
    }
    machine = {"StartAt": "Run", "States": {"Run": {**batch_task(setup["queue"], job_def, NodeOverrides=pascal), "End": True}}}
    sfn = exec_emu.client("stepfunctions")
    arn = sfn.start_execution(stateMachineArn=state_machine(exec_emu, machine))["executionArn"]
    done = wait_execution(sfn, arn, timeout=40)
    assert done["status"] == "SUCCEEDED", done
    assert_nodes(tmp_path)
