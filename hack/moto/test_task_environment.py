"""What an exec-mode task receives: only what a Batch container would get (no variable of the
launcher's own environment), the runtime its image maps to, credentials of its job role (none
without one), and GPUs it asked for; and what an image without a runtime does (it cannot be
pulled, in held and exec mode).

Run with the emulator's venv:  $(hack/moto/install.sh | tail -n1) -m pytest hack/moto -q
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from test_launcher import (  # noqa: E402
    ACCOUNT,
    IMAGE,
    REGION,
    _start,
    _stop,
    batch_env,
    emu,  # noqa: F401 - fixture
    runtimes_file,
    uid,
    wait_job,
)

CANARY = "FLOWLINE_TEST_CANARY"
JOB_ROLE = f"arn:aws:iam::{ACCOUNT}:role/flowline-job"
DUMP = (
    "import json, os, sys; "
    "json.dump({'env': dict(os.environ), 'cwd': os.getcwd(), 'cwd_files': os.listdir('.'), "
    "'home_files': os.listdir(os.environ['HOME']), 'python': sys.executable}, open(os.environ['OUT'], 'w'))"
)
CALLER = (
    "import boto3, json, os; "
    "json.dump(boto3.client('sts').get_caller_identity()['Arn'], open(os.environ['OUT'], 'w'))"
)
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
PULL_DENIED = (
    "CannotPullContainerError: Error response from daemon: pull access denied for {}, repository does not "
    "exist or may require 'docker login': denied: requested access to the resource is denied"
)


@pytest.fixture(scope="module")
def task_emu(tmp_path_factory):
    """An exec-mode emulator whose own environment carries a canary and test credentials, which
    no task may see."""
    saved = {k: os.environ.get(k) for k in (CANARY, "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ.update({CANARY: "leaked", "AWS_ACCESS_KEY_ID": "launcher-key", "AWS_SECRET_ACCESS_KEY": "x"})
    try:
        emulator = _start(tmp_path_factory, "--exec-jobs")
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    yield emulator
    _stop(emulator)


def runtime_bins(tmp_path_factory) -> dict[str, str]:
    lines = runtimes_file(tmp_path_factory).read_text().split()
    return {name: os.path.join(venv, "bin") for name, _, venv in (line.partition("=") for line in lines)}


def register(batch, command: list[str], image: str = IMAGE, **container) -> str:
    return batch.register_job_definition(
        jobDefinitionName=uid("task"),
        type="container",
        containerProperties={
            "image": image,
            "command": command,
            "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "512"}],
            "environment": [{"name": "FROM_DEFINITION", "value": "d"}],
            **container,
        },
    )["jobDefinitionArn"]


def run(setup: dict, job_def: str, out: Path, **submit) -> dict:
    overrides = submit.pop("containerOverrides", {})
    overrides.setdefault("environment", []).append({"name": "OUT", "value": str(out)})
    job_id = setup["batch"].submit_job(
        jobName="task", jobQueue=setup["queue"], jobDefinition=job_def, containerOverrides=overrides, **submit
    )["jobId"]
    return wait_job(setup["batch"], job_id, timeout=30)


def test_task_gets_only_what_a_container_gets(task_emu, tmp_path, tmp_path_factory):
    setup = batch_env(task_emu)
    job_def = register(setup["batch"], ["python3", "-c", DUMP])
    out = tmp_path / "task.json"
    job = run(
        setup, job_def, out, containerOverrides={"environment": [{"name": "FROM_OVERRIDE", "value": "o"}]}
    )
    assert job["status"] == "SUCCEEDED", job.get("statusReason")
    seen = json.loads(out.read_text())
    env = seen["env"]
    python_bin = runtime_bins(tmp_path_factory)["python"]
    expected = {
        "PATH": f"{python_bin}:{SYSTEM_PATH}",
        "AWS_ENDPOINT_URL": task_emu.endpoint,
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_BATCH_JOB_ID": job["jobId"],
        "AWS_BATCH_JOB_ATTEMPT": "1",
        "AWS_BATCH_JQ_NAME": setup["queue"].rsplit("/", 1)[1],
        "AWS_BATCH_CE_NAME": "flowline-emulator",
        # Set by the ECS agent in every container; Metaflow's @batch reads it.
        "AWS_EXECUTION_ENV": "AWS_ECS_EC2",
        "FROM_DEFINITION": "d",
        "FROM_OVERRIDE": "o",
        "OUT": str(out),
    }
    assert {k: env.get(k) for k in expected} == expected
    # Nothing else but HOME, the locale, and what Python itself adds at start.
    assert set(env) - set(expected) <= {"HOME", "LANG", "LC_CTYPE"}, sorted(set(env) - set(expected))
    assert CANARY not in env and "MOTO_PORT" not in env
    assert "AWS_ACCESS_KEY_ID" not in env, "a job without a job role got credentials"
    assert seen["python"].startswith(python_bin)
    assert seen["cwd_files"] == [] and seen["home_files"] == []
    assert seen["cwd"] != env["HOME"]
    assert seen["cwd"].startswith(str(task_emu.log_dir)) and env["HOME"].startswith(str(task_emu.log_dir))

    # Each job (and each attempt) starts in its own fresh folders.
    second = tmp_path / "second.json"
    assert run(setup, job_def, second)["status"] == "SUCCEEDED"
    again = json.loads(second.read_text())
    assert again["cwd"] != seen["cwd"] and again["env"]["HOME"] != env["HOME"]


def test_job_role_credentials_come_from_sts(task_emu, tmp_path):
    setup = batch_env(task_emu)
    out = tmp_path / "caller.json"
    job = run(setup, register(setup["batch"], ["python3", "-c", CALLER], jobRoleArn=JOB_ROLE), out)
    assert job["status"] == "SUCCEEDED", job.get("statusReason")
    caller = json.loads(out.read_text())
    assert caller.startswith(f"arn:aws:sts::{ACCOUNT}:assumed-role/flowline-job/"), caller

    dump = tmp_path / "env.json"
    assert run(setup, register(setup["batch"], ["python3", "-c", DUMP], jobRoleArn=JOB_ROLE), dump)[
        "status"
    ] == "SUCCEEDED"
    env = json.loads(dump.read_text())["env"]
    assert env["AWS_ACCESS_KEY_ID"] != "launcher-key" and env["AWS_SESSION_TOKEN"]

    # Without a job role, boto3 in the task finds no credentials at all.
    failing = tmp_path / "none.json"
    job = run(setup, register(setup["batch"], ["python3", "-c", CALLER]), failing)
    assert job["status"] == "FAILED" and job["container"]["exitCode"] == 1
    log = (task_emu.log_dir / f"{job['container']['logStreamName']}.log").read_text()
    assert "NoCredentialsError" in log, log


def test_pip_install_boto3_is_satisfied_offline(task_emu, tmp_path):
    """The examples run `pip install boto3` before their script; the runtime has it."""
    setup = batch_env(task_emu)
    script = "pip install --quiet --root-user-action=ignore boto3 && python3 -c 'import boto3; print(boto3.__version__)' > \"$OUT\""
    out = tmp_path / "version"
    job = run(setup, register(setup["batch"], ["sh", "-c", script]), out)
    assert job["status"] == "SUCCEEDED", job.get("statusReason")
    assert out.read_text().strip()


def gpu_training_script() -> str:
    flow = yaml.safe_load((HERE.parents[1] / "examples/manifests/gpu-training.yaml").read_text())
    [train] = [s for s in flow["spec"]["steps"] if s["name"] == "train"]
    assert train["image"].startswith("pytorch/pytorch:")
    return train["args"][0]


def test_gpu_job_sees_its_gpus_and_runs_the_gpu_training_example(task_emu, tmp_path):
    setup = batch_env(task_emu)
    gpus = [{"type": "VCPU", "value": "8"}, {"type": "MEMORY", "value": "60000"}, {"type": "GPU", "value": "2"}]
    image = "pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime"
    dump = tmp_path / "env.json"
    job = run(setup, register(setup["batch"], ["python3", "-c", DUMP], image=image, resourceRequirements=gpus), dump)
    assert job["status"] == "SUCCEEDED", job.get("statusReason")
    devices = json.loads(dump.read_text())["env"]["NVIDIA_VISIBLE_DEVICES"].split(",")
    assert len(devices) == 2 and all(d.startswith("GPU-") for d in devices)

    # The example's own train step, with its typed parameters as the controller passes them.
    params = {"environment": [{"name": "FLOWLINE_PARAMETERS", "value": json.dumps({"epochs": 2, "learning_rate": 0.01})}]}
    command = ["python3", "-c", gpu_training_script()]
    job = run(setup, register(setup["batch"], command, image=image, resourceRequirements=gpus), tmp_path / "x", containerOverrides=params)
    assert job["status"] == "SUCCEEDED", job.get("statusReason")
    log = (task_emu.log_dir / f"{job['container']['logStreamName']}.log").read_text()
    assert "epoch 0: loss" in log and "epoch 1: loss" in log and "epoch 2" not in log, log
    assert devices[0] not in log  # each attempt gets its own devices

    # Without a GPU, the same step fails on its own assertion.
    job = run(setup, register(setup["batch"], command, image=image), tmp_path / "y", containerOverrides=params)
    assert job["status"] == "FAILED" and job["container"]["exitCode"] == 1
    log = (task_emu.log_dir / f"{job['container']['logStreamName']}.log").read_text()
    assert "no GPU visible to the container" in log, log


@pytest.mark.parametrize("mode", ["held", "exec"])
def test_unmapped_image_cannot_be_pulled(mode, emu, task_emu, tmp_path):  # noqa: F811
    emulator = task_emu if mode == "exec" else emu
    setup = batch_env(emulator)
    out = tmp_path / "ran"
    job_def = register(
        setup["batch"], ["python3", "-c", "open(__import__('os').environ['OUT'], 'w')"], image="flowline/nowhere:1.0"
    )
    job = run(setup, job_def, out)
    reason = PULL_DENIED.format("flowline/nowhere")
    assert job["status"] == "FAILED"
    assert job["statusReason"] == reason
    assert job["attempts"][-1]["container"]["reason"] == reason
    assert "startedAt" not in job
    assert not out.exists()


def test_every_image_of_the_examples_and_e2e_tests_is_mapped():
    """The emulator must run every Flow the repository ships; an unmapped image would fail it."""
    import task_runtime

    images = task_runtime.load_images(HERE / "images.json")
    repo = HERE.parents[1]
    used: set[str] = set()
    for path in list((repo / "examples/manifests").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            spec = (document or {}).get("spec") or {}
            used.update(s["image"] for s in spec.get("steps") or [] if s.get("image"))
            if (spec.get("batch") or {}).get("image"):
                used.add(spec["batch"]["image"])
    for path in (repo / "tests/e2e").glob("*.rs"):
        text = path.read_text()
        used.update(part.split('"')[0] for part in text.split('image("')[1:])
        used.update(part.split()[0].strip("\"',}") for part in text.split("image: ")[1:] if part.split())
    used.add("python:3.12-slim")  # the controller's default image (src/settings.rs)
    assert used, "no images found"
    # Registries under the reserved `.invalid` domain stand for images that cannot be pulled.
    unmapped = sorted(i for i in used if images.runtime_for(i) is None and ".invalid/" not in i)
    assert unmapped == [], unmapped


def test_flowline_is_on_a_tasks_path_only_when_the_emulator_is_told_where_it_is(task_emu, tmp_path, tmp_path_factory):
    # Without --task-bin-dir (task_emu), a task finds no flowline, as in an image without it.
    setup = batch_env(task_emu)
    missing = run(setup, register(setup["batch"], ["flowline", "task", "--", "true"]), tmp_path / "none.json")
    assert missing["status"] == "FAILED", missing

    bin_dir = tmp_path / "task-bin"
    bin_dir.mkdir()
    fake = bin_dir / "flowline"
    fake.write_text('#!/bin/sh\necho "$@" > "$OUT"\n')
    fake.chmod(0o755)
    emulator = _start(tmp_path_factory, "--exec-jobs", "--task-bin-dir", str(bin_dir))
    try:
        setup = batch_env(emulator)
        out = tmp_path / "args.txt"
        job = run(setup, register(setup["batch"], ["flowline", "task", "--", "true"]), out)
        assert job["status"] == "SUCCEEDED", job
        assert out.read_text().strip() == "task -- true"
        dump = tmp_path / "env.json"
        run(setup, register(setup["batch"], ["python3", "-c", DUMP]), dump)
        path = json.loads(dump.read_text())["env"]["PATH"].split(":")
        runtime_bin = runtime_bins(tmp_path_factory)["python"]
        assert path == [runtime_bin, str(bin_dir), *SYSTEM_PATH.split(":")], path
    finally:
        _stop(emulator)
