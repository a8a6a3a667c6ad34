"""Sets up, with the administrator key of an emulator started with ``--enforce-iam``, what a
platform team provides before Flowline runs there: the bucket, a compute environment and job
queue, roles and users with exactly the policies given, and secrets. Used by tests/e2e/iam.rs.

Usage: python iam_setup.py ENDPOINT_URL < spec.json

spec: {"bucket": NAME, "queue": NAME,
       "roles": [{"name", "trust": DOCUMENT, "permissions": DOCUMENT}],
       "users": [{"name", "permissions": DOCUMENT}],
       "secrets": [{"name", "value"}]}

Prints {"roles": {name: arn}, "users": {name: {"accessKeyId", "secretAccessKey"}},
"secrets": {name: arn}} on stdout.
"""

import json
import sys

import boto3

ADMIN_ACCESS_KEY = "FLOWLINEADMINKEY0000"
ADMIN_SECRET_KEY = "flowline-admin-secret-key"
ACCOUNT = "123456789012"


def main(endpoint: str) -> None:
    spec = json.load(sys.stdin)
    session = boto3.Session(
        aws_access_key_id=ADMIN_ACCESS_KEY, aws_secret_access_key=ADMIN_SECRET_KEY, region_name="us-east-1"
    )
    iam = session.client("iam", endpoint_url=endpoint)
    s3 = session.client("s3", endpoint_url=endpoint)
    batch = session.client("batch", endpoint_url=endpoint)
    secrets = session.client("secretsmanager", endpoint_url=endpoint)

    s3.create_bucket(Bucket=spec["bucket"])
    service_role = iam.create_role(
        RoleName="flowline-batch-service",
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Principal": {"Service": "batch.amazonaws.com"}, "Action": "sts:AssumeRole"}],
            }
        ),
    )["Role"]["Arn"]
    queue = spec["queue"]
    batch.create_compute_environment(computeEnvironmentName=queue, type="UNMANAGED", state="ENABLED", serviceRole=service_role)
    batch.create_job_queue(
        jobQueueName=queue, state="ENABLED", priority=1, computeEnvironmentOrder=[{"order": 1, "computeEnvironment": queue}]
    )

    answer: dict = {"roles": {}, "users": {}, "secrets": {}}
    for role in spec.get("roles", []):
        arn = iam.create_role(RoleName=role["name"], AssumeRolePolicyDocument=json.dumps(role["trust"]))["Role"]["Arn"]
        iam.put_role_policy(RoleName=role["name"], PolicyName="flowline", PolicyDocument=json.dumps(role["permissions"]))
        answer["roles"][role["name"]] = arn
    for user in spec.get("users", []):
        iam.create_user(UserName=user["name"])
        iam.put_user_policy(UserName=user["name"], PolicyName="flowline", PolicyDocument=json.dumps(user["permissions"]))
        key = iam.create_access_key(UserName=user["name"])["AccessKey"]
        answer["users"][user["name"]] = {"accessKeyId": key["AccessKeyId"], "secretAccessKey": key["SecretAccessKey"]}
    for secret in spec.get("secrets", []):
        answer["secrets"][secret["name"]] = secrets.create_secret(Name=secret["name"], SecretString=secret["value"])["ARN"]
    print(json.dumps(answer))


if __name__ == "__main__":
    main(sys.argv[1])
