"""Distributed Map runs in the emulator: one child execution per item (sfn_map.py)."""

from __future__ import annotations

import json
import time

import pytest

from sfn_map import tolerance_exceeded
from test_launcher import emu, state_machine, uid, wait_execution, wait_for  # noqa: F401 - emu is a fixture


def distributed_map(processor_states: dict, start_at: str, **map_fields) -> dict:
    return {
        "StartAt": "Each",
        "States": {
            "Each": {
                "Type": "Map",
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                    "StartAt": start_at,
                    "States": processor_states,
                },
                "End": True,
                **map_fields,
            }
        },
    }


PASS = {"Work": {"Type": "Pass", "End": True}}
WAIT_1S = {"Work": {"Type": "Wait", "Seconds": 1, "End": True}}
FAIL_ON_TWO = {
    "Check": {
        "Type": "Choice",
        "Choices": [{"Variable": "$.v", "NumericEquals": 2, "Next": "Boom"}],
        "Default": "Fine",
    },
    "Boom": {"Type": "Fail", "Error": "Item.Bad", "Cause": "item 2"},
    "Fine": {"Type": "Pass", "End": True},
}


def map_run_of(sfn, execution_arn: str) -> str:
    events = sfn.get_execution_history(executionArn=execution_arn, maxResults=1000)["events"]
    return next(e for e in events if e["type"] == "MapRunStarted")["mapRunStartedEventDetails"]["mapRunArn"]


def all_children(sfn, map_run: str, **filters) -> list[dict]:
    pages = sfn.get_paginator("list_executions").paginate(mapRunArn=map_run, PaginationConfig={"PageSize": 2}, **filters)
    return [e for page in pages for e in page["executions"]]


def run_map(emu, definition: dict, payload: dict) -> tuple[object, str, dict]:
    sfn = emu.client("stepfunctions")
    arn = sfn.start_execution(stateMachineArn=state_machine(emu, definition), input=json.dumps(payload))["executionArn"]
    return sfn, arn, wait_execution(sfn, arn, timeout=60)


def test_each_item_runs_in_its_own_child_execution(emu):
    definition = distributed_map(
        PASS, "Work", ItemsPath="$.items", ItemSelector={"v.$": "$$.Map.Item.Value", "at.$": "$$.Map.Item.Index", "tag.$": "$.tag"}
    )
    sfn, arn, done = run_map(emu, definition, {"items": [10, 20, 30], "tag": "t"})
    assert done["status"] == "SUCCEEDED"
    # The Map state's output: every child's output, in item order.
    assert json.loads(done["output"]) == [{"v": v, "at": i, "tag": "t"} for i, v in enumerate([10, 20, 30])]
    map_run = map_run_of(sfn, arn)
    described = sfn.describe_map_run(mapRunArn=map_run)
    assert described["status"] == "SUCCEEDED"
    for counts in (described["itemCounts"], described["executionCounts"]):
        assert {k: counts[k] for k in ("pending", "running", "succeeded", "failed", "aborted", "total")} == {
            "pending": 0, "running": 0, "succeeded": 3, "failed": 0, "aborted": 0, "total": 3,
        }
    children = all_children(sfn, map_run)  # pages of 2: the listing pages
    assert len(children) == 3 and len({c["executionArn"] for c in children}) == 3
    prefix = map_run.replace(":mapRun:", ":execution:").rsplit(":", 1)[0] + ":"
    inputs = []
    for listed in children:
        assert listed["executionArn"].startswith(prefix) and listed["status"] == "SUCCEEDED"
        assert listed["mapRunArn"] == map_run
        child = sfn.describe_execution(executionArn=listed["executionArn"])
        assert child["mapRunArn"] == map_run and child["name"] == listed["executionArn"].rsplit(":", 1)[1]
        assert json.loads(child["output"]) == json.loads(child["input"])
        inputs.append(json.loads(child["input"])["v"])
        history = sfn.get_execution_history(executionArn=listed["executionArn"])["events"]
        assert [e["type"] for e in history] == ["ExecutionStarted", "PassStateEntered", "PassStateExited", "ExecutionSucceeded"]
    assert sorted(inputs) == [10, 20, 30]
    # Children belong to the map run, not to the parent's machine.
    listed_parent = sfn.list_executions(stateMachineArn=done["stateMachineArn"])["executions"]
    assert [e["executionArn"] for e in listed_parent] == [arn]
    assert all_children(sfn, map_run, statusFilter="FAILED") == []
    with pytest.raises(sfn.exceptions.ResourceNotFound):
        sfn.list_executions(mapRunArn=map_run + "x")


def test_items_are_read_from_s3(emu):
    s3 = emu.client("s3")
    bucket = uid("items")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="in/items.json", Body=json.dumps([{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}]))
    reader = {
        "Resource": "arn:aws:states:::s3:getObject",
        "ReaderConfig": {"InputType": "JSON"},
        "Parameters": {"Bucket": bucket, "Key": "in/items.json"},
    }
    sfn, arn, done = run_map(emu, distributed_map(PASS, "Work", ItemReader=reader, MaxConcurrency=2), {})
    assert done["status"] == "SUCCEEDED", done
    assert json.loads(done["output"]) == [{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}]
    assert len(all_children(sfn, map_run_of(sfn, arn))) == 4


def max_overlap(children: list[dict]) -> int:
    """The most children RUNNING at one instant, from their start and stop dates."""
    edges = [(c["startDate"], 1) for c in children] + [(c["stopDate"], -1) for c in children]
    most = current = 0
    for _, step in sorted(edges, key=lambda e: (e[0], e[1])):  # an end before a start at the same instant
        current += step
        most = max(most, current)
    return most


def test_max_concurrency_bounds_running_children(emu):
    sfn = emu.client("stepfunctions")
    definition = distributed_map(WAIT_1S, "Work", ItemsPath="$.items", MaxConcurrency=3)
    arn = sfn.start_execution(
        stateMachineArn=state_machine(emu, definition), input=json.dumps({"items": list(range(20))})
    )["executionArn"]
    map_run = wait_for(lambda: _try_map_run(sfn, arn), what="map run started")
    seen_running = []
    while sfn.describe_execution(executionArn=arn)["status"] == "RUNNING":
        counts = sfn.describe_map_run(mapRunArn=map_run)["itemCounts"]
        listed = len(all_children(sfn, map_run, statusFilter="RUNNING"))
        seen_running.append((counts["running"], listed))
        assert counts["running"] <= 3 and listed <= 3, seen_running
        assert counts["pending"] + counts["running"] + counts["succeeded"] == 20, counts
        time.sleep(0.15)
    assert sfn.describe_execution(executionArn=arn)["status"] == "SUCCEEDED"
    assert max(r for r, _ in seen_running) == 3  # the limit was reached, not merely respected
    children = all_children(sfn, map_run)
    assert len(children) == 20
    assert max_overlap(children) <= 3
    counts = sfn.describe_map_run(mapRunArn=map_run)["executionCounts"]
    assert counts["total"] == 20 and counts["succeeded"] == 20 and counts["running"] == 0


def _try_map_run(sfn, arn: str) -> str | None:
    try:
        return map_run_of(sfn, arn)
    except StopIteration:
        return None


def test_a_failed_child_fails_the_map_and_starts_no_more(emu):
    definition = distributed_map(
        FAIL_ON_TWO, "Check", ItemsPath="$.items", ItemSelector={"v.$": "$$.Map.Item.Value"}, MaxConcurrency=1
    )
    sfn, arn, done = run_map(emu, definition, {"items": [1, 2, 3, 4]})
    assert done["status"] == "FAILED"
    assert done["error"] == "States.ExceedToleratedFailureThreshold"
    map_run = map_run_of(sfn, arn)
    described = sfn.describe_map_run(mapRunArn=map_run)
    assert described["status"] == "FAILED"
    items = described["itemCounts"]
    assert (items["succeeded"], items["failed"], items["pending"], items["running"], items["total"]) == (1, 1, 2, 0, 4)
    children = all_children(sfn, map_run)
    assert sorted(c["status"] for c in children) == ["FAILED", "SUCCEEDED"]
    failed = next(c for c in children if c["status"] == "FAILED")
    assert sfn.describe_execution(executionArn=failed["executionArn"])["error"] == "Item.Bad"
    types = [e["type"] for e in sfn.get_execution_history(executionArn=arn)["events"]]
    assert types[-3:] == ["MapRunFailed", "MapStateFailed", "ExecutionFailed"], types


def test_tolerated_failures_let_the_map_succeed(emu):
    definition = distributed_map(
        FAIL_ON_TWO, "Check", ItemsPath="$.items", ItemSelector={"v.$": "$$.Map.Item.Value"}, ToleratedFailureCount=1
    )
    sfn, arn, done = run_map(emu, definition, {"items": [1, 2, 3]})
    assert done["status"] == "SUCCEEDED", done
    # A failed item leaves null in its place.
    assert json.loads(done["output"]) == [{"v": 1}, None, {"v": 3}]
    items = sfn.describe_map_run(mapRunArn=map_run_of(sfn, arn))["itemCounts"]
    assert (items["succeeded"], items["failed"]) == (2, 1)


def test_tolerance_thresholds():
    # Neither given: any failure exceeds.
    assert tolerance_exceeded(1, 10, 0, 0.0) and not tolerance_exceeded(0, 10, 0, 0.0)
    # A count alone.
    assert not tolerance_exceeded(2, 10, 2, 0.0) and tolerance_exceeded(3, 10, 2, 0.0)
    # A percentage alone (of all items).
    assert not tolerance_exceeded(3, 10, 0, 30.0) and tolerance_exceeded(4, 10, 0, 30.0)
    # Both: whichever is exceeded first.
    assert tolerance_exceeded(3, 100, 2, 50.0) and tolerance_exceeded(6, 10, 10, 50.0)
