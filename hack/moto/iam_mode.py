"""IAM enforcement mode of the emulator (``--enforce-iam``, ``FLOWLINE_EMULATOR_ENFORCE_IAM=1``).

Off by default: moto then accepts any credentials. On, moto authenticates every AWS request
(SigV4 signature of a known access key: an IAM user's, or an STS session's with its token)
and authorizes it against that principal's IAM policies, and whatever acts on behalf of a
principal acts with that principal's credentials, as on AWS:

* Set-up. From the first request on, requests are checked (``--iam-free-requests N`` lets N
  unauthenticated requests through first, moto's ``INITIAL_NO_AUTH_ACTION_COUNT``). The
  launcher creates an administrator user ``flowline-admin`` (policy ``*`` on ``*``) with the
  fixed key ``ADMIN_ACCESS_KEY`` / ``ADMIN_SECRET_KEY``, again after every ``/moto-api/reset``,
  so a test or script sets up roles and users with it and then acts with narrower ones: no
  request counting to get right.
* Step Functions. The interpreter calls Batch, S3, Step Functions (``states:startExecution``)
  and the rest with the credentials of an STS session of the state machine's ``roleArn``
  (Map children run with their parent's role), assumed as ``states.amazonaws.com``; the
  request counter shows those calls under the session's access key id (``ASIA…``; see
  ``interpreter_access_keys()``). A role whose trust policy does not name that service
  principal cannot be assumed and the task fails with States.Runtime naming role and principal.
* EventBridge. A rule's Step Functions target starts an execution only if its ``RoleArn``
  trusts ``events.amazonaws.com`` and its policies allow ``states:StartExecution`` on the
  state machine; otherwise the delivery is a failed invocation (listed by
  ``GET /flowline-test/failed-invocations``), as AWS counts FailedInvocations.
* Batch tasks' credentials (exec mode) come from ``assume_role_as_service(job_role,
  "ecs-tasks.amazonaws.com")``: an STS session through moto's STS backend, with the same
  trust check.
* AssumeRole through the API: moto checks the role's trust policy against the calling
  principal (an IAM user or role ARN in ``Principal.AWS``; a statement naming only
  ``Principal.Service`` trusts no user or role); service principals are checked only by
  ``assume_role_as_service`` above. Sessions do not expire and trust-policy conditions such
  as ``aws:SourceArn`` are not evaluated for service principals.

What moto 5.2.5 evaluates (``moto/core/authorization.py``, ``moto/iam/access_control.py``):
every request of a service answered through moto's generic ``call_action`` (Batch, Step
Functions, EventBridge, Secrets Manager, STS, CloudWatch Logs, SQS, IAM, and S3 through its
own hook) is authenticated and its action (``service:Operation``) checked; identity policies
only (inline and attached, of the user, its groups, or the assumed role); no resource
policies, permission boundaries, SCPs or session policies; Condition keys only for trust
policies. The resource is known only for S3 (bucket / object ARN), SQS (queue ARN), IAM
(role actions), STS AssumeRole (the role), and, with this module, Step Functions (the
state machine, execution or map run ARN named in the request); for the other services it is
``*``. moto would then match only statements whose Resource is literally ``*``, denying what a
resource-scoped policy allows on AWS; here an Allow statement matches an unknown resource
whatever its Resource (the action is still checked), and a Deny statement for a specific
resource does not apply to it. ``sts:GetCallerIdentity`` is always allowed.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from typing import Any

LOG = logging.getLogger("flowline.emulator.iam")

ENV_ENFORCE_IAM = "FLOWLINE_EMULATOR_ENFORCE_IAM"
ENV_FREE_REQUESTS = "FLOWLINE_EMULATOR_IAM_FREE_REQUESTS"
ADMIN_USER = "flowline-admin"
ADMIN_ACCESS_KEY = "FLOWLINEADMINKEY0000"
ADMIN_SECRET_KEY = "flowline-admin-secret-key"
ADMIN_POLICY = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})
STATES_PRINCIPAL = "states.amazonaws.com"
EVENTS_PRINCIPAL = "events.amazonaws.com"
TASKS_PRINCIPAL = "ecs-tasks.amazonaws.com"
SESSION_SECONDS = 3600


class RoleNotAssumable(Exception):
    """A role that the service principal may not assume (missing, or not trusted)."""


class _State:
    enforce = False
    free_requests = 0


STATE = _State()
# (role ARN, principal) -> (access key id, secret, session token, expiry as monotonic time)
_SESSIONS: dict[tuple[str, str], tuple[str, str, str, float]] = {}
_INTERPRETER_KEYS: set[str] = set()
_FAILED_INVOCATIONS: list[dict] = []
_LOCK = threading.Lock()


def enforcing() -> bool:
    return STATE.enforce


def _partition(arn: str) -> str:
    return arn.split(":")[1] if arn.count(":") >= 5 else "aws"


def _account(arn: str, default: str) -> str:
    parts = arn.split(":")
    return parts[4] if len(parts) > 4 and parts[4] else default


def _iam(account: str, partition: str = "aws") -> Any:
    from moto.iam.models import iam_backends

    return iam_backends[account][partition]


def enable(free_requests: int, account: str) -> None:
    """Turns enforcement on: moto authorizes every request after ``free_requests`` of them."""
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin

    STATE.enforce, STATE.free_requests = True, free_requests
    settings.INITIAL_NO_AUTH_ACTION_COUNT = float(free_requests)
    ActionAuthenticatorMixin.request_count = 0
    ensure_admin(account)


def ensure_admin(account: str) -> None:
    """Creates the administrator user and its fixed access key, unless they exist."""
    iam = _iam(account)
    if ADMIN_USER not in iam.users:
        iam.create_user(region_name="us-east-1", user_name=ADMIN_USER)
        iam.put_user_policy(ADMIN_USER, "administrator", ADMIN_POLICY)
    user = iam.users[ADMIN_USER]
    if not any(k.access_key_id == ADMIN_ACCESS_KEY for k in user.access_keys):
        key = iam.create_access_key(ADMIN_USER)
        key.access_key_id, key.secret_access_key = ADMIN_ACCESS_KEY, ADMIN_SECRET_KEY


def on_reset(account: str) -> None:
    """``/moto-api/reset`` forgets users, roles and sessions: forget the cached sessions and
    re-create the administrator."""
    with _LOCK:
        _SESSIONS.clear()
        _INTERPRETER_KEYS.clear()
        _FAILED_INVOCATIONS.clear()
    if STATE.enforce:
        from moto import settings
        from moto.core.authorization import ActionAuthenticatorMixin

        settings.INITIAL_NO_AUTH_ACTION_COUNT = float(STATE.free_requests)
        ActionAuthenticatorMixin.request_count = 0
        ensure_admin(account)


def trusts(role: Any, principal: str) -> bool:
    """Whether the role's trust policy lets the service ``principal`` call sts:AssumeRole
    (an Allow statement naming it under ``Principal.Service``, no Deny naming it)."""
    from moto.iam.access_control import IAMPolicyStatement

    try:
        document = json.loads(role.assume_role_policy_document)
    except (TypeError, ValueError):
        return False
    statements = document.get("Statement") or []
    allowed = False
    for statement in statements if isinstance(statements, list) else [statements]:
        services = (statement.get("Principal") or {}) if isinstance(statement.get("Principal"), dict) else {}
        named = services.get("Service") or []
        if principal not in ([named] if isinstance(named, str) else named):
            continue
        if not IAMPolicyStatement({"Action": statement.get("Action", ""), "Effect": "Allow"})._check_element_matches(
            "Action", "sts:AssumeRole"
        ):
            continue
        if statement.get("Effect") == "Deny":
            return False
        allowed = allowed or statement.get("Effect") == "Allow"
    return allowed


def _role(role_arn: str, default_account: str) -> Any:
    try:
        return _iam(_account(role_arn, default_account), _partition(role_arn)).get_role_by_arn(role_arn)
    except Exception as err:  # noqa: BLE001 - moto's NotFoundException, or a malformed ARN
        raise RoleNotAssumable(f"role {role_arn} does not exist ({err})") from err


def assume_role_as_service(role_arn: str, principal: str, region: str = "us-east-1", account: str = "123456789012") -> tuple[str, str, str]:
    """Credentials ``(access key id, secret, session token)`` of an STS session of ``role_arn``
    assumed by the service ``principal``, through moto's STS backend (so moto authenticates
    requests signed with them and authorizes them with the role's policies). Refused, with
    RoleNotAssumable, when the role does not exist or its trust policy does not name the
    principal. Sessions are reused until shortly before they expire."""
    from moto.sts.models import sts_backends

    key = (role_arn, principal)
    with _LOCK:
        cached = _SESSIONS.get(key)
    if cached is not None and cached[3] > time.monotonic():
        return cached[:3]
    role = _role(role_arn, account)
    if not trusts(role, principal):
        raise RoleNotAssumable(f"role {role_arn} does not trust {principal} to assume it (its trust policy)")
    sts = sts_backends[_account(role_arn, account)][_partition(role_arn)]
    session = sts.assume_role(
        region_name=region,
        role_session_name=principal.split(".", 1)[0] + "-" + role.name,
        role_arn=role_arn,
        policy=None,
        duration=SESSION_SECONDS,
        external_id=None,
    )
    credentials = (session.access_key_id, session.secret_access_key, session.session_token)
    with _LOCK:
        _SESSIONS[key] = (*credentials, time.monotonic() + SESSION_SECONDS - 60)
    return credentials


def interpreter_credentials(role_arn: str | None, region: str) -> tuple[str, str, str] | None:
    """The credentials the Step Functions interpreter calls other services with for a state
    machine of ``role_arn``, or None when not enforcing (the launcher's fixed key then)."""
    if not STATE.enforce:
        return None
    if not role_arn:
        raise RoleNotAssumable("the state machine has no roleArn")
    credentials = assume_role_as_service(role_arn, STATES_PRINCIPAL, region)
    with _LOCK:
        _INTERPRETER_KEYS.add(credentials[0])
    return credentials


def interpreter_access_keys() -> list[str]:
    with _LOCK:
        return sorted(_INTERPRETER_KEYS)


def role_policies(role: Any, account: str, partition: str) -> list[Any]:
    iam = _iam(account, partition)
    policies: list[Any] = [iam.get_role_policy(role.name, name)[1] for name in iam.list_role_policies(role.name)]
    attached, _ = iam.list_attached_role_policies(role.name)
    return policies + list(attached)


def role_allows(role_arn: str, action: str, resource: str, account: str = "123456789012") -> bool:
    """Whether the role's identity policies allow ``action`` on ``resource`` (an explicit Deny
    wins), evaluated with moto's policy engine."""
    from moto.iam.access_control import IAMPolicy, PermissionResult

    role = _role(role_arn, account)
    permitted = False
    for policy in role_policies(role, _account(role_arn, account), _partition(role_arn)):
        result = IAMPolicy(policy).is_action_permitted(action, resource)
        if result == PermissionResult.DENIED:
            return False
        permitted = permitted or result == PermissionResult.PERMITTED
    return permitted


def may_deliver_to_state_machine(rule: Any, target: dict, event: dict) -> str | None:
    """None if EventBridge may start the target's state machine; else why not, after recording
    the failed invocation."""
    if not STATE.enforce:
        return None
    arn, role_arn = target["Arn"], target.get("RoleArn")
    try:
        if not role_arn:
            raise RoleNotAssumable("the target has no RoleArn")
        assume_role_as_service(role_arn, EVENTS_PRINCIPAL, arn.split(":")[3], _account(arn, "123456789012"))
        if not role_allows(role_arn, "states:StartExecution", arn):
            raise RoleNotAssumable(f"role {role_arn} is not allowed states:StartExecution on {arn}")
    except RoleNotAssumable as err:
        reason = str(err)
        with _LOCK:
            _FAILED_INVOCATIONS.append(
                {"ruleArn": rule.arn, "targetId": target.get("Id"), "targetArn": arn, "eventId": event.get("id"), "reason": reason}
            )
        LOG.warning("rule %s: not delivered to %s: %s", rule.name, arn, reason)
        return reason
    return None


def record_failed_invocation(rule_arn: str, target: dict, event: dict, reason: str) -> None:
    """Records a delivery EventBridge could not make (AWS counts it in FailedInvocations)."""
    with _LOCK:
        _FAILED_INVOCATIONS.append(
            {"ruleArn": rule_arn, "targetId": target.get("Id"), "targetArn": target.get("Arn"), "eventId": event.get("id"), "reason": reason}
        )


def failed_invocations() -> list[dict]:
    with _LOCK:
        return list(_FAILED_INVOCATIONS)


def patch_unknown_resources_match_allows() -> None:
    """Where moto cannot name a request's resource it authorizes against ``*``, and a
    statement scoped to resources then never matches, denying what AWS allows. An Allow now
    matches an unknown resource whatever its Resource; a resource-scoped Deny does not apply."""
    from moto.iam.access_control import IAMPolicyStatement, PermissionResult

    original = IAMPolicyStatement.is_action_permitted

    def is_action_permitted(self: Any, action: str, resource: str = "*", principal: Any = None, incoming_condition_values: Any = None) -> Any:
        result = original(self, action, resource, principal, incoming_condition_values)
        statement = self._statement
        if result != PermissionResult.NEUTRAL or resource != "*" or principal is not None or not statement.get("Resource"):
            return result
        if statement.get("Effect") != "Allow":
            return result
        widened = IAMPolicyStatement(dict(statement, Resource="*"))
        return original(widened, action, resource, principal, incoming_condition_values)

    IAMPolicyStatement.is_action_permitted = is_action_permitted


def patch_actions_case_insensitive() -> None:
    """IAM matches action names case-insensitively; moto matches them exactly, and names Batch's
    actions after the lower-case URL (``batch:submitjob``), so no policy written as AWS
    documents it (``batch:SubmitJob``) would allow them."""
    from moto.iam.access_control import IAMPolicyStatement

    original = IAMPolicyStatement._check_element_matches

    def _check_element_matches(self: Any, statement_element: Any, value: str) -> bool:
        if statement_element not in ("Action", "NotAction"):
            return original(self, statement_element, value)
        patterns = self._statement[statement_element]
        for pattern in patterns if isinstance(patterns, list) else [patterns]:
            if re.match("^" + re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".") + "$", value, re.IGNORECASE):
                return True
        return False

    IAMPolicyStatement._check_element_matches = _check_element_matches


# SQS authorizes each batch action as its single action (AWS's SQS API permissions reference:
# DeleteMessageBatch needs sqs:DeleteMessage); IAM knows no sqs:DeleteMessageBatch action.
SQS_BATCH_ACTIONS = {
    "sqs:deletemessagebatch": "sqs:DeleteMessage",
    "sqs:sendmessagebatch": "sqs:SendMessage",
    "sqs:changemessagevisibilitybatch": "sqs:ChangeMessageVisibility",
}


def patch_sqs_batch_actions() -> None:
    """moto authorizes SQS's batch actions under their own names (``sqs:DeleteMessageBatch``),
    which no policy written as AWS documents grants; they are checked as the single action."""
    from moto.iam.access_control import IAMPolicyStatement

    original = IAMPolicyStatement._check_element_matches

    def _check_element_matches(self: Any, statement_element: Any, value: str) -> bool:
        if statement_element in ("Action", "NotAction"):
            value = SQS_BATCH_ACTIONS.get(value.lower(), value)
        return original(self, statement_element, value)

    IAMPolicyStatement._check_element_matches = _check_element_matches


def patch_resource_wildcards() -> None:
    """IAM's wildcards in a Resource are ``*`` (any characters) and ``?`` (any one character),
    everything else literal. moto turns only ``*`` into a regular expression and leaves the
    rest as regex syntax: ``secret:db-??????`` (a secret named without the six characters
    Secrets Manager appends) made every request the statement was checked for fail with a
    regex error (HTTP 500), and ``.`` matched any character."""
    from moto.iam.access_control import IAMPolicyStatement

    def _match(pattern: str, string: str) -> Any:
        regex = "^" + re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".") + "$"
        return re.match(regex, string, re.DOTALL)

    IAMPolicyStatement._match = staticmethod(_match)


def patch_service_only_trust() -> None:
    """moto checks a caller of AssumeRole against the trust policy's ``Principal.AWS`` and fails
    with a TypeError (HTTP 500) when a statement names only ``Principal.Service``; such a
    statement simply does not trust an IAM user or role, as on AWS."""
    from moto.iam.access_control import IAMPolicyStatement

    original = IAMPolicyStatement._check_principal

    def _check_principal(self: Any, principal: str) -> bool:
        expected = self._statement.get("Principal")
        if isinstance(expected, dict) and expected and "AWS" not in expected:
            return False
        return original(self, principal)

    IAMPolicyStatement._check_principal = _check_principal


# Step Functions request members that name the resource an action is authorized on.
_SFN_RESOURCE_PARAMS = ("stateMachineArn", "executionArn", "mapRunArn", "activityArn", "resourceArn")


def patch_sfn_resources() -> None:
    """Step Functions requests are authorized against the state machine, execution, map run
    or activity they name, as on AWS, instead of ``*``."""
    from moto.stepfunctions.responses import StepFunctionResponse

    def _determine_resource(self: Any) -> str:
        for name in _SFN_RESOURCE_PARAMS:
            try:
                value = self._get_param(name)
            except Exception:  # noqa: BLE001 - an unparsable body is refused later, not here
                value = None
            if value:
                return value
        return "*"

    StepFunctionResponse._determine_resource = _determine_resource


# moto's query-protocol error codes -> what JSON-protocol services answer instead (type, HTTP).
_JSON_AUTH_ERRORS = {
    "AccessDenied": ("AccessDeniedException", 400),
    "InvalidClientTokenId": ("UnrecognizedClientException", 400),
    "SignatureDoesNotMatch": ("InvalidSignatureException", 400),
}


def _protocol(response: Any) -> str:
    from moto.core.responses import get_service_model

    try:
        return str(get_service_model(response.boto3_service_name).protocol)
    except Exception:  # noqa: BLE001 - unknown services keep moto's answer
        return ""


def json_auth_error(status: int, body: Any, protocol: str) -> tuple[int, dict[str, str], str] | None:
    """AWS's JSON error for moto's XML authentication or authorization error ``body``, or
    None if it is no such error or the protocol is not JSON."""
    if status not in (401, 403) or "json" not in protocol or not isinstance(body, (str, bytes)):
        return None
    text = body.decode() if isinstance(body, bytes) else body
    code = text.split("<Code>", 1)[-1].split("</Code>", 1)[0] if "<Code>" in text else ""
    if code not in _JSON_AUTH_ERRORS:
        return None
    kind, new_status = _JSON_AUTH_ERRORS[code]
    message = text.split("<Message>", 1)[-1].split("</Message>", 1)[0] if "<Message>" in text else code
    headers = {"Content-Type": "application/x-amz-json-1.1", "x-amzn-ErrorType": kind}
    return new_status, headers, json.dumps({"__type": kind, "message": message})


def patch_access_denied_shape() -> None:
    """moto answers an unknown key, a bad signature or a denied request with the query
    protocol's XML error (HTTP 403) whatever the service's protocol, which JSON services' SDKs
    cannot parse (the error code becomes "403"). JSON and REST-JSON services (Step Functions,
    EventBridge, Secrets Manager, Logs, Batch) answer AWS's ``{"__type", "message"}`` instead:
    AccessDeniedException, UnrecognizedClientException, InvalidSignatureException."""
    from moto.core import responses as core_responses

    original = core_responses.BaseResponse.call_action

    def call_action(self: Any) -> Any:
        status, headers, body = original(self)
        replaced = json_auth_error(status, body, _protocol(self)) if status in (401, 403) else None
        if replaced is None:
            return status, headers, body
        new_status, new_headers, new_body = replaced
        headers = {k: v for k, v in dict(headers).items() if k.lower() not in ("content-type", "content-length")}
        headers.update(new_headers)
        headers["status"] = new_status
        return new_status, headers, new_body

    core_responses.BaseResponse.call_action = call_action


def apply() -> None:
    """The patches that shape enforcement; harmless while it is off (moto checks nothing)."""
    patch_unknown_resources_match_allows()
    patch_actions_case_insensitive()
    patch_sqs_batch_actions()
    patch_resource_wildcards()
    patch_service_only_trust()
    patch_sfn_resources()
    patch_access_denied_shape()
