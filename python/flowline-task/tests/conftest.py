"""Starts the repository's AWS emulator (hack/moto/launcher.py) once per session, with the
launcher tests' own helper, in exec mode (Batch jobs run in the emulator's runtimes), and gives
each test a clean task environment pointing at it.

Run with the emulator's venv (it has moto, boto3 and pytest):
    PYTHONPATH=python/flowline-task/src "$(hack/moto/install.sh | tail -n1)" -m pytest python/flowline-task -q
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

MOTO = Path(__file__).resolve().parents[3] / "hack" / "moto"
sys.path.insert(0, str(MOTO))

from test_launcher import REGION, Emulator, _start, _stop  # noqa: E402


@pytest.fixture(scope="session")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    emulator = _start(tmp_path_factory, "--exec-jobs")
    yield emulator
    _stop(emulator)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No task contract variable and no AWS configuration of the host."""
    for name in list(os.environ):
        if name.startswith(("FLOWLINE_", "AWS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    return monkeypatch


class Task:
    """A task's environment against the emulator: bucket, run prefix and a way to become a
    given step's task."""

    def __init__(self, emu: Emulator, env: pytest.MonkeyPatch) -> None:
        self.emu = emu
        self.env = env
        self.s3: Any = emu.client("s3")
        self.bucket = f"flowline-{uuid.uuid4().hex[:10]}"
        self.s3.create_bucket(Bucket=self.bucket)
        self.run = f"s3://{self.bucket}/root/team/flow/run-1/"
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "FLOWLINE_S3_ENDPOINT": emu.endpoint,
            "FLOWLINE_FLOW": "flow",
            "FLOWLINE_NAMESPACE": "team",
            "FLOWLINE_RUN_ID": "run-1",
        }.items():
            env.setenv(name, value)

    def become(self, step: str, task: str = "0", inputs: tuple[str, ...] = (), **extra: str) -> str:
        """Sets the variables of task `step/task` with the given parent prefixes (relative to
        the run: `start/0/` or `fan/`); returns its artifact prefix."""
        uri = f"{self.run}{step}/{task}/"
        self.env.setenv("FLOWLINE_STEP", step)
        self.env.setenv("FLOWLINE_TASK_ID", task)
        self.env.setenv("FLOWLINE_ARTIFACT_URI", uri)
        self.env.setenv("FLOWLINE_INPUT_URIS", ",".join(self.run + i for i in inputs))
        for name in ("FLOWLINE_INPUT_DIR", "FLOWLINE_OUTPUT_DIR"):
            self.env.delenv(name, raising=False)
        for name, value in extra.items():
            self.env.setenv(name, value)
        return uri

    def keys(self, prefix: str = "") -> list[str]:
        listing = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return sorted(o["Key"] for o in listing.get("Contents", []))


@pytest.fixture
def task(emu: Emulator, clean_env: pytest.MonkeyPatch) -> Task:
    return Task(emu, clean_env)
