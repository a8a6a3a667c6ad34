"""IAM enforcement mode (--enforce-iam, iam_mode.py): requests are authenticated and
authorized, and the emulator acts for a principal with that principal's credentials."""

from __future__ import annotations

import json
from types import SimpleNamespace

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

import iam_mode
from test_launcher import REGION, _start, _stop, batch_task, uid, wait_execution

ACCOUNT = "123456789012"


@pytest.fixture(scope="module")
def iam_emu(tmp_path_factory):
    emulator = _start(tmp_path_factory, "--enforce-iam")
    yield emulator
    _stop(emulator)


def client(emu, service: str, key: str, secret: str, token: str | None = None):
    return boto3.client(
        service,
        endpoint_url=emu.endpoint,
        region_name=REGION,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        aws_session_token=token,
        config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}),
    )


def admin(emu, service: str):
    return client(emu, service, iam_mode.ADMIN_ACCESS_KEY, iam_mode.ADMIN_SECRET_KEY)


def policy(*statements: dict) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(action, resource="*") -> dict:
    return {"Effect": "Allow", "Action": action, "Resource": resource}


def user_with(emu, *statements: dict) -> tuple[str, str]:
    iam = admin(emu, "iam")
    name = uid("user")
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=policy(*statements))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def role_with(emu, principal: str, *statements: dict) -> str:
    iam = admin(emu, "iam")
    trust = policy({"Effect": "Allow", "Principal": {"Service": principal}, "Action": "sts:AssumeRole"})
    name = uid("role")
    arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust)["Role"]["Arn"]
    if statements:
        iam.put_role_policy(RoleName=name, PolicyName="p", PolicyDocument=policy(*statements))
    return arn


def error_code(call) -> tuple[str, int]:
    with pytest.raises(ClientError) as raised:
        call()
    return raised.value.response["Error"]["Code"], raised.value.response["ResponseMetadata"]["HTTPStatusCode"]


PASS = json.dumps({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}})


def test_requests_are_authenticated_and_denied_in_aws_shape(iam_emu):
    assert admin(iam_emu, "stepfunctions").list_state_machines()["stateMachines"] is not None
    unknown = client(iam_emu, "stepfunctions", "UNKNOWNKEY0000000000", "x")
    assert error_code(unknown.list_state_machines)[0] == "UnrecognizedClientException"
    key, secret = user_with(iam_emu, allow("states:ListStateMachines"))
    sfn = client(iam_emu, "stepfunctions", key, secret)
    sfn.list_state_machines()
    denied = lambda: sfn.create_state_machine(name=uid("sm"), definition=PASS, roleArn=f"arn:aws:iam::{ACCOUNT}:role/r")
    assert error_code(denied) == ("AccessDeniedException", 400)
    assert error_code(client(iam_emu, "events", key, secret).list_rules) == ("AccessDeniedException", 400)
    assert error_code(client(iam_emu, "secretsmanager", key, secret).list_secrets) == ("AccessDeniedException", 400)
    assert error_code(client(iam_emu, "batch", key, secret).describe_job_queues)[0] in ("AccessDeniedException", "AccessDenied")
    assert error_code(client(iam_emu, "s3", key, secret).list_buckets) == ("AccessDenied", 403)
    assert error_code(client(iam_emu, "sqs", key, secret).list_queues)[0] in ("AccessDenied", "AccessDeniedException")


def test_step_functions_actions_are_checked_against_the_named_resource(iam_emu):
    sfn_admin = admin(iam_emu, "stepfunctions")
    role = role_with(iam_emu, "states.amazonaws.com")
    mine = sfn_admin.create_state_machine(name=uid("mine"), definition=PASS, roleArn=role)["stateMachineArn"]
    other = sfn_admin.create_state_machine(name=uid("other"), definition=PASS, roleArn=role)["stateMachineArn"]
    key, secret = user_with(
        iam_emu,
        allow("states:StartExecution", mine),
        allow("states:DescribeExecution", mine.replace(":stateMachine:", ":execution:") + ":*"),
    )
    sfn = client(iam_emu, "stepfunctions", key, secret)
    arn = sfn.start_execution(stateMachineArn=mine)["executionArn"]
    assert wait_execution(sfn, arn)["status"] == "SUCCEEDED"
    assert error_code(lambda: sfn.start_execution(stateMachineArn=other))[0] == "AccessDeniedException"
    # A resource-scoped Allow on a service whose resource moto cannot name still grants the action.
    key, secret = user_with(iam_emu, allow("secretsmanager:ListSecrets", f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:x-*"))
    client(iam_emu, "secretsmanager", key, secret).list_secrets()


def test_resource_wildcards_are_iams_star_and_question_mark(iam_emu):
    s3, bucket = admin(iam_emu, "s3"), uid("bucket")
    s3.create_bucket(Bucket=bucket)
    for key in ("a1c", "a12c", "a.c"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    admin(iam_emu, "secretsmanager").create_secret(Name=(secret_name := uid("db")), SecretString="v")
    key, secret = user_with(
        iam_emu,
        allow("s3:GetObject", f"arn:aws:s3:::{bucket}/a?c"),
        allow("s3:GetObject", f"arn:aws:s3:::{bucket}/x.y"),
        allow("secretsmanager:DescribeSecret", f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{secret_name}-??????"),
    )
    user_s3 = client(iam_emu, "s3", key, secret)
    user_s3.get_object(Bucket=bucket, Key="a1c")
    user_s3.get_object(Bucket=bucket, Key="a.c")
    assert error_code(lambda: user_s3.get_object(Bucket=bucket, Key="a12c"))[0] == "AccessDenied"
    # `.` is literal: x.y grants no xzy.
    s3.put_object(Bucket=bucket, Key="xzy", Body=b"x")
    assert error_code(lambda: user_s3.get_object(Bucket=bucket, Key="xzy"))[0] == "AccessDenied"
    # A secret named by `name-??????` (moto answered 500 on the `?`s).
    client(iam_emu, "secretsmanager", key, secret).describe_secret(SecretId=secret_name)


def batch_setup(emu) -> dict:
    batch, iam = admin(emu, "batch"), admin(emu, "iam")
    service_role = iam.create_role(RoleName=uid("batch"), AssumeRolePolicyDocument=policy())["Role"]["Arn"]
    ce = batch.create_compute_environment(
        computeEnvironmentName=uid("ce"), type="UNMANAGED", state="ENABLED", serviceRole=service_role
    )["computeEnvironmentArn"]
    queue = batch.create_job_queue(
        jobQueueName=uid("q"), state="ENABLED", priority=1, computeEnvironmentOrder=[{"order": 1, "computeEnvironment": ce}]
    )["jobQueueArn"]
    job_def = batch.register_job_definition(
        jobDefinitionName=uid("jd"), type="container", containerProperties={"image": "python:3.12-slim", "command": ["true"], "vcpus": 1, "memory": 128}
    )["jobDefinitionArn"]
    return {"queue": queue, "job_def": job_def}


def map_of_batch(setup: dict) -> str:
    child = {"StartAt": "Run", "States": {"Run": {**batch_task(setup["queue"], setup["job_def"]), "End": True}}}
    return json.dumps(
        {
            "StartAt": "First",
            "States": {
                "First": {**batch_task(setup["queue"], setup["job_def"]), "ResultPath": None, "Next": "Each"},
                "Each": {
                    "Type": "Map",
                    "ItemsPath": "$.items",
                    "ItemProcessor": {"ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}, **child},
                    "End": True,
                },
            },
        }
    )


def run(emu, role: str, definition: str) -> dict:
    sfn = admin(emu, "stepfunctions")
    machine = sfn.create_state_machine(name=uid("sm"), definition=definition, roleArn=role)["stateMachineArn"]
    arn = sfn.start_execution(stateMachineArn=machine, input=json.dumps({"items": [1, 2]}))["executionArn"]
    return wait_execution(sfn, arn, timeout=30)


def test_the_interpreter_acts_with_the_state_machine_role(iam_emu):
    setup = batch_setup(iam_emu)
    iam_emu.post("/flowline-test/requests/reset")
    role = role_with(iam_emu, "states.amazonaws.com", allow(["batch:SubmitJob", "batch:DescribeJobs", "batch:TerminateJob"]))
    done = run(iam_emu, role, map_of_batch(setup))
    assert done["status"] == "SUCCEEDED", done.get("cause")
    by_key = iam_emu.get("/flowline-test/requests")["byAccessKey"]
    sessions = {k: v for k, v in by_key.items() if k.startswith("ASIA")}
    # The parent's task and both Map children's tasks: three jobs, under the role's session key.
    assert sum(v.get("batch:SubmitJob", 0) for v in sessions.values()) == 3, by_key
    assert "ak" not in by_key

    no_batch = role_with(iam_emu, "states.amazonaws.com", allow("s3:GetObject"))
    failed = run(iam_emu, no_batch, map_of_batch(setup))
    assert failed["status"] == "FAILED"
    assert "not authorized to perform: batch:submitjob" in failed.get("cause", "").lower(), failed.get("cause")

    untrusted = role_with(iam_emu, "lambda.amazonaws.com", allow("*"))
    failed = run(iam_emu, untrusted, map_of_batch(setup))
    assert failed["status"] == "FAILED"
    assert "does not trust states.amazonaws.com" in failed.get("cause", ""), failed.get("cause")


def test_eventbridge_starts_executions_only_with_a_permitted_role(iam_emu):
    sfn, events = admin(iam_emu, "stepfunctions"), admin(iam_emu, "events")
    machine = sfn.create_state_machine(
        name=uid("sm"), definition=PASS, roleArn=role_with(iam_emu, "states.amazonaws.com")
    )["stateMachineArn"]
    permitted = role_with(iam_emu, "events.amazonaws.com", allow("states:StartExecution", machine))
    elsewhere = role_with(iam_emu, "events.amazonaws.com", allow("states:StartExecution", machine + "-other"))
    wrong_trust = role_with(iam_emu, "states.amazonaws.com", allow("states:StartExecution", machine))
    outcomes = {}
    for label, role in (("permitted", permitted), ("elsewhere", elsewhere), ("wrong_trust", wrong_trust)):
        rule = uid("rule")
        events.put_rule(Name=rule, ScheduleExpression="rate(1 hour)")
        events.put_targets(Rule=rule, Targets=[{"Id": "t", "Arn": machine, "RoleArn": role}])
        status, fired = iam_emu.post("/flowline-test/fire-rule", {"name": rule})
        assert status == 200, fired
        outcomes[label] = fired["executionArns"]
    assert len(outcomes["permitted"]) == 1 and outcomes["elsewhere"] == [] and outcomes["wrong_trust"] == []
    reasons = [f["reason"] for f in iam_emu.get("/flowline-test/failed-invocations")["failedInvocations"]]
    assert any("not allowed states:StartExecution" in r for r in reasons), reasons
    assert any("does not trust events.amazonaws.com" in r for r in reasons), reasons


def test_trust_policies_name_service_principals():
    def role(*statements):
        return SimpleNamespace(assume_role_policy_document=policy(*statements))

    tasks = {"Effect": "Allow", "Principal": {"Service": ["ecs-tasks.amazonaws.com"]}, "Action": "sts:AssumeRole"}
    assert iam_mode.trusts(role(tasks), "ecs-tasks.amazonaws.com")
    assert not iam_mode.trusts(role(tasks), "states.amazonaws.com")
    assert not iam_mode.trusts(role(dict(tasks, Action="sts:TagSession")), "ecs-tasks.amazonaws.com")
    assert iam_mode.trusts(role(dict(tasks, Action="sts:*")), "ecs-tasks.amazonaws.com")
    assert not iam_mode.trusts(role(tasks, dict(tasks, Effect="Deny")), "ecs-tasks.amazonaws.com")
    assert not iam_mode.trusts(role({"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}), "states.amazonaws.com")


def test_assume_role_honours_the_trust_policy_for_users(iam_emu):
    iam = admin(iam_emu, "iam")
    key, secret = user_with(iam_emu, allow("sts:AssumeRole"))
    user_arn = next(u["Arn"] for u in iam.list_users()["Users"] if any(
        k["AccessKeyId"] == key for k in iam.list_access_keys(UserName=u["UserName"])["AccessKeyMetadata"]
    ))
    name = uid("role")
    trust = policy({"Effect": "Allow", "Principal": {"AWS": user_arn}, "Action": "sts:AssumeRole"})
    trusted = iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust)["Role"]["Arn"]
    iam.put_role_policy(RoleName=name, PolicyName="p", PolicyDocument=policy(allow("states:ListStateMachines")))
    sts = client(iam_emu, "sts", key, secret)
    session = sts.assume_role(RoleArn=trusted, RoleSessionName="session")["Credentials"]
    as_role = client(iam_emu, "stepfunctions", session["AccessKeyId"], session["SecretAccessKey"], session["SessionToken"])
    as_role.list_state_machines()
    assert error_code(as_role.list_activities)[0] == "AccessDeniedException"
    service_only = role_with(iam_emu, "states.amazonaws.com", allow("*"))
    assert error_code(lambda: sts.assume_role(RoleArn=service_only, RoleSessionName="session")) == ("AccessDenied", 403)


def test_sqs_batch_actions_are_authorized_as_their_single_action(iam_emu):
    name = uid("q")
    url = admin(iam_emu, "sqs").create_queue(QueueName=name)["QueueUrl"]
    arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"
    key, secret = user_with(iam_emu, allow(["sqs:SendMessage", "sqs:ReceiveMessage", "sqs:DeleteMessage"], arn))
    sqs = client(iam_emu, "sqs", key, secret)
    sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "1", "MessageBody": "a"}])
    received = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)["Messages"]
    sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": "1", "ReceiptHandle": received[0]["ReceiptHandle"]}])
    # Without sqs:DeleteMessage the batch delete is refused as well.
    key, secret = user_with(iam_emu, allow(["sqs:SendMessage", "sqs:ReceiveMessage"], arn))
    reader = client(iam_emu, "sqs", key, secret)
    reader.send_message(QueueUrl=url, MessageBody="b")
    handle = reader.receive_message(QueueUrl=url, WaitTimeSeconds=0)["Messages"][0]["ReceiptHandle"]
    denied = lambda: reader.delete_message_batch(QueueUrl=url, Entries=[{"Id": "1", "ReceiptHandle": handle}])
    assert error_code(denied)[0] in ("AccessDenied", "AccessDeniedException")
