"""``debounce=(key, window)``: enqueues of one key within the window collapse into one
job, which starts once the window has passed since the last of them.

The job's row holds the key until the job starts; an enqueue that finds it pending
moves its start (``not_before``) to the end of the new window and, by default, gives it
the latest arguments. Its message, sent once with the first enqueue, arrives early and
is sent again for the rest of the wait. The body runs with the row's arguments, not the
message's: a message delivered late (after the window) still carries the first ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from .. import serialization
from ..errors import ConfigurationError
from ..identifiers import check_key
from ..retry import seconds

if TYPE_CHECKING:
    from .runtime import Runtime

DEBOUNCED_HEADER = "durable_debounced"
"""Set on a debounced job's messages: its execution reads its arguments from the row."""
KEEP = ("last", "first")
"""Which enqueue's arguments the job runs with."""


@dataclass(frozen=True)
class Debounce:
    key: str
    window: timedelta
    keep: str


def check_debounce(task: str, value: Any, keep: Any, options: dict[str, Any]) -> Debounce | None:
    if value is None:
        if keep is not None:
            raise ConfigurationError(
                f"task {task!r}: debounce_keep={keep!r} without debounce=(key, window)"
            )
        return None
    if not isinstance(value, (tuple, list)) or len(value) != 2 or value[1] is None:
        raise ConfigurationError(
            f"task {task!r}: debounce={value!r} needs a key and a window: "
            f"debounce=('order-42', timedelta(seconds=30)) (or seconds as a number)"
        )
    key, window = value
    window_seconds = seconds(window, f"the debounce window of task {task!r}")
    if window_seconds <= 0:
        raise ConfigurationError(
            f"task {task!r}: the debounce window must be longer than 0, got {window!r}"
        )
    if keep is None:
        keep = "last"
    if keep not in KEEP:
        raise ConfigurationError(
            f"task {task!r}: debounce_keep={keep!r} must be 'last' (the latest arguments) "
            f"or 'first'"
        )
    clash = [o for o in ("delay", "at", "eta", "countdown", "unique") if options.get(o) is not None]
    if clash:
        raise ConfigurationError(
            f"task {task!r}: debounce= sets when the job starts (the window after the "
            f"last enqueue), so it cannot be combined with {clash[0]}="
        )
    return Debounce(
        check_key(key, f"the debounce key of task {task!r}"),
        timedelta(seconds=window_seconds),
        keep,
    )


def latest_arguments(
    runtime: Runtime, job_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The arguments the claimed job's row holds (the latest enqueue's, unless it kept
    the first)."""
    job = runtime.storage.get_job(job_id)
    if job is None:
        return args, kwargs
    return tuple(serialization.loads(job.args)), dict(serialization.loads(job.kwargs))
