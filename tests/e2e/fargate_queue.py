"""Makes a job queue whose only compute environment is managed Fargate capacity, as a
platform team would for Fargate steps (the controller checks a step's queue against its
platform). Used by tests/e2e/flow_controller.rs.

Usage: python fargate_queue.py ENDPOINT_URL QUEUE
"""

import sys

import boto3


def main(endpoint: str, queue: str) -> None:
    kw = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    ec2, batch, iam = boto3.client("ec2", **kw), boto3.client("batch", **kw), boto3.client("iam", **kw)
    environment = f"{queue}-fargate"
    found = batch.describe_compute_environments(computeEnvironments=[environment])["computeEnvironments"]
    if found:
        arn = found[0]["computeEnvironmentArn"]
    else:
        try:
            role = iam.create_role(RoleName="flowline-batch-fargate", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        except iam.exceptions.EntityAlreadyExistsException:
            role = iam.get_role(RoleName="flowline-batch-fargate")["Role"]["Arn"]
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
        group = ec2.create_security_group(GroupName=environment, Description="batch", VpcId=vpc)["GroupId"]
        arn = batch.create_compute_environment(
            computeEnvironmentName=environment,
            type="MANAGED",
            state="ENABLED",
            serviceRole=role,
            computeResources={"type": "FARGATE", "maxvCpus": 16, "subnets": [subnet], "securityGroupIds": [group]},
        )["computeEnvironmentArn"]
    order = [{"order": 1, "computeEnvironment": arn}]
    if batch.describe_job_queues(jobQueues=[queue])["jobQueues"]:
        batch.update_job_queue(jobQueue=queue, computeEnvironmentOrder=order)
    else:
        batch.create_job_queue(jobQueueName=queue, state="ENABLED", priority=1, computeEnvironmentOrder=order)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
