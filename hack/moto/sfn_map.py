"""Distributed Map runs of the emulator, as Step Functions runs them: one child execution per item.

moto 5.2.5 runs a Distributed Map's items on worker threads inside the parent execution: there
are no child executions (ListExecutions(mapRunArn) answers 500, GetExecutionHistory has nothing
to read), MaxConcurrency only sizes a thread pool, a failed item yields ``null`` in the output
instead of failing the map, ToleratedFailure* is ignored and DescribeMapRun's counts drift
(``running`` never returns to 0 for failed items). Here each item runs as a real execution:

* ARN ``arn:…:execution:<machine>/<label or map run id>:<uuid>``, name ``<uuid>``, its
  ``stateMachineArn`` the map run's ``arn:…:stateMachine:<machine>/<label>``, the parent's role;
  its input is the item after ItemSelector (evaluated in the parent with ``$$.Map.Item``).
* DescribeExecution (with ``mapRunArn``), GetExecutionHistory, StopExecution work on it;
  ListExecutions(mapRunArn=…) lists the run's children, newest first, paged, statusFilter
  honoured; ListExecutions(stateMachineArn) of the parent machine does not list them (as AWS).
* At most MaxConcurrency children are RUNNING at once (0: up to AWS's 10,000); UpdateMapRun's
  new MaxConcurrency applies to children started after it.
* DescribeMapRun's ``itemCounts`` and ``executionCounts`` follow the children: items start
  ``pending`` and move to ``running`` and then ``succeeded`` / ``failed`` / ``aborted`` /
  ``timedOut``; ``executionCounts.total`` counts children started.
* The Map state's output is the children's outputs in item order. The run fails with
  ``States.ExceedToleratedFailureThreshold`` once more children failed (FAILED, TIMED_OUT or
  ABORTED) than ToleratedFailureCount / ToleratedFailurePercentage allow (both 0 by default,
  so one failure fails the map); it then stops its running children and starts no more
  (items never started stay ``pending``). A threshold left at 0 applies only when the other is
  0 too, since the parsed definition cannot tell "0" from "not given".
* Stopping the parent aborts the running children (each StopExecution'ed, so their Batch jobs
  are terminated too) and ends the run ABORTED (MapRunAborted).
"""

from __future__ import annotations

import datetime
import json
import logging
import threading
import time
import uuid
from typing import Any, Callable

LOG = logging.getLogger("flowline.emulator.map")

# AWS runs at most 10,000 child executions of one Distributed Map at once.
MAX_CHILDREN_RUNNING = 10_000
# How often a map run checks that its parent is still running while no child ends.
POLL_SECONDS = 0.2
# How long a stopped or failed map run waits for the children it stopped to end.
STOP_GRACE_SECONDS = 10.0
EXCEEDED_CAUSE = "The specified tolerated failure threshold was exceeded"


class MapRun:
    """One Distributed Map run: its moto record and its children in item order."""

    def __init__(self, record: Any, parent_arn: str, definition: str) -> None:
        self.record = record
        self.parent_arn = parent_arn
        self.definition = definition
        self.children: list[Any] = []  # in start order
        self.children_by_index: dict[int, Any] = {}
        self.ended: list[int] = []
        self.cond = threading.Condition()

    def child_ended(self, index: int) -> None:
        with self.cond:
            self.ended.append(index)
            self.cond.notify_all()


_RUNS: dict[str, MapRun] = {}
_CHILDREN: dict[str, Any] = {}
_LOCK = threading.Lock()


def reset() -> None:
    """Forgets every map run and child (``/moto-api/reset``)."""
    with _LOCK:
        _RUNS.clear()
        _CHILDREN.clear()


def child(arn: str) -> Any | None:
    with _LOCK:
        return _CHILDREN.get(arn)


def children() -> list[Any]:
    with _LOCK:
        return list(_CHILDREN.values())


def map_run(arn: str) -> MapRun | None:
    with _LOCK:
        return _RUNS.get(arn)


def _status(execution: Any) -> str:
    status = execution.exec_status
    return str(getattr(status, "value", status))


def child_arn(map_state_machine_arn: str, name: str) -> str:
    """``arn:…:stateMachine:<machine>/<label>`` -> ``arn:…:execution:<machine>/<label>:<name>``."""
    return map_state_machine_arn.replace(":stateMachine:", ":execution:", 1) + ":" + name


def item_processor_definition(definition: str, state_name: str) -> str:
    """The ItemProcessor (or legacy Iterator) of the Map state ``state_name``, as JSON text: what
    DescribeStateMachineForExecution shows for a child. ``{}`` if it cannot be found."""

    def find(states: Any) -> Any:
        for name, state in (states or {}).items():
            if not isinstance(state, dict):
                continue
            processor = state.get("ItemProcessor") or state.get("Iterator")
            if name == state_name and state.get("Type") == "Map" and processor:
                return processor
            for branch in ([processor] if processor else []) + list(state.get("Branches") or []):
                found = find(branch.get("States"))
                if found:
                    return found
        return None

    try:
        found = find(json.loads(definition).get("States"))
    except (TypeError, ValueError, AttributeError):
        found = None
    return json.dumps(found or {})


class _MapStateMachine:
    """What an Execution needs of its state machine, for a map run's children."""

    def __init__(self, arn: str, definition: str, role_arn: str) -> None:
        self.arn = arn
        self.name = arn.split(":", 6)[6]
        self.sm_type = "STANDARD"
        self.definition = definition
        self.roleArn = role_arn
        self.logging_config = None
        self.revision_id = None
        self.create_date = datetime.datetime.now(tz=datetime.timezone.utc)


def _child_classes() -> tuple[type, type]:
    """The child Execution class, defined lazily because moto is imported by the launcher."""
    from moto.stepfunctions.parser.backend.execution import (
        BaseExecutionWorkerCommunication,
        Execution,
    )
    from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker

    class ChildWorker(ExecutionWorker):
        """Runs the Map state's already parsed item program instead of parsing a definition."""

        program: Any = None

        def _get_evaluation_entrypoint(self) -> Any:
            return self.program

    class ChildCommunication(BaseExecutionWorkerCommunication):
        def terminated(self) -> None:
            try:
                super().terminated()
            finally:
                self.execution.flowline_map_run.child_ended(self.execution.flowline_item_index)

    class ChildExecution(Execution):
        flowline_map_run: MapRun
        flowline_item_index: int
        flowline_program: Any

        def _get_start_execution_worker_comm(self) -> Any:
            return ChildCommunication(self)

        def _get_start_execution_worker(self) -> Any:
            worker = super()._get_start_execution_worker()
            worker.__class__ = ChildWorker
            worker.program = self.flowline_program
            return worker

    return ChildExecution, ChildWorker


_CHILD_EXECUTION: type | None = None


def _start_child(run: MapRun, index: int, child_input: Any, program: Any, env: Any) -> Any:
    global _CHILD_EXECUTION
    if _CHILD_EXECUTION is None:
        _CHILD_EXECUTION = _child_classes()[0]
    details = env.aws_execution_details
    name = str(uuid.uuid4())
    machine = _MapStateMachine(run.record.map_state_machine_arn, run.definition, details.role_arn)
    execution = _CHILD_EXECUTION(
        name=name,
        sm_type=machine.sm_type,
        role_arn=details.role_arn,
        exec_arn=child_arn(run.record.map_state_machine_arn, name),
        account_id=details.account,
        region_name=details.region,
        state_machine=machine,
        start_date=datetime.datetime.now(tz=datetime.timezone.utc),
        cloud_watch_logging_session=None,
        activity_store={},
        input_data=json.dumps(child_input),
    )
    execution.flowline_map_run = run
    execution.flowline_item_index = index
    execution.flowline_program = program
    with _LOCK:
        _CHILDREN[execution.exec_arn] = execution
    run.children.append(execution)
    execution.start()
    return execution


def _child_input(env: Any, eval_input: Any, index: int, item: Any) -> Any:
    """The item after ItemSelector (or legacy Parameters), evaluated in the parent with
    ``$`` the Map state's input and ``$$.Map.Item`` the item, as Step Functions does."""
    from moto.stepfunctions.parser.asl.eval.states import ItemData, MapData

    selector = eval_input.item_selector or eval_input.parameters
    if selector is None:
        return item
    frame = env.open_inner_frame()
    try:
        frame.states.context_object.context_object_data["Map"] = MapData(Item=ItemData(Index=index, Value=item))
        map_input = env.states.get_input()
        frame.states.reset(input_value=map_input)
        frame.stack.append(map_input)
        selector.eval(frame)
        return frame.stack[-1]
    finally:
        env.delete_frame(frame)


def tolerance_exceeded(failed: int, total: int, count: int, percentage: float) -> bool:
    """Whether ``failed`` of ``total`` items exceed the Map's tolerated failures. A threshold at
    its default 0 applies only when the other one is 0 as well (see the module docstring)."""
    count = int(count or 0)
    percentage = float(percentage or 0.0)
    by_count = failed > count and (count > 0 or percentage == 0)
    by_percentage = total > 0 and failed * 100.0 / total > percentage and (percentage > 0 or count == 0)
    return by_count or by_percentage


def _stop_children(run: MapRun, indices: set[int]) -> None:
    from moto.stepfunctions.responses import get_backend

    for index in sorted(indices):
        execution = run.children_by_index[index]
        parts = execution.exec_arn.split(":")
        try:
            get_backend(parts[4], parts[3]).stop_execution(execution.exec_arn)
        except Exception as err:  # noqa: BLE001 - it may have ended meanwhile
            LOG.info("could not stop child %s: %s", execution.exec_arn, err)


class _Tally:
    """Moves DescribeMapRun's counts as children start and end."""

    def __init__(self, record: Any, total: int) -> None:
        self.items = record.item_counter
        self.executions = record.execution_counter
        self.items.total.count(total)
        self.items.pending.count(total)
        self.failed = 0

    def started(self) -> None:
        self.items.pending.offset(-1)
        self.items.running.count()
        self.executions.total.count()
        self.executions.running.count()

    def ended(self, status: str) -> None:
        self.items.running.offset(-1)
        self.executions.running.offset(-1)
        counter = {"SUCCEEDED": "succeeded", "TIMED_OUT": "timed_out", "ABORTED": "aborted"}.get(status, "failed")
        getattr(self.items, counter).count()
        getattr(self.executions, counter).count()
        if counter != "succeeded":
            self.failed += 1


def _parent_definition(record: Any) -> str:
    from moto.stepfunctions.responses import get_backend

    parts = record.execution_arn.split(":")
    try:
        return get_backend(parts[4], parts[3]).describe_execution(record.execution_arn).state_machine.definition
    except Exception:  # noqa: BLE001 - only DescribeStateMachineForExecution of a child shows it
        return ""


def run_children(self: Any, env: Any, eval_input: Any) -> str:
    """Runs every item as a child execution, at most MaxConcurrency at once. Pushes the outputs
    in item order and answers "SUCCEEDED", "FAILED" (tolerance exceeded) or "ABORTED" (the
    parent stopped)."""
    items: list[Any] = env.stack.pop()
    record = eval_input.map_run_record
    run = MapRun(record, record.execution_arn, item_processor_definition(_parent_definition(record), eval_input.state_name))
    with _LOCK:
        _RUNS[record.map_run_arn] = run
    program = self._get_iteration_program()
    inputs = [_child_input(env, eval_input, i, item) for i, item in enumerate(items)]
    tally = _Tally(record, len(inputs))
    outputs: list[Any] = [None] * len(inputs)
    running: set[int] = set()
    next_index, outcome, deadline = 0, "SUCCEEDED", None
    while next_index < len(inputs) or running:
        if outcome == "SUCCEEDED" and not env.is_running():
            outcome = "ABORTED"
            _stop_children(run, running)
        if deadline is None and outcome != "SUCCEEDED":
            deadline = time.monotonic() + STOP_GRACE_SECONDS
        if deadline is not None and time.monotonic() > deadline:
            LOG.warning("map run %s: children %s did not end after being stopped", record.map_run_arn, sorted(running))
            break
        limit = int(record.max_concurrency or 0) or MAX_CHILDREN_RUNNING
        while outcome == "SUCCEEDED" and next_index < len(inputs) and len(running) < limit:
            run.children_by_index[next_index] = _start_child(run, next_index, inputs[next_index], program, env)
            tally.started()
            running.add(next_index)
            next_index += 1
        if outcome != "SUCCEEDED" and not running:
            break
        with run.cond:
            run.cond.wait_for(lambda: run.ended, timeout=POLL_SECONDS)
            ended, run.ended = run.ended, []
        for index in ended:
            running.discard(index)
            execution = run.children_by_index[index]
            status = _status(execution)
            tally.ended(status)
            if status == "SUCCEEDED":
                outputs[index] = execution.output
        if outcome == "SUCCEEDED" and tolerance_exceeded(
            tally.failed, len(inputs), record.tolerated_failure_count, record.tolerated_failure_percentage
        ):
            outcome = "FAILED"
            _stop_children(run, running)
        if outcome != "SUCCEEDED" and next_index < len(inputs):
            next_index = len(inputs)  # never started: they stay pending
    env.stack.append(outputs)
    return outcome


def patch_distributed_map() -> None:
    """Replaces moto's in-process iteration of a Distributed Map by child executions (see the
    module docstring), keeping moto's MapRunStarted / MapRunSucceeded / MapRunFailed events and
    its map run record (DescribeMapRun, ListMapRuns, UpdateMapRun read it)."""
    from moto.stepfunctions.parser.api import (
        HistoryEventType,
        MapRunFailedEventDetails,
        MapRunStartedEventDetails,
        MapRunStatus,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
        FailureEvent,
        FailureEventException,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import StatesErrorName
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
        StatesErrorNameType,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration import (
        distributed_iteration_component as iteration,
    )
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails

    def _eval_body(self: Any, env: Any) -> None:
        eval_input = env.stack.pop()
        record = eval_input.map_run_record
        env.event_manager.add_event(
            context=env.event_history_context,
            event_type=HistoryEventType.MapRunStarted,
            event_details=EventDetails(mapRunStartedEventDetails=MapRunStartedEventDetails(mapRunArn=record.map_run_arn)),
        )
        try:
            if eval_input.item_reader:
                eval_input.item_reader.eval(env=env)
            else:
                env.stack.append(eval_input.input_items)
            outcome = run_children(self, env, eval_input)
        except Exception:
            record.set_stop(status=MapRunStatus.FAILED)
            env.event_manager.add_event(
                context=env.event_history_context,
                event_type=HistoryEventType.MapRunFailed,
                event_details=EventDetails(mapRunFailedEventDetails=MapRunFailedEventDetails()),
            )
            raise
        if outcome == "ABORTED":
            record.set_stop(status=MapRunStatus.ABORTED)
            env.event_manager.add_event(context=env.event_history_context, event_type=HistoryEventType.MapRunAborted)
            return
        if outcome == "FAILED":
            error = StatesErrorNameType.StatesExceedToleratedFailureThreshold.to_name()
            record.set_stop(status=MapRunStatus.FAILED)
            env.event_manager.add_event(
                context=env.event_history_context,
                event_type=HistoryEventType.MapRunFailed,
                event_details=EventDetails(
                    mapRunFailedEventDetails=MapRunFailedEventDetails(error=error, cause=EXCEEDED_CAUSE)
                ),
            )
            raise FailureEventException(
                failure_event=FailureEvent(
                    env=env,
                    error_name=StatesErrorName(typ=StatesErrorNameType.StatesExceedToleratedFailureThreshold),
                    event_type=HistoryEventType.MapStateFailed,
                    event_details=EventDetails(executionFailedEventDetails={"error": error, "cause": EXCEEDED_CAUSE}),
                )
            )
        env.event_manager.add_event(context=env.event_history_context, event_type=HistoryEventType.MapRunSucceeded)
        record.set_stop(status=MapRunStatus.SUCCEEDED)

    iteration.DistributedIterationComponent._eval_body = _eval_body


def patch_child_lookup() -> None:
    """Children are kept outside any state machine's execution list, so moto's lookups by ARN
    (which find the machine by the ARN's name part) would not find them: DescribeExecution,
    StopExecution and GetExecutionHistory (through DescribeExecution) look here first, and the
    task-token and map-run lookups that scan "all executions" see them too. Must run before
    the launcher wraps StopExecution, so that its wrapper (which terminates the execution's
    Batch jobs) reaches children as well."""
    from moto.stepfunctions.models import StepFunctionBackend
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend

    original_describe = StepFunctionBackend.describe_execution
    original_stop = StepFunctionBackend.stop_execution

    def describe_execution(self: Any, execution_arn: str) -> Any:
        found = child(execution_arn)
        return found if found is not None else original_describe(self, execution_arn)

    def stop_execution(self: Any, execution_arn: str) -> Any:
        found = child(execution_arn)
        if found is None:
            return original_stop(self, execution_arn)
        found.stop(stop_date=datetime.datetime.now(tz=datetime.timezone.utc), error="", cause="")
        return found

    original_get_executions = StepFunctionsParserBackend._get_executions

    def _get_executions(self: Any, execution_status: Any = None) -> list[Any]:
        mine = [
            c
            for c in children()
            if c.account_id == self.account_id
            and c.region_name == self.region_name
            and (execution_status is None or execution_status == c.status)
        ]
        return original_get_executions(self, execution_status) + mine

    StepFunctionBackend.describe_execution = describe_execution
    StepFunctionBackend.stop_execution = stop_execution
    StepFunctionsParserBackend._get_executions = _get_executions


def patch_map_run_responses(paged: Callable[..., tuple[list, str | None]]) -> None:
    """ListExecutions(mapRunArn=…) answers 500 in moto; it now lists the run's children
    (newest first, paged like the launcher's other lists, statusFilter honoured), and an
    unknown map run is ResourceNotFound. DescribeExecution of a child names its ``mapRunArn``.
    Applied last, so it answers before the versions patch looks for a state machine."""
    from moto.core.responses import ActionResult
    from moto.stepfunctions.exceptions import InvalidToken, ResourceNotFound
    from moto.stepfunctions.responses import StepFunctionResponse

    original_list = StepFunctionResponse.list_executions

    def list_executions(self: Any) -> Any:
        map_run_arn = self._get_param("mapRunArn")
        if not map_run_arn:
            return original_list(self)
        run = map_run(map_run_arn)
        if run is None:
            raise ResourceNotFound(f"Map run {map_run_arn} does not exist")
        wanted = self._get_param("statusFilter")
        listed = [c for c in reversed(list(run.children)) if not wanted or _status(c) == wanted]
        page, token = paged(
            listed, self._get_param("nextToken"), map_run_arn, self._get_int_param("maxResults") or 100, InvalidToken
        )
        items = []
        for execution in page:
            item = {
                "executionArn": execution.exec_arn,
                "stateMachineArn": execution.state_machine.arn,
                "name": execution.name,
                "status": _status(execution),
                "startDate": execution.start_date,
                "mapRunArn": map_run_arn,
            }
            if execution.stop_date is not None:
                item["stopDate"] = execution.stop_date
            items.append(item)
        result: dict[str, Any] = {"executions": items}
        if token:
            result["nextToken"] = token
        return ActionResult(result)

    original_describe = StepFunctionResponse.describe_execution

    def describe_execution(self: Any) -> Any:
        answer = original_describe(self)
        found = child(self._get_param("executionArn"))
        if found is not None:
            answer.result["mapRunArn"] = found.flowline_map_run.record.map_run_arn
        return answer

    StepFunctionResponse.list_executions = list_executions
    StepFunctionResponse.describe_execution = describe_execution
