"""Creates, in the AWS emulator, what a platform team provides before Flowline runs: the IAM
roles Flowline is configured with, an S3 bucket for artifacts, and a Batch compute environment
with the job queue `flowline`. Idempotent: what exists is left as it is.

Usage: python seed.py ENDPOINT_URL
"""

import json
import sys

import boto3
from botocore.exceptions import ClientError

ACCOUNT = "123456789012"
ROLES = {
    "flowline-batch-service": "batch.amazonaws.com",
    "flowline-states": "states.amazonaws.com",
    "flowline-events": "events.amazonaws.com",
    "flowline-job": "ecs-tasks.amazonaws.com",
    "flowline-execution": "ecs-tasks.amazonaws.com",
}
BUCKET = "flowline"
QUEUE = "flowline"


def exists_already(error: ClientError) -> bool:
    code = error.response.get("Error", {}).get("Code", "")
    message = error.response.get("Error", {}).get("Message", "")
    return code in ("EntityAlreadyExists", "BucketAlreadyOwnedByYou") or "already exists" in message


def main(endpoint: str) -> None:
    session = boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    iam = session.client("iam", endpoint_url=endpoint)
    for role, service in ROLES.items():
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
            ],
        }
        try:
            iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(trust))
        except ClientError as error:
            if not exists_already(error):
                raise

    s3 = session.client("s3", endpoint_url=endpoint)
    try:
        s3.create_bucket(Bucket=BUCKET)
    except ClientError as error:
        if not exists_already(error):
            raise

    batch = session.client("batch", endpoint_url=endpoint)
    environments = batch.describe_compute_environments(computeEnvironments=[QUEUE])
    if not environments["computeEnvironments"]:
        batch.create_compute_environment(
            computeEnvironmentName=QUEUE,
            type="UNMANAGED",
            state="ENABLED",
            serviceRole=f"arn:aws:iam::{ACCOUNT}:role/flowline-batch-service",
        )
    queues = batch.describe_job_queues(jobQueues=[QUEUE])
    if not queues["jobQueues"]:
        batch.create_job_queue(
            jobQueueName=QUEUE,
            state="ENABLED",
            priority=1,
            computeEnvironmentOrder=[{"order": 1, "computeEnvironment": QUEUE}],
        )


if __name__ == "__main__":
    main(sys.argv[1])
