"""Helpers for Python steps of Flowline flows.

    from flowline_task import parameters, save, load, S3

Everything is configured by the task contract's variables (see the repository README's "Task
contract"), read by `TaskContext.from_env()` when a function is called; importing the package
reads nothing.
"""

from __future__ import annotations

from .artifacts import decode, encode, load, load_all, parameters, save
from .context import TaskContext
from .errors import ConfigError, FlowlineTaskError, NotFoundError
from .layout import ParentPrefix, ParentTask, input_folder, parent_prefixes, parent_tasks
from .s3 import S3, make_client, split_url

__version__ = "0.1.0"

__all__ = [
    "S3",
    "ConfigError",
    "FlowlineTaskError",
    "NotFoundError",
    "ParentPrefix",
    "ParentTask",
    "TaskContext",
    "decode",
    "encode",
    "input_folder",
    "load",
    "load_all",
    "make_client",
    "parameters",
    "parent_prefixes",
    "parent_tasks",
    "save",
    "split_url",
]
