"""Replay: does the recorded call at a position stand for the call the code makes now?

``recorded_for`` applies the job's determinism mode (``celery_durable.determinism``):
the recorded call, None to run live (after dropping a diverged history in best_effort
mode), or NonDeterministicError.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..determinism import Determinism
from ..errors import Cancelled, NonDeterministicError, interrupt_on_storage_error
from ..store.records import position
from .positions import CANCELLED_MARKER

if TYPE_CHECKING:
    from ..store.records import CallRecord
    from .context import Execution

logger = logging.getLogger(__name__)


class EndOfHistory(BaseException):
    """Replay testing: the body asked for something the history does not hold yet."""

    def __init__(self, seq: int, name: str) -> None:
        self.seq = seq
        self.name = name
        super().__init__(f"history ends before #{seq} {name}")


def recorded_for(
    execution: Execution, seq: int, name: str, digest: str | None
) -> CallRecord | None:
    """The recorded call at ``seq`` if it may stand for this one; None to run live.

    ``digest`` is the arguments' digest (None: not computed, EXPLICIT mode)."""
    recorded = execution.history.get((execution.job_id, seq))
    if recorded is None:
        if execution.replay_only:
            raise EndOfHistory(seq, name)
        return None
    if recorded.name == CANCELLED_MARKER:  # the job was cancelled here: same again
        execution.watch.cancel_raised = True
        raise Cancelled(execution.root_id)
    mode = execution.determinism
    same_args = mode is Determinism.EXPLICIT or recorded.args_digest == digest
    if recorded.name == name and same_args:
        return recorded
    if mode is Determinism.BEST_EFFORT and not execution.replay_only:
        _discard_from(execution, seq, name, digest, recorded)
        return None
    raise NonDeterministicError(
        job_id=execution.job_id,
        task=execution.task_name,
        seq=seq,
        expected=name,
        recorded=recorded.name,
        expected_digest=digest if mode is not Determinism.EXPLICIT else None,
        recorded_digest=recorded.args_digest,
        mode=mode.value,
    )


def _discard_from(
    execution: Execution, seq: int, name: str, digest: str | None, recorded: CallRecord
) -> None:
    root = execution.root_id
    start = position(root, execution.job_id, seq)
    doomed = [key for key in execution.history if position(root, *key) >= start]
    logger.warning(
        "job %s (%s) diverged from its history at #%s: the code calls %s (args %s), the "
        "history holds %s (args %s); best_effort: dropping %d recorded call(s) from "
        "there and continuing live",
        root,
        execution.task_name,
        ".".join(map(str, start)),
        name,
        (digest or "")[:12],
        recorded.name,
        recorded.args_digest[:12],
        len(doomed),
    )
    with interrupt_on_storage_error(root):
        execution.runtime.storage.discard_calls(execution.lease, doomed)
    for key in doomed:
        execution.history.pop(key, None)
