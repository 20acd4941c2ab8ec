"""``gather()``: several calls at once, results in order.

Dispatched signatures are sent together and the job suspends until every one has
finished; the others run in this process, one after another, as ``call()`` would.
"""

from __future__ import annotations

from typing import Any

from celery.canvas import Signature

from .calls import call
from .context import require_execution
from .dispatch import gather_calls, is_dispatched
from .loop import eager


def gather(*specs: Signature[Any], return_exceptions: bool = False) -> Any:
    """Run several calls and return their results in order.

    Dispatched signatures (with a queue set) are all sent at once and the job suspends
    until every one has finished; the others run in this process, one after another,
    as ``call()`` would. A failed call is a ``CallError``: with ``return_exceptions``
    it takes its place in the list, otherwise the first one (in order) is raised once
    every call has finished.

    In an ``async def`` body: ``await gather(...)``, with dispatched signatures only
    (``asyncio.gather(call(...), ...)`` runs in-process calls concurrently).
    """
    execution = require_execution("gather()")
    for spec in specs:
        if not isinstance(spec, Signature):
            raise TypeError(f"gather() takes signatures (task.s(...)), not {type(spec).__name__}")
    if not execution.is_async:
        return gather_calls(execution, list(specs), call, return_exceptions=return_exceptions)
    in_process = [s.task for s in specs if not is_dispatched(s)]
    if in_process:
        raise TypeError(
            f"in an async def body, gather() takes dispatched signatures (with a queue) "
            f"only, not {', '.join(in_process)}: run in-process calls concurrently with "
            f"`await asyncio.gather(call(a, ...), call(b, ...))`"
        )
    return eager(
        execution,
        lambda: gather_calls(execution, list(specs), call, return_exceptions=return_exceptions),
        "gather()",
    )
