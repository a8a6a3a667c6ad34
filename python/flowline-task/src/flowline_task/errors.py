"""Errors of the helper. Each message names the variable, artifact or object at fault."""

from __future__ import annotations


class FlowlineTaskError(Exception):
    """Base of the helper's errors."""


class ConfigError(FlowlineTaskError, ValueError):
    """A task contract variable is missing or malformed; the message names it."""


class NotFoundError(FlowlineTaskError, LookupError):
    """An artifact or S3 object does not exist; the message names it and where it was looked
    for."""
