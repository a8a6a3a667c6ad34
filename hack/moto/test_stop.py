"""StopExecution of running work: the history ends at the stop (sfn_stop.py), Batch jobs end,
and a Distributed Map's children are aborted with their parent (sfn_map.py)."""

from __future__ import annotations

import json

from sfn_stop import cut_at_stop
from test_launcher import (  # noqa: F401 - emu is a fixture
    batch_env,
    batch_task,
    container_def,
    emu,
    state_machine,
    wait_execution,
    wait_for,
    wait_job,
)

RUNNING_JOB = {"FLOWLINE_EMULATOR_RUN_SECONDS": "60"}


def history_types(sfn, arn: str) -> list[str]:
    return [e["type"] for e in sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]]


def running_jobs(batch, queue: str, count: int) -> list[str]:
    listed = wait_for(
        lambda: (lambda jobs: jobs if len(jobs) >= count else None)(
            batch.list_jobs(jobQueue=queue, jobStatus="RUNNING")["jobSummaryList"]
        ),
        what=f"{count} running jobs",
    )
    return [j["jobId"] for j in listed]


def test_a_stopped_sync_task_is_aborted_never_succeeded(emu):
    setup = batch_env(emu)
    batch, sfn = setup["batch"], emu.client("stepfunctions")
    job_def = container_def(batch, env=RUNNING_JOB)
    machine = {
        "StartAt": "Run",
        "States": {"Run": {**batch_task(setup["queue"], job_def), "Next": "After"}, "After": {"Type": "Pass", "End": True}},
    }
    arn = sfn.start_execution(stateMachineArn=state_machine(emu, machine))["executionArn"]
    [job_id] = running_jobs(batch, setup["queue"], 1)
    sfn.stop_execution(executionArn=arn, error="Flowline.Stopped", cause="stopped by a test")
    described = wait_execution(sfn, arn)
    assert described["status"] == "ABORTED"
    assert (described.get("error"), described.get("cause")) == ("Flowline.Stopped", "stopped by a test")
    assert wait_job(batch, job_id, timeout=5)["statusReason"] == "Execution stopped"
    events = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
    types = [e["type"] for e in events]
    assert types == ["ExecutionStarted", "TaskStateEntered", "TaskScheduled", "TaskStarted", "TaskSubmitted", "ExecutionAborted"]
    assert events[-1]["executionAbortedEventDetails"] == {"error": "Flowline.Stopped", "cause": "stopped by a test"}
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))


def test_stopping_the_parent_aborts_map_children_and_their_jobs(emu):
    setup = batch_env(emu)
    batch, sfn = setup["batch"], emu.client("stepfunctions")
    job_def = container_def(batch, env=RUNNING_JOB)
    machine = {
        "StartAt": "Each",
        "States": {
            "Each": {
                "Type": "Map",
                "ItemsPath": "$.items",
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                    "StartAt": "Run",
                    "States": {"Run": {**batch_task(setup["queue"], job_def), "End": True}},
                },
                "End": True,
            }
        },
    }
    arn = sfn.start_execution(stateMachineArn=state_machine(emu, machine), input=json.dumps({"items": [1, 2, 3]}))[
        "executionArn"
    ]
    job_ids = running_jobs(batch, setup["queue"], 3)
    sfn.stop_execution(executionArn=arn)
    assert wait_execution(sfn, arn)["status"] == "ABORTED"
    events = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
    map_run = next(e for e in events if e["type"] == "MapRunStarted")["mapRunStartedEventDetails"]["mapRunArn"]
    run = wait_for(
        lambda: (lambda d: d if d["status"] != "RUNNING" else None)(sfn.describe_map_run(mapRunArn=map_run)),
        what="map run ended",
    )
    assert run["status"] == "ABORTED"
    assert (run["itemCounts"]["aborted"], run["itemCounts"]["running"], run["itemCounts"]["succeeded"]) == (3, 0, 0)
    assert [e["type"] for e in events][-2:] == ["MapRunAborted", "ExecutionAborted"]
    children = sfn.list_executions(mapRunArn=map_run)["executions"]
    assert sorted(c["status"] for c in children) == ["ABORTED"] * 3
    for c in children:
        assert history_types(sfn, c["executionArn"])[-1] == "ExecutionAborted"
        assert "TaskSucceeded" not in history_types(sfn, c["executionArn"])
    for job_id in job_ids:
        assert wait_job(batch, job_id, timeout=5)["statusReason"] == "Execution stopped"


def test_cut_at_stop_keeps_only_what_may_follow_a_stop():
    events = [{"id": i, "previousEventId": i - 1, "type": t} for i, t in enumerate(["ExecutionStarted", "TaskSubmitted", "TaskSucceeded", "TaskStateExited", "ExecutionAborted"], 1)]
    kept = cut_at_stop(events, 2, None, None, ended=True)
    assert [(e["id"], e["type"]) for e in kept] == [(1, "ExecutionStarted"), (2, "TaskSubmitted"), (3, "ExecutionAborted")]
    assert "executionAbortedEventDetails" not in kept[-1]
    # A worker that ended without writing ExecutionAborted still gets one.
    assert cut_at_stop(events[:3], 2, "E", None, ended=True)[-1]["executionAbortedEventDetails"] == {"error": "E"}
