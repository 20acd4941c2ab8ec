"""Determinism modes: how strictly replay checks that the code still takes the recorded
path (the checking itself is ``engine.matching``).

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
from typing import Any

from .errors import ConfigurationError


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
