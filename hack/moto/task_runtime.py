"""What a Batch job's container gets, stood in for by a local process (launcher --exec-jobs).

A container on AWS sees its image's file system, the job's environment, its resolved secrets,
Batch's ``AWS_BATCH_*`` variables and credentials of its job role; nothing of the host that
launched it. A task here gets the same, built from scratch rather than copied from the
launcher's own environment, so an e2e test that passes here does not pass only because the
emulator's Python, credentials or PATH leaked into the task:

* the image is stood in for by a *runtime*: ``images.json`` maps image globs to a runtime name,
  and ``install-runtimes.sh`` installs each runtime (``runtimes/<name>/requirements.txt`` plus
  an optional ``site/`` folder) as a virtualenv. The task's PATH is ``<venv>/bin`` followed by
  the system's ``/usr/local/bin:/usr/bin:/bin``, so ``python3`` and ``pip`` are the runtime's.
  An image with no mapping cannot be pulled (see batch_strict.py); held mode checks the mapping
  too, but needs no installed runtime.
* ``flowline`` is on a task's PATH only when the emulator is told where it is
  (``--task-bin-dir`` / ``FLOWLINE_EMULATOR_TASK_BIN_DIR``): that folder comes after the
  runtime's bin, as ``/usr/local/bin/flowline`` would in an image that copies it in. Without it a
  Flow with ``taskRuntime`` fails as it would on an image without the binary.
* HOME is a fresh per-attempt folder (a container's root home is empty at start) and the
  working directory another, empty one, both under ``<job-log-dir>/tasks/``.
* ``AWS_ENDPOINT_URL`` is this emulator (a container on AWS reaches AWS; here that is the
  emulator), ``AWS_REGION``/``AWS_DEFAULT_REGION`` the job's region.
* credentials come from assuming the job definition's ``jobRoleArn`` through moto's STS backend
  and are set as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN. On AWS the SDK
  fetches them from the container credentials endpoint
  (``AWS_CONTAINER_CREDENTIALS_RELATIVE_URI``) and refreshes them; here they are fixed for the
  attempt. A job without a job role gets no credentials at all, as on AWS.
* a job that asks for GPUs gets ``NVIDIA_VISIBLE_DEVICES`` naming that many devices, as the ECS
  agent on Batch's GPU AMI sets it (GPU UUIDs; these are made up per attempt).
"""

from __future__ import annotations

import fnmatch
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_IMAGES_FILE = HERE / "images.json"
ENV_IMAGES = "FLOWLINE_EMULATOR_IMAGES"
ENV_RUNTIMES = "FLOWLINE_EMULATOR_RUNTIMES"
ENV_TASK_BIN_DIR = "FLOWLINE_EMULATOR_TASK_BIN_DIR"
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
# Linux's C locale; a container image without locale settings behaves the same.
BASE_ENVIRONMENT = {"LANG": "C.UTF-8"}


@dataclass(frozen=True)
class ImageRule:
    pattern: str
    runtime: str


@dataclass
class Images:
    """The image-to-runtime mapping: the first rule whose glob matches the image wins."""

    rules: list[ImageRule] = field(default_factory=list)
    source: str = ""

    def runtime_for(self, image: str) -> str | None:
        for rule in self.rules:
            if fnmatch.fnmatchcase(image, rule.pattern):
                return rule.runtime
        return None


def load_images(path: str | os.PathLike) -> Images:
    """Reads images.json: ``{"images": [{"match": GLOB, "runtime": NAME}, ...]}``. A broken
    file stops the launcher at start rather than failing every job later."""
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    rules = []
    for index, entry in enumerate(data.get("images") or []):
        if not isinstance(entry, dict) or not entry.get("match") or not entry.get("runtime"):
            raise ValueError(f"{path}: images[{index}] needs a 'match' glob and a 'runtime' name: {entry!r}")
        rules.append(ImageRule(str(entry["match"]), str(entry["runtime"])))
    return Images(rules, str(path))


def load_runtimes(path: str | os.PathLike) -> dict[str, str]:
    """Reads what install-runtimes.sh prints: one ``NAME=VENV`` line per installed runtime."""
    runtimes = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, sep, venv = line.partition("=")
            if not sep or not name or not venv:
                raise ValueError(f"{path}:{number}: expected NAME=VENV, got {line!r}")
            runtimes[name.strip()] = venv.strip()
    return runtimes


class RuntimeSettings:
    """Images and installed runtimes the launcher was started with."""

    images = Images()
    runtimes: dict[str, str] = {}
    runtimes_source = ""
    # A folder holding the flowline binary, on every task's PATH (empty: not installed).
    task_bin_dir = ""


RUNTIME = RuntimeSettings()


def configure(images_file: str, runtimes_file: str, task_bin_dir: str = "") -> None:
    RUNTIME.images = load_images(images_file or DEFAULT_IMAGES_FILE)
    RUNTIME.runtimes = load_runtimes(runtimes_file) if runtimes_file else {}
    RUNTIME.runtimes_source = runtimes_file
    RUNTIME.task_bin_dir = os.path.abspath(task_bin_dir) if task_bin_dir else ""


def task_path(bin_dir: str | None) -> str:
    """A task's PATH: its runtime's bin, the flowline binary's folder when configured, then
    the system's folders."""
    parts = [bin_dir, RUNTIME.task_bin_dir or None, SYSTEM_PATH]
    return ":".join(part for part in parts if part)


def runtime_bin(runtime: str) -> str | None:
    """The bin folder of an installed runtime, or None when it was not installed."""
    venv = RUNTIME.runtimes.get(runtime)
    if not venv:
        return None
    path = os.path.join(venv, "bin")
    return path if os.path.isdir(path) else None


def gpu_count(container: dict) -> int:
    for requirement in container.get("resourceRequirements") or []:
        if str(requirement.get("type", "")).upper() == "GPU":
            try:
                return max(0, int(requirement.get("value") or 0))
            except (TypeError, ValueError):
                return 0
    return 0


def task_dirs(job_log_dir: str, job_id: str, attempt: int, node_index: int | None) -> tuple[str, str]:
    """A fresh, empty HOME and working directory for one attempt (of one node)."""
    name = job_id if node_index is None else f"{job_id}-node-{node_index}"
    base = os.path.join(job_log_dir, "tasks", name, f"attempt-{attempt}")
    home, work = os.path.join(base, "home"), os.path.join(base, "work")
    os.makedirs(home, exist_ok=True)
    os.makedirs(work, exist_ok=True)
    return home, work


def job_role_credentials(role_arn: str, account: str, region: str, session_name: str) -> dict[str, str]:
    """Temporary credentials of the job role, from moto's STS backend in this process (what the
    ECS agent does through STS on AWS)."""
    from moto.utilities.utils import get_partition
    from moto.sts.models import sts_backends

    backend = sts_backends[account][get_partition(region)]
    assumed = backend.assume_role(
        region_name=region,
        role_session_name=session_name[:64],
        role_arn=role_arn,
        policy=None,
        duration=3600,
        external_id=None,
    )
    return {
        "AWS_ACCESS_KEY_ID": assumed.access_key_id,
        "AWS_SECRET_ACCESS_KEY": assumed.secret_access_key,
        "AWS_SESSION_TOKEN": assumed.session_token,
    }


@dataclass
class TaskLaunch:
    """How to start one node's process: its environment and working directory."""

    env: dict[str, str]
    cwd: str


def build_task(
    *,
    container: dict,
    job_role_arn: str | None,
    variables: dict[str, str],
    secrets: dict[str, str],
    batch_variables: dict[str, str],
    endpoint: str,
    account: str,
    region: str,
    home: str,
    cwd: str,
    session_name: str,
) -> TaskLaunch:
    """The environment a container of this job would start with, in the order that decides
    conflicts on AWS: the job's variables, then its secrets, then Batch's own variables."""
    runtime = RUNTIME.images.runtime_for(str(container.get("image") or ""))
    bin_dir = runtime_bin(runtime) if runtime else None
    env = dict(BASE_ENVIRONMENT)
    env["PATH"] = task_path(bin_dir)
    env["HOME"] = home
    env["AWS_ENDPOINT_URL"] = endpoint
    env["AWS_REGION"] = region
    env["AWS_DEFAULT_REGION"] = region
    gpus = gpu_count(container)
    if gpus:
        env["NVIDIA_VISIBLE_DEVICES"] = ",".join(f"GPU-{uuid.uuid4()}" for _ in range(gpus))
    if job_role_arn:
        env.update(job_role_credentials(job_role_arn, account, region, session_name))
    env.update(variables)
    env.update(secrets)
    env.update(batch_variables)
    return TaskLaunch(env, cwd)


def missing_runtime_reason(image: str) -> str | None:
    """Why an image's runtime cannot run here (the emulator was started without it), or None.
    This is a fault of the emulator's set-up, not of the job, and the reason says so."""
    runtime = RUNTIME.images.runtime_for(image)
    if runtime is None or runtime_bin(runtime):
        return None
    source = RUNTIME.runtimes_source or f"no --runtimes file ({ENV_RUNTIMES})"
    return (
        f"CannotStartContainerError: the emulator has no runtime {runtime!r} installed for image "
        f"{image} (runtimes from {source}; run hack/moto/install-runtimes.sh)"
    )


def describe_configuration() -> str:
    return (
        f"images from {RUNTIME.images.source}, runtimes "
        f"{', '.join(f'{k}={v}' for k, v in sorted(RUNTIME.runtimes.items())) or 'none'}, "
        f"flowline binary {'in ' + RUNTIME.task_bin_dir if RUNTIME.task_bin_dir else 'not installed'}"
    )
