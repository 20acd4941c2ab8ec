"""The flow rules every store applies the same way: a rate limit's token bucket with a
queue of turns, the keys of a task's gate rows, when recovery publishes a held job."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from .records import Gate

CONCURRENCY_GATE, RATE_GATE = "c:", "r:"
"""Prefixes of a gate row's key: a concurrency limit and a rate limit of one task may
use different keys."""
BURST = 1.0
"""A rate limit's bucket holds one token: starts are spaced evenly, never bunched."""


def rate_deadline(gate: Gate, due_at: datetime, now: datetime) -> datetime:
    """When recovery publishes a job held for its rate: when it is due if the wait is
    too long for an ETA message (the claimer sends none), else ``recheck`` after."""
    if (due_at - now).total_seconds() > gate.countdown_limit:
        return due_at
    return due_at + gate.recheck


def gate_keys(gate: Gate) -> list[str]:
    keys = []
    if gate.concurrency is not None:
        keys.append(CONCURRENCY_GATE + gate.concurrency_key)
    if gate.rate is not None:
        keys.append(RATE_GATE + gate.rate_key)
    return sorted(keys)  # one order everywhere: two claims never wait on each other


@dataclass(frozen=True)
class Turn:
    tokens: float
    next_at: datetime
    due_at: datetime | None
    """None: start now (a token was taken); else when this job's turn comes."""


def rate_turn(
    rate: float,
    tokens: float,
    refilled_at: datetime,
    next_at: datetime,
    now: datetime,
    *,
    queued: bool,
) -> Turn:
    """A token bucket of ``BURST`` tokens refilled at ``rate`` per second, with a queue:
    a job that finds no token is given the next free turn (``next_at``, one
    ``1 / rate`` after the previous one), so waiting jobs come back one at a time
    instead of all at once. A job that was given a turn (``queued``) and comes back a
    little early waits only for the rest, keeping its place."""
    tokens = min(BURST, tokens + max(0.0, (now - refilled_at).total_seconds()) * rate)
    interval = timedelta(seconds=1 / rate)
    if tokens >= 1.0 and (queued or next_at <= now):
        return Turn(tokens - 1.0, max(next_at, now), None)
    if queued:
        return Turn(tokens, next_at, now + timedelta(seconds=(1.0 - tokens) / rate))
    due = max(next_at, now + timedelta(seconds=(1.0 - tokens) / rate))
    return Turn(tokens, due + interval, due)
