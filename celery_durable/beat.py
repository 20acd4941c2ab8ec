"""``celery -A proj beat -S durable``: Celery beat on the ``schedules`` table.

Run as many beat processes as you like: each nominal tick fires exactly once (see
``scheduling``). Construction does no I/O (Celery builds the scheduler twice, once with
``lazy=True``); the code's schedules are synced when beat starts.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.beat import Scheduler

from .app import Durable
from .errors import StorageUnavailable
from .scheduling.beat_import import import_beat_schedule

logger = logging.getLogger(__name__)


class DatabaseScheduler(Scheduler):
    """The ``durable`` beat scheduler (``beat_scheduler = "durable"``)."""

    def __init__(self, app: Celery, *args: Any, **kwargs: Any) -> None:
        self.durable = Durable.of(app)
        super().__init__(app, *args, **kwargs)
        # Changes made through the API must show within seconds, whatever the default.
        configured = float(self.max_interval)  # type: ignore[has-type]
        self.max_interval = min(configured, self.durable.settings.beat_max_interval)

    def setup_schedule(self) -> None:
        import_beat_schedule(self.durable.schedules, self.app.conf.beat_schedule or {})
        self._synced = False
        try:
            self._sync()
        except StorageUnavailable as exc:  # beat keeps running: the next tick tries again
            logger.error("durable beat: cannot sync the schedules yet: %s", exc)

    def _sync(self) -> None:
        changes = self.durable.schedules.sync()
        self._synced = True
        logger.info(
            "durable beat: schedules synced: %s",
            {k: v for k, v in changes.items() if v} or "no changes",
        )

    def tick(self, *args: Any, **kwargs: Any) -> float:
        try:
            if not getattr(self, "_synced", True):
                self._sync()
            self.durable.schedules.tick()
            upcoming = self.durable.schedules.next_due()
        except StorageUnavailable as exc:
            logger.error("durable beat: %s; trying again in %ss", exc, self.max_interval)
            return float(self.max_interval)
        if upcoming is None:
            return float(self.max_interval)
        wait = (upcoming - self.durable.now()).total_seconds()
        return max(0.0, min(wait, float(self.max_interval)))

    @property
    def schedule(self) -> dict[str, Any]:
        return {}  # the schedules live in the database, not in beat's memory

    @property
    def info(self) -> str:
        storage = self.durable.storage
        return f"    . db -> {storage.safe_url}"

    def sync(self) -> None:
        pass  # every change is committed as it happens

    def close(self) -> None:
        pass
