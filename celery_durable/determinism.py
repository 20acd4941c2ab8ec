"""Determinism: how replay decides that the code still takes the recorded path.

Modes, per task (``@durable.task(determinism=...)``) or for the app
(``durable_determinism`` / ``durable.set_determinism``):

* ``EXPLICIT`` (default): the call at each position must be the recorded task (by
  name); its arguments may change (the recorded result is returned).
* ``STRICT``: the arguments must match too (a digest of them is recorded); use
  ``now()``, ``uuid4()``, ``random()`` instead of the stdlib for anything the path
  depends on.
* ``BEST_EFFORT``: at the first position where name or arguments differ, the recorded
  history from there on is dropped (with a warning that says what differed) and the
  body continues live.

In EXPLICIT and STRICT a divergence raises NonDeterministicError, which ends the job
(failed, or dead-lettered) without retries: retrying the same code cannot help.
"""

from __future__ import annotations

import enum
import logging
from typing import TYPE_CHECKING, Any

from .errors import (
    Cancelled,
    ConfigurationError,
    NonDeterministicError,
    interrupt_on_storage_error,
)
from .history import CANCELLED_MARKER, position

if TYPE_CHECKING:
    from .context import Execution
    from .store.base import CallRecord

logger = logging.getLogger(__name__)


class Determinism(str, enum.Enum):
    EXPLICIT = "explicit"
    STRICT = "strict"
    BEST_EFFORT = "best_effort"


def check_determinism(value: Any, what: str) -> Determinism:
    try:
        return Determinism(value.value if isinstance(value, Determinism) else value)
    except ValueError:
        raise ConfigurationError(
            f"{what} must be one of {', '.join(repr(m.value) for m in Determinism)}, got {value!r}"
        ) from None


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
        execution.durable.storage.discard_calls(execution.lease, doomed)
    for key in doomed:
        execution.history.pop(key, None)
