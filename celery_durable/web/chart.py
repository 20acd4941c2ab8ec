"""Jobs finished per minute as a stacked bar chart in SVG, drawn on the server: numbers in,
markup out (nothing a user wrote reaches it)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

FAILED = ("failed", "dead")


@dataclass(frozen=True)
class Minute:
    at: datetime
    succeeded: int
    failed: int
    cancelled: int

    @property
    def total(self) -> int:
        return self.succeeded + self.failed + self.cancelled


def minutes(rows: Iterable[tuple[datetime, str, int]], until: datetime, count: int) -> list[Minute]:
    """One entry per minute of the last ``count`` (empty minutes included), oldest first."""
    last = until.replace(second=0, microsecond=0)
    slots = {last - timedelta(minutes=n): [0, 0, 0] for n in range(count)}
    for at, state, n in rows:
        if at in slots:
            slots[at][0 if state == "succeeded" else 1 if state in FAILED else 2] += n
    return [Minute(at, *slots[at]) for at in sorted(slots)]


@dataclass(frozen=True)
class Rates:
    per_second: float
    """Jobs finished per second over the last full minute."""
    failure_rate: float
    """Of the jobs that finished in the window, the share that failed or died."""


def rates(series: list[Minute]) -> Rates:
    last_full = series[-2] if len(series) > 1 else series[-1]
    total = sum(m.total for m in series)
    failed = sum(m.failed for m in series)
    return Rates(last_full.total / 60, failed / total if total else 0.0)


def svg(series: list[Minute], width: int = 720, height: int = 160) -> str:
    peak = max([m.total for m in series] + [1])
    bar = width / max(len(series), 1)
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height + 20}" role="img" '
        f'aria-label="jobs finished per minute">'
    ]
    for i, m in enumerate(series):
        x = i * bar
        y = float(height)
        for value, css in ((m.succeeded, "ok"), (m.failed, "bad"), (m.cancelled, "off")):
            if value:
                h = value / peak * (height - 4)
                y -= h
                parts.append(
                    f'<rect class="{css}" x="{x + 1:.1f}" y="{y:.1f}" width="{bar - 2:.1f}" '
                    f'height="{h:.1f}"><title>{m.at:%H:%M} {css}: {value}</title></rect>'
                )
    for i in (0, len(series) // 2, len(series) - 1):
        if series:
            parts.append(f'<text x="{i * bar:.1f}" y="{height + 15}">{series[i].at:%H:%M}</text>')
    parts.append(f'<text x="{width - 4}" y="12" text-anchor="end">peak {peak}/min</text>')
    parts.append("</svg>")
    return "".join(parts)
