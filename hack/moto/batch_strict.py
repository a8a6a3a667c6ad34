"""AWS Batch rules that moto 5.2.5 does not enforce, checked the way AWS reports them.

Two moments matter, as on AWS:

* SubmitJob refuses (``ClientException``, HTTP 400) a job that its queue cannot run: a FARGATE
  job definition on a queue of EC2/SPOT compute environments or the reverse, and a multi-node
  job definition on a Fargate queue (see ``submission_error``).
* A job that was accepted can still fail when Batch starts its container (``start_failure``):
  its container overrides are too long for ECS, its image cannot be pulled, or its secrets
  cannot be injected. The job goes FAILED with AWS's status reason, without running anything.

Secrets are resolved here, in-process, from moto's Secrets Manager and SSM backends, exactly
when a container would start. Their values are only ever put into a task's environment: never
logged, never in a status reason (reasons name the secret, not its value).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from task_runtime import RUNTIME

LOG = logging.getLogger("flowline.emulator")

# ECS's limit on a RunTask's container overrides, which Batch builds from the job's.
OVERRIDES_LIMIT = 8192
OVERRIDES_TOO_LONG = f"Container Overrides length must be at most {OVERRIDES_LIMIT}"
# What ECS's RegisterTaskDefinition answers for secrets without an execution role; Batch
# registers that task definition when it places the job, so the job fails with it.
SECRETS_NEED_EXECUTION_ROLE = (
    "ClientException: When you are specifying container secrets, "
    "you must also specify a value for 'executionRoleArn'."
)
_SECRETS_PREFIX = "ResourceInitializationError: unable to pull secrets or registry auth: execution resource retrieval failed: "
FARGATE = "FARGATE"
EC2 = "EC2"


class StartError(Exception):
    """A container cannot start; ``reason`` is the job's statusReason and container reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ---------------------------------------------------------------------------------------------
# SubmitJob
# ---------------------------------------------------------------------------------------------


def _platform_of_environment(environment: Any) -> str:
    """EC2 or FARGATE: an UNMANAGED environment is EC2 instances; a MANAGED one says in
    computeResources.type (EC2, SPOT, FARGATE, FARGATE_SPOT)."""
    resources = getattr(environment, "compute_resources", None) or {}
    kind = str(resources.get("type") or EC2).upper()
    return FARGATE if kind.startswith(FARGATE) else EC2


def queue_platforms(queue: Any) -> set[str]:
    return {_platform_of_environment(env) for env in getattr(queue, "environments", None) or []}


def job_definition_platform(job_def: Any) -> str:
    capabilities = [str(c).upper() for c in job_def.platform_capabilities or []]
    return FARGATE if FARGATE in capabilities else EC2


def submission_error(job_def: Any, queue: Any) -> str | None:
    """Why SubmitJob refuses this job definition on this queue, or None.

    AWS's exact wording for these refusals is not documented; the messages below follow the
    shape of Batch's other ClientException messages and name the definition and the queue."""
    platforms = queue_platforms(queue)
    if not platforms:
        return None
    wanted = job_definition_platform(job_def)
    if job_def.type == "multinode" and FARGATE in platforms:
        return (
            f"Job definition {job_def.arn} is a multi-node parallel job definition; multi-node "
            f"parallel jobs are not supported on Fargate, and job queue {queue.arn} has Fargate "
            "compute environments"
        )
    if wanted not in platforms:
        return (
            f"Job definition {job_def.arn} requires platform capability {wanted}, which job queue "
            f"{queue.arn} does not support: its compute environments are "
            f"{'/'.join(sorted(platforms))}"
        )
    return None


# ---------------------------------------------------------------------------------------------
# Container start
# ---------------------------------------------------------------------------------------------


def overrides_length(container_overrides: dict | None) -> int:
    """Length of the overrides as serialised JSON. ECS measures the overrides Batch builds,
    which also carry Batch's AWS_BATCH_* variables, so AWS reaches the limit a little sooner."""
    if not container_overrides:
        return 0
    return len(json.dumps(container_overrides, separators=(",", ":")))


def image_reason(image: str) -> str | None:
    """AWS's reason for an image that cannot be pulled (docker's wording on an EC2 host), when
    images.json maps it to no runtime."""
    if RUNTIME.images.runtime_for(image) is not None:
        return None
    LOG.warning("image %r matches no entry of %s: the job fails as an unpullable image", image, RUNTIME.images.source)
    repository = image.rsplit("@", 1)[0]
    if ":" in repository.rsplit("/", 1)[-1]:
        repository = repository.rsplit(":", 1)[0]
    return (
        f"CannotPullContainerError: Error response from daemon: pull access denied for {repository}, "
        "repository does not exist or may require 'docker login': denied: requested access to the "
        "resource is denied"
    )


@dataclass(frozen=True)
class SecretRef:
    """One parsed ``valueFrom``: a Secrets Manager secret (optionally one JSON key of one
    version) or an SSM parameter."""

    service: str  # "secretsmanager" or "ssm"
    secret_id: str
    json_key: str = ""
    version_stage: str = ""
    version_id: str = ""


def parse_value_from(value_from: str) -> SecretRef:
    """Batch's valueFrom: a Secrets Manager ARN, optionally followed by
    ``:json-key:version-stage:version-id``; an SSM parameter ARN; or, as AWS reads a bare name,
    the name of an SSM parameter in the job's region."""
    parts = value_from.split(":")
    if value_from.startswith("arn:") and len(parts) >= 6 and parts[2] == "secretsmanager":
        secret_id = ":".join(parts[:7])
        extra = parts[7:] + ["", "", ""]
        return SecretRef("secretsmanager", secret_id, extra[0], extra[1], extra[2])
    if value_from.startswith("arn:") and len(parts) >= 6 and parts[2] == "ssm":
        return SecretRef("ssm", value_from)
    return SecretRef("ssm", value_from)


def _secrets_manager_value(ref: SecretRef, account: str, region: str) -> str:
    from moto.secretsmanager.models import secretsmanager_backends

    secret_region = ref.secret_id.split(":")[3] or region
    backend = secretsmanager_backends[account][secret_region]
    try:
        answer = backend.get_secret_value(ref.secret_id, ref.version_id or None, ref.version_stage or None)
    except Exception as err:  # noqa: BLE001 - every lookup failure fails the container's start
        raise StartError(
            f"{_SECRETS_PREFIX}unable to retrieve secret from asm: service call has been retried 1 time(s): "
            f"failed to fetch secret {ref.secret_id} from secrets manager: "
            f"{type(err).__name__}: {_message(err)}"
        ) from None
    if "SecretString" not in answer:
        raise StartError(
            f"{_SECRETS_PREFIX}unable to retrieve secret from asm: secret {ref.secret_id} has no "
            "SecretString (a binary secret cannot be an environment variable)"
        )
    value = answer["SecretString"]
    if not ref.json_key:
        return value
    try:
        document = json.loads(value)
    except ValueError:
        document = None
    if not isinstance(document, dict) or ref.json_key not in document:
        raise StartError(
            f"{_SECRETS_PREFIX}unable to retrieve secret from asm: retrieved secret from Secrets Manager "
            f"did not contain json key {ref.json_key} (secret {ref.secret_id})"
        )
    item = document[ref.json_key]
    return item if isinstance(item, str) else json.dumps(item)


def _ssm_value(ref: SecretRef, account: str, region: str) -> str:
    from moto.ssm.models import ssm_backends

    parts = ref.secret_id.split(":")
    parameter_region = parts[3] if ref.secret_id.startswith("arn:") and len(parts) > 3 and parts[3] else region
    backend = ssm_backends[account][parameter_region]
    try:
        parameter = backend.get_parameter(ref.secret_id)
    except Exception:  # noqa: BLE001 - a bad name or version is a missing parameter
        parameter = None
    if parameter is None:
        raise StartError(
            f"{_SECRETS_PREFIX}unable to retrieve secrets from ssm: service call has been retried 1 time(s): "
            f"invalid parameters: {ref.secret_id}"
        )
    if parameter.parameter_type == "SecureString":
        # ECS decrypts SecureString parameters with the execution role's KMS access.
        return parameter.decrypt(parameter.value) or ""
    return parameter.value


def _message(err: Exception) -> str:
    return str(getattr(err, "message", "") or err).strip()


def resolve_secrets(container: dict, account: str, region: str) -> dict[str, str]:
    """The values of a container's ``secrets``, by variable name. Raises StartError, naming the
    secret at fault, when one cannot be read or the container has no execution role."""
    secrets = container.get("secrets") or []
    if not secrets:
        return {}
    if not container.get("executionRoleArn"):
        raise StartError(SECRETS_NEED_EXECUTION_ROLE)
    values = {}
    for entry in secrets:
        name, value_from = entry.get("name"), entry.get("valueFrom")
        if not name or not value_from:
            continue
        ref = parse_value_from(str(value_from))
        if ref.service == "secretsmanager":
            values[name] = _secrets_manager_value(ref, account, region)
        else:
            values[name] = _ssm_value(ref, account, region)
    return values


def start_failure(containers: list[dict], overrides: list[dict], account: str, region: str) -> str | None:
    """Why the job's containers (one per node) cannot start, or None if they can. The checks run
    in the order AWS meets them: registering the ECS task definition (secrets need an execution
    role), RunTask (overrides length; ``overrides`` holds the container overrides of the job, or of
    each node of a multi-node job), the task's initialisation (secrets), the image pull."""
    for container in containers:
        if container.get("secrets") and not container.get("executionRoleArn"):
            return SECRETS_NEED_EXECUTION_ROLE
    if any(overrides_length(item) > OVERRIDES_LIMIT for item in overrides):
        return OVERRIDES_TOO_LONG
    for container in containers:
        try:
            resolve_secrets(container, account, region)
        except StartError as err:
            return err.reason
    for container in containers:
        reason = image_reason(str(container.get("image") or ""))
        if reason:
            return reason
    return None


# ---------------------------------------------------------------------------------------------
# Step Functions' Batch integration
# ---------------------------------------------------------------------------------------------


def patch_sfn_submit_job_parameters() -> None:
    """moto's ``batch:submitJob`` task keeps only the parameters on its own list and silently
    drops the others, ``NodeOverrides`` among them, so a multi-node job submitted by a state
    machine lost its per-node environment and command overrides (and its numNodes). Step
    Functions passes NodeOverrides to SubmitJob; the list now includes it."""
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_batch as batch_task,
    )

    batch_task._SUPPORTED_API_PARAM_BINDINGS["submitjob"].add("NodeOverrides")
