"""What a batch of new jobs must be before any store writes it (create_jobs)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..errors import ValidationError
from .records import NewJob


def check_batch(jobs: Sequence[NewJob]) -> None:
    """No unique keys (a key's holder is settled one job at a time) and no id twice."""
    seen: set[str] = set()
    twice: list[str] = []
    for job in jobs:
        if job.unique_key is not None:
            raise ValidationError(
                f"job {job.id!r} has a unique key ({job.unique_key!r}): jobs with unique= "
                f"are enqueued one at a time, with enqueue(..., unique=...)"
            )
        if job.id in seen:
            twice.append(job.id)
        seen.add(job.id)
    if twice:
        raise ValidationError(
            f"the batch holds job id(s) {_shown(twice)} more than once; give each job its "
            f"own id (or none: one is generated). Nothing was written."
        )


def duplicate_ids(ids: Iterable[str]) -> ValidationError:
    return ValidationError(
        f"job id(s) {_shown(ids)} exist already: a batch creates new jobs only (enqueue() "
        f"sends an existing one again). Nothing was written."
    )


def _shown(ids: Iterable[str]) -> str:
    listed = sorted(set(ids))
    shown = ", ".join(repr(i) for i in listed[:5])
    return shown + (f" and {len(listed) - 5} more" if len(listed) > 5 else "")
