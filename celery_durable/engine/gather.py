"""``gather()``: several calls at once, results in order.

Dispatched signatures are sent together and the job suspends until every one has
finished; the others run in this process, one after another, as ``call()`` would.
"""

from __future__ import annotations

from typing import Any

from celery.canvas import Signature

from .calls import call
from .context import require_execution
from .dispatch import gather_calls


def gather(*specs: Signature[Any], return_exceptions: bool = False) -> list[Any]:
    """Run several calls and return their results in order.

    Dispatched signatures (with a queue set) are all sent at once and the job suspends
    until every one has finished; the others run in this process, one after another,
    as ``call()`` would. A failed call is a ``CallError``: with ``return_exceptions``
    it takes its place in the list, otherwise the first one (in order) is raised once
    every call has finished.
    """
    execution = require_execution("gather()")
    for spec in specs:
        if not isinstance(spec, Signature):
            raise TypeError(f"gather() takes signatures (task.s(...)), not {type(spec).__name__}")
    return gather_calls(execution, list(specs), call, return_exceptions=return_exceptions)
