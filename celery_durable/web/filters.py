"""The jobs list's filter, read from a query string or form: one parser for the page, its
auto-refresh, its bulk actions and the JSON API."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode

from ..store.records import JobState

PAGE_SIZE = 50
MAX_PAGE = 100_000
"""Deeper than this, narrow the filter (a time range) instead of paging."""


class FilterError(ValueError):
    """A filter value the list cannot use; the message names the field and the fix."""


def field_text(fields: Mapping[str, Any], name: str) -> str | None:
    """A field's text, stripped; a repeated field's first value; None if empty."""
    value = fields.get(name)
    if isinstance(value, list):
        value = value[0] if value else None
    value = None if value is None else str(value).strip()
    return value or None


def _time(fields: Mapping[str, Any], name: str) -> datetime | None:
    text = field_text(fields, name)
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise FilterError(
            f"{name}={text!r} is not a time; use ISO 8601, e.g. 2026-12-01T09:30 (UTC)"
        ) from None
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when


@dataclass(frozen=True)
class JobQuery:
    state: str | None = None
    task: str | None = None
    queue: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    q: str | None = None
    """An id, or its first characters."""
    page: int = 1
    page_size: int = PAGE_SIZE

    @classmethod
    def parse(cls, fields: Mapping[str, Any], page_size: int = PAGE_SIZE) -> JobQuery:
        state = field_text(fields, "state")
        if state is not None and state not in {s.value for s in JobState}:
            known = ", ".join(s.value for s in JobState)
            raise FilterError(f"state={state!r} is not a job state; one of {known}")
        page_text = field_text(fields, "page") or "1"
        if not page_text.isdigit() or not 1 <= int(page_text) <= MAX_PAGE:
            raise FilterError(f"page={page_text!r}: pages are numbered from 1 to {MAX_PAGE:,}")
        return cls(
            state=state,
            task=field_text(fields, "task"),
            queue=field_text(fields, "queue"),
            since=_time(fields, "since"),
            until=_time(fields, "until"),
            q=field_text(fields, "q"),
            page=int(page_text),
            page_size=page_size,
        )

    def counting(self) -> dict[str, Any]:
        """The arguments of ``durable.job_counts``."""
        return {
            "task": self.task,
            "queue": self.queue,
            "since": self.since,
            "until": self.until,
            "id_prefix": self.q,
        }

    def listing(self, limit: int | None = None, offset: int | None = None) -> dict[str, Any]:
        """The arguments of ``durable.jobs``: one row more than a page, to know whether
        there is a next one."""
        return {
            **self.counting(),
            "states": self.state,
            "limit": self.page_size + 1 if limit is None else limit,
            "offset": (self.page - 1) * self.page_size if offset is None else offset,
        }

    def query_string(self, **changes: Any) -> str:
        values = {
            "state": self.state,
            "task": self.task,
            "queue": self.queue,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "q": self.q,
            "page": self.page if self.page != 1 else None,
            **changes,
        }
        return urlencode({k: v for k, v in values.items() if v not in (None, "")})
