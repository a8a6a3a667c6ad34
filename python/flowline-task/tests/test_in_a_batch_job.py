"""A Python step in the emulator's `python` runtime (exec mode) imports the installed helper and
saves an artifact to S3 with what Batch gave it: the task contract's variables from the job's
environment and its job role's credentials."""

from __future__ import annotations

import json
from conftest import Emulator

from test_launcher import ACCOUNT, IMAGE, batch_env, uid, wait_job

STEP = """
import json, flowline_task as f
params = f.parameters()
f.save("result.json", {"epochs": params["epochs"] * 2, "module": f.__file__})
with f.S3() as s3:
    s3.put("raw.txt", "from the task")
"""


def test_a_python_step_uses_the_installed_helper(emu: Emulator) -> None:
    s3, kms = emu.client("s3"), emu.client("kms")
    bucket = uid("artifacts")
    s3.create_bucket(Bucket=bucket)
    key = kms.create_key()["KeyMetadata"]["Arn"]
    prefix = f"s3://{bucket}/team/flow/run-1/train/0/"
    setup = batch_env(emu)
    job_def = setup["batch"].register_job_definition(
        jobDefinitionName=uid("step"),
        type="container",
        containerProperties={
            "image": IMAGE,
            "command": ["python3", "-c", STEP],
            "jobRoleArn": f"arn:aws:iam::{ACCOUNT}:role/flowline-job",
            "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "512"}],
        },
    )["jobDefinitionArn"]
    env = {
        "FLOWLINE_ARTIFACT_URI": prefix,
        "FLOWLINE_PARAMETERS": json.dumps({"epochs": 5}),
        "FLOWLINE_S3_ENDPOINT": emu.endpoint,
        "FLOWLINE_S3_SSE": "aws:kms",
        "FLOWLINE_S3_KMS_KEY_ID": key,
    }
    job_id = setup["batch"].submit_job(
        jobName="train",
        jobQueue=setup["queue"],
        jobDefinition=job_def,
        containerOverrides={"environment": [{"name": k, "value": v} for k, v in env.items()]},
    )["jobId"]
    job = wait_job(setup["batch"], job_id, timeout=60)
    assert job["status"] == "SUCCEEDED", job.get("statusReason")

    base = "team/flow/run-1/train/0/"
    result = json.loads(s3.get_object(Bucket=bucket, Key=base + "result.json")["Body"].read())
    assert result["epochs"] == 10
    # Installed into the runtime's venv, not read from the checkout.
    assert "/python/flowline-task/src/" not in result["module"] and "site-packages" in result["module"]
    for name in ("result.json", "raw.txt"):
        head = s3.head_object(Bucket=bucket, Key=base + name)
        assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", key)
