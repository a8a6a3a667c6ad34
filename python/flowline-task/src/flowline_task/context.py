"""The task contract, read in one place: `TaskContext.from_env()`.

Every other module takes a `TaskContext` and never reads the environment itself, so a test (or
a step that wants to reach another run's data) builds one from any mapping.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

# The controller's defaults (src/settings.rs), used when a variable is unset.
DEFAULT_RETRY_COUNT = 7
DEFAULT_WORKER_COUNT = 64
SSE_VALUES = ("AES256", "aws:kms")


@dataclass(frozen=True)
class TaskContext:
    """What a step's container was told about itself (see the README's "Task contract")."""

    flow: str | None = None
    namespace: str | None = None
    run_id: str | None = None
    step: str | None = None
    task_id: str | None = None
    # The task's own prefix, `s3://bucket/.../<step>/<task>/`, always ending in "/".
    artifact_uri: str | None = None
    # The parents' prefixes, in the order FLOWLINE_INPUT_URIS lists them.
    input_uris: tuple[str, ...] = ()
    parameters: Mapping[str, Any] = field(default_factory=dict)
    foreach_index: int | None = None
    foreach_value: Any = None
    s3_endpoint: str | None = None
    sse: str | None = None
    kms_key_id: str | None = None
    retry_count: int = DEFAULT_RETRY_COUNT
    worker_count: int = DEFAULT_WORKER_COUNT
    # Folders of the `flowline task` wrapper; unset without it (then artifacts go through S3).
    input_dir: Path | None = None
    output_dir: Path | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TaskContext:
        """Reads the task contract's variables from `env` (default: `os.environ`).

        An empty variable counts as unset. A malformed value raises `ConfigError` naming the
        variable."""
        env = os.environ if env is None else env

        def text(name: str) -> str | None:
            value = env.get(name, "")
            return value if value != "" else None

        foreach_value: Any = None
        if (raw := text("FLOWLINE_FOREACH_VALUE")) is not None:
            foreach_value = _json(raw, "FLOWLINE_FOREACH_VALUE")
        sse = text("FLOWLINE_S3_SSE")
        if sse is not None and sse not in SSE_VALUES:
            raise ConfigError(
                f"FLOWLINE_S3_SSE is {sse!r}; expected one of {', '.join(SSE_VALUES)} or unset"
            )
        input_dir, output_dir = text("FLOWLINE_INPUT_DIR"), text("FLOWLINE_OUTPUT_DIR")
        return cls(
            flow=text("FLOWLINE_FLOW"),
            namespace=text("FLOWLINE_NAMESPACE"),
            run_id=text("FLOWLINE_RUN_ID"),
            step=text("FLOWLINE_STEP"),
            task_id=text("FLOWLINE_TASK_ID"),
            artifact_uri=_prefix(text("FLOWLINE_ARTIFACT_URI"), "FLOWLINE_ARTIFACT_URI"),
            input_uris=tuple(
                _required_prefix(uri.strip(), "FLOWLINE_INPUT_URIS")
                for uri in (text("FLOWLINE_INPUT_URIS") or "").split(",")
                if uri.strip()
            ),
            parameters=_parameters(text("FLOWLINE_PARAMETERS")),
            foreach_index=(
                None
                if (index := text("FLOWLINE_FOREACH_INDEX")) is None
                else _int(index, "FLOWLINE_FOREACH_INDEX", 0, 0)
            ),
            foreach_value=foreach_value,
            s3_endpoint=text("FLOWLINE_S3_ENDPOINT"),
            sse=sse,
            kms_key_id=text("FLOWLINE_S3_KMS_KEY_ID"),
            retry_count=_int(
                text("FLOWLINE_S3_RETRY_COUNT"), "FLOWLINE_S3_RETRY_COUNT", DEFAULT_RETRY_COUNT, 0
            ),
            worker_count=_int(
                text("FLOWLINE_S3_WORKER_COUNT"), "FLOWLINE_S3_WORKER_COUNT", DEFAULT_WORKER_COUNT, 1
            ),
            input_dir=Path(input_dir) if input_dir else None,
            output_dir=Path(output_dir) if output_dir else None,
        )

    def sse_args(self) -> dict[str, str]:
        """The encryption arguments of every upload: `ServerSideEncryption`, and `SSEKMSKeyId`
        with `aws:kms` when a key is set (without one S3 uses the account's `aws/s3` key). A key
        set beside `AES256` is not sent: S3 refuses a KMS key id with AES256."""
        if self.sse is None:
            return {}
        args = {"ServerSideEncryption": self.sse}
        if self.sse == "aws:kms" and self.kms_key_id:
            args["SSEKMSKeyId"] = self.kms_key_id
        return args


def _json(raw: str, name: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError as err:
        raise ConfigError(f"{name} is not JSON ({err}): {raw[:200]!r}") from None


def _parameters(raw: str | None) -> dict[str, Any]:
    if raw is None:
        return {}
    value = _json(raw, "FLOWLINE_PARAMETERS")
    if not isinstance(value, dict):
        raise ConfigError(
            f"FLOWLINE_PARAMETERS is not a JSON object but {type(value).__name__}: {raw[:200]!r}"
        )
    return value


def _int(raw: str | None, name: str, default: int, minimum: int) -> int:
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} is not an integer: {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} is {value}; it must be at least {minimum}")
    return value


def _prefix(uri: str | None, name: str) -> str | None:
    return None if uri is None else _required_prefix(uri, name)


def _required_prefix(uri: str, name: str) -> str:
    if not uri.startswith("s3://") or len(uri) <= len("s3://"):
        raise ConfigError(f"{name} holds {uri!r}, which is not an s3:// URI")
    return uri if uri.endswith("/") else uri + "/"
