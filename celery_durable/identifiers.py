"""The ids, names and keys we store, checked once at the edge.

Every store holds them in columns of a fixed width and compares them byte for byte, so
a value that would not fit, or that PostgreSQL refuses (a NUL byte) or UTF-8 cannot
encode (a lone surrogate), is refused here with the same error on every store, before
anything is read or written.

Job ids given by users are shorter than the column: the ids of in-process child scopes
(``"<job>.<seq>"``) and dispatched children (``"<scope>.<seq>"``) grow from them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .errors import ValidationError

ID_COLUMN = 191
"""Width of the id columns (191 characters of utf8mb4 fit MySQL's index limit)."""
NAME_COLUMN = 255
"""Width of the task name, queue and topic columns."""
JOB_ID = 128
"""The longest job id a user may give: the rest of the column is for derived ids."""


def check_text(value: Any, field: str, limit: int) -> str:
    """``value`` if it is a non-empty string the stores can hold, else ValidationError."""
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{field} must be a non-empty string, got {value!r}")
    if "\x00" in value:
        raise ValidationError(
            f"{field} must not contain a NUL byte (\\x00), which PostgreSQL cannot store; "
            f"got {_shown(value)}"
        )
    if len(value) > limit:
        raise ValidationError(
            f"{field} is {len(value)} characters long; at most {limit} are allowed: {_shown(value)}"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(
            f"{field} is not valid Unicode text (a lone surrogate?): {_shown(value)}"
        ) from None
    return value


def check_job_id(value: Any, field: str = "job id") -> str:
    """An id to look a job up by: any id a job can have (derived ones included)."""
    return check_text(value, field, ID_COLUMN)


def check_new_job_id(value: Any, field: str = "task_id") -> str:
    """An id given for a new job: shorter, so the ids derived from it still fit."""
    return check_text(value, field, JOB_ID)


def check_job_ids(values: Iterable[Any], field: str = "job id") -> list[str]:
    return [check_job_id(v, field) for v in values]


def check_key(value: Any, field: str) -> str:
    """A unique key, a message key, a schedule name."""
    return check_text(value, field, ID_COLUMN)


def check_name(value: Any, field: str) -> str:
    """A task name, a queue, a message topic."""
    return check_text(value, field, NAME_COLUMN)


def check_optional_name(value: Any, field: str) -> str | None:
    return None if value is None else check_name(value, field)


def fits_id(value: str) -> bool:
    """Whether a derived id (a child scope, a dispatched child) fits its column."""
    return len(value) <= ID_COLUMN


def _shown(value: str) -> str:
    return repr(value) if len(value) <= 60 else f"{value[:57]!r}..."
