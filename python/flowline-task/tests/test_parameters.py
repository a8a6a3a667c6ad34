"""Typed parameters and the errors of a malformed task contract."""

from __future__ import annotations

import json

import pytest

import flowline_task
from flowline_task import ConfigError, TaskContext

# The README's example of FLOWLINE_PARAMETERS, as the controller writes it.
PARAMETERS = {"epochs": 5, "lr": 0.1, "debug": False, "config": {"layers": [1, 2]}, "dataset": "s3://b/d"}


def test_parameters_are_typed(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("FLOWLINE_PARAMETERS", json.dumps(PARAMETERS))
    # The text copies do not override the typed document.
    clean_env.setenv("FLOWLINE_PARAM_EPOCHS", "5")
    params = flowline_task.parameters()
    assert params == PARAMETERS
    assert type(params["epochs"]) is int
    assert type(params["lr"]) is float
    assert params["debug"] is False
    assert params["config"]["layers"] == [1, 2]


def test_no_parameters_is_an_empty_dict(clean_env: pytest.MonkeyPatch) -> None:
    assert flowline_task.parameters() == {}
    clean_env.setenv("FLOWLINE_PARAMETERS", "")
    assert flowline_task.parameters() == {}


def test_foreach_value_is_decoded(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("FLOWLINE_FOREACH_INDEX", "3")
    clean_env.setenv("FLOWLINE_FOREACH_VALUE", '{"key": "a/b.csv"}')
    context = TaskContext.from_env()
    assert (context.foreach_index, context.foreach_value) == (3, {"key": "a/b.csv"})


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("FLOWLINE_PARAMETERS", "epochs=5", "is not JSON"),
        ("FLOWLINE_PARAMETERS", "[1, 2]", "not a JSON object"),
        ("FLOWLINE_FOREACH_VALUE", "a/b.csv", "is not JSON"),
        ("FLOWLINE_FOREACH_INDEX", "first", "not an integer"),
        ("FLOWLINE_S3_SSE", "aes256", "expected one of AES256, aws:kms"),
        ("FLOWLINE_S3_RETRY_COUNT", "-1", "at least 0"),
        ("FLOWLINE_S3_WORKER_COUNT", "0", "at least 1"),
        ("FLOWLINE_S3_WORKER_COUNT", "many", "not an integer"),
        ("FLOWLINE_ARTIFACT_URI", "/data/out", "not an s3:// URI"),
        ("FLOWLINE_INPUT_URIS", "s3://b/r/start/0/,start/0", "not an s3:// URI"),
    ],
)
def test_errors_name_the_variable(clean_env: pytest.MonkeyPatch, name: str, value: str, says: str) -> None:
    clean_env.setenv(name, value)
    with pytest.raises(ConfigError) as err:
        flowline_task.parameters()
    assert name in str(err.value) and says in str(err.value)


def test_importing_reads_nothing(clean_env: pytest.MonkeyPatch) -> None:
    """A malformed variable fails the call that reads it, not the import."""
    import importlib

    clean_env.setenv("FLOWLINE_PARAMETERS", "not json")
    importlib.reload(flowline_task)
    with pytest.raises(ConfigError, match="FLOWLINE_PARAMETERS"):
        flowline_task.parameters()
