"""save/load through the wrapper's folders and straight through S3, against the emulator."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from conftest import Task

import flowline_task
from flowline_task import FlowlineTaskError, NotFoundError


def test_save_and_load_through_s3(task: Task) -> None:
    start = task.become("start")
    assert flowline_task.save("config.json", {"layers": [1, 2]}) == start + "config.json"
    flowline_task.save("model", {"weights": (1.5, 2.5), "names": {"a"}})
    flowline_task.save("nested/rows.json", [1, 2, 3])
    assert task.keys("root/team/flow/run-1/start/0/") == [
        "root/team/flow/run-1/start/0/config.json",
        "root/team/flow/run-1/start/0/model",
        "root/team/flow/run-1/start/0/nested/rows.json",
    ]
    # JSON is plain JSON, readable by a step in any language; anything else is pickled.
    body = task.s3.get_object(Bucket=task.bucket, Key="root/team/flow/run-1/start/0/config.json")["Body"].read()
    assert json.loads(body) == {"layers": [1, 2]}

    task.become("train", inputs=("start/0/",))
    assert flowline_task.load("config.json") == {"layers": [1, 2]}
    assert flowline_task.load("model", step="start") == {"weights": (1.5, 2.5), "names": {"a"}}
    assert flowline_task.load("nested/rows.json") == [1, 2, 3]
    with pytest.raises(NotFoundError) as err:
        flowline_task.load("missing.json")
    assert "'missing.json'" in str(err.value) and start + "missing.json" in str(err.value)
    with pytest.raises(NotFoundError, match="step 'nope'.*the parents are start"):
        flowline_task.load("config.json", step="nope")


def test_a_foreach_join_loads_every_task_in_item_order(task: Task) -> None:
    for index in (10, 2, 0, 1):  # saved out of order; task ids sort naturally
        task.become("fan", f"0-{index}")
        flowline_task.save("score.json", index * 1.5)
    task.become("join", inputs=("fan/",))
    assert flowline_task.load_all("score.json") == [0.0, 1.5, 3.0, 15.0]
    with pytest.raises(FlowlineTaskError, match=r"'score.json' is in 4 parent tasks .*fan/0-0.*use load_all"):
        flowline_task.load("score.json")


def test_an_inner_join_loads_only_its_own_outer_iterations_tasks(task: Task) -> None:
    for outer in (0, 1):
        for inner in (0, 1):
            task.become("inner", f"0-{outer}-{inner}")
            flowline_task.save("v.json", [outer, inner])
    task.become("inner_join", "0-1", inputs=("inner/",))
    assert flowline_task.load_all("v.json") == [[1, 0], [1, 1]]


def test_save_and_load_through_the_wrappers_folders(task: Task, tmp_path: Path) -> None:
    out = tmp_path / "out"
    task.become("start", FLOWLINE_OUTPUT_DIR=str(out))
    assert flowline_task.save("config.json", {"lr": 0.1}) == str(out / "config.json")
    flowline_task.save("model", (1, 2))
    assert json.loads((out / "config.json").read_text()) == {"lr": 0.1}
    assert pickle.loads((out / "model").read_bytes()) == (1, 2)
    assert task.keys() == []  # the wrapper uploads the folder, not the helper

    # The wrapper's layout: <input>/<step>/ for a step's only parent task, <input>/<step>/<task>/
    # for the tasks of a foreach (a whole-step prefix) or the nodes of a multi-node step.
    inputs = tmp_path / "in"
    (inputs / "start").mkdir(parents=True)
    (out / "config.json").rename(inputs / "start" / "config.json")
    for node in ("0-node-0", "0-node-1"):
        (inputs / "train" / node).mkdir(parents=True)
        (inputs / "train" / node / "loss.json").write_text(json.dumps(node))
    for index in (0, 1):
        (inputs / "fan" / f"0-{index}").mkdir(parents=True)
        (inputs / "fan" / f"0-{index}" / "x.json").write_text(str(index))
    task.become(
        "join",
        inputs=("start/0/", "train/0-node-0/", "train/0-node-1/", "fan/"),
        FLOWLINE_INPUT_DIR=str(inputs),
    )
    assert flowline_task.load("config.json") == {"lr": 0.1}
    assert flowline_task.load_all("loss.json", step="train") == ["0-node-0", "0-node-1"]
    assert flowline_task.load_all("x.json") == [0, 1]
    with pytest.raises(NotFoundError) as err:
        flowline_task.load("model")
    assert str(inputs / "start" / "model") in str(err.value)
    assert task.keys() == []  # nothing was read from S3 either: the bucket is empty


def test_artifact_names_and_values_are_checked(task: Task) -> None:
    task.become("start")
    with pytest.raises(FlowlineTaskError, match=r"'bad.json' ends in .json but its value is not JSON-serialisable"):
        flowline_task.save("bad.json", {1, 2})
    for name in ("../escape", "/abs", "dir/", "_task.json"):
        with pytest.raises(ValueError, match=repr(name).replace(".", r"\.")):
            flowline_task.save(name, 1)


def test_without_a_destination_save_names_the_variables(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(flowline_task.ConfigError, match="FLOWLINE_OUTPUT_DIR nor FLOWLINE_ARTIFACT_URI"):
        flowline_task.save("x.json", 1)
