"""`entrypoint.py`: Flowline's task variables mapped to Metaflow's `step` command."""

from __future__ import annotations

import pytest

from flowline_task.metaflow import entrypoint as ep

ENV = {
    "FLOWLINE_RUN_ID": "exec-1",
    "FLOWLINE_TASK_ID": "0",
    "FLOWLINE_DATASTORE_ROOT": "s3://b/root/ns/flow/",
    "FLOWLINE_ARTIFACT_URI": "s3://b/root/ns/flow/exec-1/start/0/",
    "AWS_BATCH_JOB_ATTEMPT": "2",
    "FLOWLINE_PARAM_ALPHA": "0.5",
    "FLOWLINE_PARAM_UNSET": "",
    "FLOWLINE_S3_ENDPOINT": "http://minio:9000",
    "FLOWLINE_S3_SSE": "AES256",
    "FLOWLINE_S3_RETRY_COUNT": "3",
}


def step(kind: str, **kwargs: object) -> ep.Step:
    return ep.Step(flow_file="flow.py", flow="MyFlow", name="s", kind=kind, **kwargs)  # type: ignore[arg-type]


def task(**env: str) -> ep.Task:
    return ep.task_from_env({**ENV, **env})


def test_ids_retry_count_and_parameters_come_from_the_task_variables() -> None:
    t = task()
    assert t.metaflow_run == "fl-exec-1"
    assert t.retry_count == 1
    assert t.datastore_root == "s3://b/root/ns/flow"
    assert t.parameters == {"ALPHA": "0.5"}
    assert ep.metaflow_task_id(step("linear"), t) == "t0"


def test_start_reads_the_parameters_task_made_once_by_init() -> None:
    t = task()
    assert ep.input_paths(step("start"), t) == ["fl-exec-1/_parameters/t0-params"]
    init = ep.init_command("python", step("start"), t, "local")
    assert init[-4:] == ["--run-id", "fl-exec-1", "--task-id", "t0-params"]


def test_linear_and_branch_join_read_each_parents_task_of_the_same_id() -> None:
    t = task(FLOWLINE_TASK_ID="0-2")
    assert ep.input_paths(step("linear", parents=("a", "b")), t) == ["fl-exec-1/a/t0-2", "fl-exec-1/b/t0-2"]


def test_foreach_body_reads_its_split_task_with_the_split_index() -> None:
    t = task(FLOWLINE_TASK_ID="0-1-3", FLOWLINE_FOREACH_INDEX="3")
    s = step("foreach-body", parents=("train",))
    assert ep.input_paths(s, t) == ["fl-exec-1/train/t0-1"]
    command = ep.step_command("python", s, t, "local")
    assert command[command.index("--split-index") + 1] == "3"
    assert command[command.index("--task-id") + 1] == "t0-1-3"
    assert command[command.index("--retry-count") + 1] == "1"


def test_foreach_join_reads_every_body_task() -> None:
    t = task(FLOWLINE_TASK_ID="0-1")
    s = step("foreach-join", parents=("trial",), split="train")
    assert ep.input_paths(s, t, 3) == ["fl-exec-1/trial/t0-1-0", "fl-exec-1/trial/t0-1-1", "fl-exec-1/trial/t0-1-2"]
    with pytest.raises(ep.EntrypointError, match="item count"):
        ep.input_paths(s, t)


def test_parallel_nodes_are_metaflows_control_and_worker_tasks() -> None:
    s = step("parallel", parents=("start",))
    control = task(FLOWLINE_TASK_ID="0-node-0", AWS_BATCH_JOB_NODE_INDEX="0")
    worker = task(FLOWLINE_TASK_ID="0-node-2", AWS_BATCH_JOB_NODE_INDEX="2")
    assert ep.metaflow_task_id(s, control) == "control-t0"
    assert ep.metaflow_task_id(s, worker) == "t0-node-2"
    assert ep.input_paths(s, worker) == ["fl-exec-1/start/t0"]
    command = ep.step_command("python", s, worker, "local")
    assert command[-4:] == ["--split-index", "2", "--ubf-context", "ubf_task"]
    assert ep.step_command("python", s, control, "local")[-1] == "ubf_control"
    join = step("parallel-join", parents=("gang",), num_parallel=3)
    assert ep.input_paths(join, task()) == ["fl-exec-1/gang/control-t0", "fl-exec-1/gang/t0-node-1", "fl-exec-1/gang/t0-node-2"]


def test_metaflows_settings_come_from_flowlines_and_explicit_ones_win() -> None:
    t = task()
    env = ep.metaflow_environment(ENV, t)
    assert env["METAFLOW_DATASTORE_SYSROOT_S3"] == "s3://b/root/ns/flow"
    assert env["METAFLOW_DEFAULT_DATASTORE"] == "s3"
    assert env["METAFLOW_DEFAULT_METADATA"] == "local"
    assert env["METAFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert env["METAFLOW_S3_SERVER_SIDE_ENCRYPTION"] == "AES256"
    assert env["METAFLOW_S3_RETRY_COUNT"] == "3"
    assert env["METAFLOW_INIT_ALPHA"] == "0.5"
    assert "METAFLOW_INIT_UNSET" not in env
    service = ep.metaflow_environment({**ENV, "METAFLOW_SERVICE_URL": "http://md", "METAFLOW_USER": "me"}, t)
    assert service["METAFLOW_DEFAULT_METADATA"] == "service"
    assert "METAFLOW_USER" not in service


def test_missing_or_malformed_variables_are_named() -> None:
    with pytest.raises(ep.EntrypointError, match="FLOWLINE_RUN_ID"):
        ep.task_from_env({k: v for k, v in ENV.items() if k != "FLOWLINE_RUN_ID"})
    with pytest.raises(ep.EntrypointError, match="AWS_BATCH_JOB_ATTEMPT"):
        ep.task_from_env({**ENV, "AWS_BATCH_JOB_ATTEMPT": "x"})
    with pytest.raises(ep.EntrypointError, match="FLOWLINE_FOREACH_INDEX"):
        ep.step_command("python", step("foreach-body", parents=("a",)), task(FLOWLINE_TASK_ID="0-1"), "local")
