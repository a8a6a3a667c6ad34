"""`graph.py`: Metaflow's graph, decorators and parameters as `flowline import metaflow` reads
them, and what cannot be expressed named in errors and warnings."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("metaflow")

from flowline_task.metaflow import graph  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "metaflow"

HEADER = "from metaflow import *\nfrom metaflow import FlowSpec, step\n"


def describe_source(tmp_path: Path, source: str, name: str = "flow.py") -> dict[str, Any]:
    path = tmp_path / name
    path.write_text(HEADER + source)
    flow = graph.load_flow(path)
    graph.lint(flow)
    return graph.describe(flow, path.name)


def steps(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["name"]: step for step in document["steps"]}


def test_branch_join_example_gives_kinds_parents_and_batch_fields() -> None:
    flow = graph.load_flow(EXAMPLES / "branch_join.py")
    document = graph.describe(flow, "branch_join.py")
    by_name = steps(document)
    assert document["flow"] == "BranchJoinFlow"
    assert by_name["start"]["kind"] == "start"
    assert by_name["start"]["next"] == ["double", "square"]
    assert by_name["join"]["join"] is True
    assert by_name["join"]["kind"] == "linear"
    assert by_name["join"]["parents"] == ["double", "square"]
    assert by_name["double"]["batch"] == {"cpu": 1, "memory": 2048}
    assert document["errors"] == [] and document["warnings"] == []


def test_nested_foreach_joins_name_their_split() -> None:
    document = graph.describe(graph.load_flow(EXAMPLES / "foreach.py"), "foreach.py")
    by_name = steps(document)
    assert by_name["start"]["foreach"] and by_name["train"]["foreach"]
    assert by_name["train"]["kind"] == "foreach-body"
    assert by_name["trial"]["kind"] == "foreach-body"
    assert by_name["join_seeds"]["kind"] == "foreach-join"
    assert by_name["join_seeds"]["split"] == "train"
    assert by_name["join_rates"]["split"] == "start"


def test_parallel_gives_the_node_count_and_its_join_the_split() -> None:
    document = graph.describe(graph.load_flow(EXAMPLES / "parallel_training.py"), "p.py")
    by_name = steps(document)
    assert by_name["start"]["numParallel"] == 3
    assert by_name["start"]["foreach"] is False
    assert by_name["distributed_training"]["kind"] == "parallel"
    assert by_name["distributed_training"]["numNodes"] == 3
    assert by_name["join"]["kind"] == "parallel-join"
    assert by_name["join"]["split"] == "start"


def test_every_batch_option_maps_field_by_field(tmp_path: Path) -> None:
    document = describe_source(
        tmp_path,
        """
class OptionsFlow(FlowSpec):
    @batch(cpu=4, memory=8000, gpu=2, image="my-image:1", queue="q", iam_role="arn:aws:iam::123456789012:role/r",
           execution_role="arn:aws:iam::123456789012:role/e", shared_memory=100, max_swap=200, swappiness=10,
           use_tmpfs=True, tmpfs_size=300, tmpfs_path="/fast", tmpfs_tempdir=False,
           aws_batch_tags={"team": "ml"})
    @step
    def start(self):
        self.next(self.neuron)

    @batch(inferentia=1)
    @resources(cpu=8, memory=1000)
    @step
    def neuron(self):
        self.next(self.end)

    @batch(trainium=2)
    @step
    def end(self):
        pass
""",
    )
    by_name = steps(document)
    assert by_name["start"]["batch"] == {
        "cpu": 4,
        "memory": 8000,
        "gpu": 2,
        "image": "my-image:1",
        "queue": "q",
        "iamRole": "arn:aws:iam::123456789012:role/r",
        "executionRole": "arn:aws:iam::123456789012:role/e",
        "sharedMemory": 100,
        "maxSwap": 200,
        "swappiness": 10,
        "tmpfs": {"size": 300, "path": "/fast", "tempdir": False},
        "tags": {"team": "ml"},
    }
    # @resources and @batch together: the larger value wins, as in Metaflow.
    assert by_name["neuron"]["batch"] == {"inferentia": 1, "cpu": 8, "memory": 4096}
    assert by_name["end"]["batch"] == {"trainium": 2}


def test_retry_catch_and_timeout_give_batch_attempts_within_metaflows_limit(tmp_path: Path) -> None:
    document = describe_source(
        tmp_path,
        """
class RetryFlow(FlowSpec):
    @retry(times=2)
    @step
    def start(self):
        self.next(self.caught)

    @catch(var="e")
    @timeout(minutes=2)
    @step
    def caught(self):
        self.next(self.end)

    @step
    def end(self):
        pass
""",
    )
    by_name = steps(document)
    assert (by_name["start"]["retries"], by_name["start"]["userCodeRetries"]) == (2, 2)
    # @catch's fallback attempts come after the user code's.
    assert (by_name["caught"]["retries"], by_name["caught"]["userCodeRetries"]) == (3, 0)
    assert by_name["caught"]["timeoutSeconds"] == 120 + graph.TIMEOUT_GRACE_SECONDS
    assert "timeoutSeconds" not in by_name["start"]


def test_too_many_attempts_is_an_error(tmp_path: Path) -> None:
    document = describe_source(
        tmp_path,
        """
class ManyFlow(FlowSpec):
    @catch
    @retry(times=4)
    @step
    def start(self):
        self.next(self.end)

    @step
    def end(self):
        pass
""",
    )
    assert any("more than Metaflow's 6" in error for error in document["errors"]), document


def test_parameters_keep_types_defaults_and_required(tmp_path: Path) -> None:
    document = describe_source(
        tmp_path,
        """
class ParamFlow(FlowSpec):
    alpha = Parameter("alpha", default=0.5, help="rate")
    items = Parameter("n-items", default=3)
    config = Parameter("config", default={"a": 1}, type=JSONType)
    flag = Parameter("flag", default=False)
    who = Parameter("who", required=True)

    @step
    def start(self):
        self.next(self.end)

    @step
    def end(self):
        pass
""",
    )
    by_name = {p["name"]: p for p in document["parameters"]}
    assert by_name["alpha"] == {"name": "alpha", "type": "Float", "default": "0.5", "description": "rate"}
    assert by_name["n_items"] == {"name": "n_items", "type": "Int", "default": "3", "metaflowName": "n-items"}
    assert by_name["config"]["type"] == "JSON"
    assert json.loads(by_name["config"]["default"]) == {"a": 1}
    assert by_name["flag"] == {"name": "flag", "type": "Bool", "default": "false"}
    assert by_name["who"] == {"name": "who", "type": "String", "required": True}


def test_schedule_and_s3_trigger(tmp_path: Path) -> None:
    scheduled = describe_source(
        tmp_path,
        """
@schedule(cron="0 6 ? * MON *")
class CronFlow(FlowSpec):
    @step
    def start(self):
        self.next(self.end)

    @step
    def end(self):
        pass
""",
        "cron.py",
    )
    assert scheduled["schedule"] == {"cron": "0 6 * * MON"}
    daily = describe_source(
        tmp_path,
        """
@schedule(daily=True)
@trigger(event={"name": "s3", "filters": {"bucket": "incoming", "prefix": "raw/"}})
class DailyFlow(FlowSpec):
    @step
    def start(self):
        self.next(self.end)

    @step
    def end(self):
        pass
""",
        "daily.py",
    )
    assert daily["schedule"] == {"cron": "0 0 * * *"}
    assert daily["trigger"] == {"s3": {"bucket": "incoming", "prefix": "raw/"}}


@pytest.mark.parametrize(
    ("decorators", "step_decorator", "named"),
    [
        ("", "@conda(packages={'pandas': '2.2.2'})", "@conda"),
        ("", "@pypi(packages={'pandas': '2.2.2'})", "@pypi"),
        ("@project(name='p')", "", "@project"),
        ("@trigger(event='data-ready')", "", "@trigger(event='data-ready')"),
        ("@trigger(event='s3')", "", "needs the bucket"),
        ("", "@batch(efs_volumes=['fs-1'])", "efs_volumes"),
    ],
)
def test_what_cannot_be_expressed_is_an_error_naming_it(
    tmp_path: Path, decorators: str, step_decorator: str, named: str
) -> None:
    document = describe_source(
        tmp_path,
        f"""
{decorators}
class NoFlow(FlowSpec):
    {step_decorator}
    @step
    def start(self):
        self.next(self.end)

    @step
    def end(self):
        pass
""",
    )
    assert any(named in error for error in document["errors"]), document["errors"]


def test_metaflows_linter_message_is_the_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.py"
    path.write_text(
        HEADER
        + """
class BadFlow(FlowSpec):
    @step
    def start(self):
        self.next(self.a, self.b)

    @step
    def a(self):
        self.next(self.end)

    @step
    def b(self):
        self.next(self.end)

    @step
    def end(self):
        pass
"""
    )
    errors: list[str] = []
    code = graph.main([str(path)], out=errors.append)
    assert code == 2 and errors == []
    with pytest.raises(graph.FlowFileError, match="Metaflow's linter rejects the flow"):
        graph.lint(graph.load_flow(path))


def test_the_code_package_is_reproducible_and_carries_the_entrypoint(tmp_path: Path) -> None:
    (tmp_path / "flow.py").write_text("print('flow')\n")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "util.py").write_text("X = 1\n")
    (tmp_path / "data.bin").write_bytes(b"\0")
    entrypoint = Path(graph.__file__).with_name("entrypoint.py")
    first, second = tmp_path / "a.tgz", tmp_path / "b.tgz"
    graph.write_package(graph.package_members(tmp_path, entrypoint), first)
    graph.write_package(graph.package_members(tmp_path, entrypoint), second)
    assert first.read_bytes() == second.read_bytes()
    with tarfile.open(fileobj=io.BytesIO(first.read_bytes())) as tar:
        assert sorted(tar.getnames()) == ["_flowline/entrypoint.py", "flow.py", "lib/util.py"]
    (tmp_path / "flow.py").write_text("print('edited')\n")
    graph.write_package(graph.package_members(tmp_path, entrypoint), second)
    assert first.read_bytes() != second.read_bytes()
