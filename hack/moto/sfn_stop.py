"""What a stopped execution leaves behind, as Step Functions leaves it.

StopExecution of an execution whose ``.sync`` task is waiting made moto's task end as if it had
succeeded: the history showed ``TaskSucceeded`` (output ``null``) before ``ExecutionAborted``,
and a task failure racing the stop could turn the history's last event into
``ExecutionFailed``. On AWS the history ends at the stop: the running state gets no
TaskSucceeded, TaskFailed or StateExited, and the last event is ``ExecutionAborted`` (its
``error`` / ``cause`` only when StopExecution gave them). Here:

* a stopped program stays stopped: a later failure of the state it was in does not overwrite it;
* the history of a stopped execution is cut at the stop: only ``ExecutionAborted`` and
  ``MapRunAborted`` (a Distributed Map run aborted with its parent) may follow, and
  ``ExecutionAborted`` is written if the worker ended without writing it;
* StopExecution's ``error`` and ``cause`` reach the ExecutionAborted event and DescribeExecution.
"""

from __future__ import annotations

import datetime
import threading
from typing import Any

# Event types that may follow the stop in a stopped execution's history.
AFTER_STOP = ("ExecutionAborted", "MapRunAborted")

_REQUESTED = threading.local()


def patch_stopped_program_stays_stopped() -> None:
    """moto's ``Environment.set_error`` replaces any program state, so a ``.sync`` task whose
    job the stop terminated could turn a stopped program into a failed one."""
    from moto.stepfunctions.parser.asl.eval.environment import Environment
    from moto.stepfunctions.parser.asl.eval.program_state import ProgramStopped

    original = Environment.set_error

    def set_error(self: Any, error: Any) -> None:
        if isinstance(self._program_state, ProgramStopped):
            return
        original(self, error)

    Environment.set_error = set_error


def cut_at_stop(events: list[dict], cut: int, error: str | None, cause: str | None, ended: bool) -> list[dict]:
    """The events of a history stopped after ``cut`` events: those, then only the events that
    may follow a stop (renumbered so ids stay consecutive); an ExecutionAborted is added if the
    execution has ``ended`` without one."""
    kept = list(events[:cut])
    for event in events[cut:]:
        if event.get("type") in AFTER_STOP:
            kept.append(dict(event))
    if ended and not any(e.get("type") == "ExecutionAborted" for e in kept[cut:]):
        kept.append({"type": "ExecutionAborted", "timestamp": datetime.datetime.now(tz=datetime.timezone.utc)})
    for position in range(cut, len(kept)):
        event = kept[position]
        event["id"] = position + 1
        event["previousEventId"] = kept[position - 1]["id"] if position else 0
        if event["type"] == "ExecutionAborted":
            details = {k: v for k, v in (("error", error), ("cause", cause)) if v}
            event.pop("executionAbortedEventDetails", None)
            if details:
                event["executionAbortedEventDetails"] = details
    return kept


def patch_history_ends_at_stop() -> None:
    """Records where the history stood when StopExecution arrived, and serves it cut there."""
    from moto.stepfunctions.parser.backend.execution import Execution
    from moto.stepfunctions.responses import StepFunctionResponse

    original_stop = Execution.stop

    def stop(self: Any, stop_date: Any, error: str | None, cause: str | None) -> None:
        env = self.exec_worker.env if self.exec_worker else None
        if env is not None and getattr(self, "flowline_stop_cut", None) is None:
            self.flowline_stop_cut = len(env.event_manager.get_event_history())
            self.flowline_stop_error = getattr(_REQUESTED, "error", None) or error or None
            self.flowline_stop_cause = getattr(_REQUESTED, "cause", None) or cause or None
            if self.flowline_stop_error:
                self.error = self.flowline_stop_error
            if self.flowline_stop_cause:
                self.cause = self.flowline_stop_cause
        original_stop(self, stop_date, error, cause)

    original_history = Execution.to_history_output

    def to_history_output(self: Any) -> Any:
        output = original_history(self)
        cut = getattr(self, "flowline_stop_cut", None)
        if cut is None:
            return output
        ended = str(getattr(self.exec_status, "value", self.exec_status)) != "RUNNING"
        output["events"] = cut_at_stop(
            list(output.get("events") or []), cut, self.flowline_stop_error, self.flowline_stop_cause, ended
        )
        return output

    original_response = StepFunctionResponse.stop_execution

    def stop_execution(self: Any) -> Any:
        _REQUESTED.error, _REQUESTED.cause = self._get_param("error"), self._get_param("cause")
        try:
            return original_response(self)
        finally:
            _REQUESTED.error = _REQUESTED.cause = None

    Execution.stop = stop
    Execution.to_history_output = to_history_output
    StepFunctionResponse.stop_execution = stop_execution


def apply() -> None:
    patch_stopped_program_stays_stopped()
    patch_history_ends_at_stop()
