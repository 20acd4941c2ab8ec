"""Django: enqueue inside ``transaction.atomic()`` and the job joins Django's transaction.

``join_transactions(durable)`` (in your Celery module, after ``Durable(app)``) makes
every durable enqueue that runs inside an atomic block on the store's database write
its row in that block, through Django's own connection, and send its message from
``transaction.on_commit``: a view that rolls back leaves no job, and a worker never
sees a job before the rows it reads are committed. Outside an atomic block (Django's
autocommit) an enqueue is what it always is. ``DjangoTransaction(using)`` is the same
for one enqueue: ``durable.enqueue(task, ..., connection=DjangoTransaction())``.

Needs ``pip install 'celery-durable[django]'`` and the store on the same database as
Django's ``DATABASES[using]`` (``CELERY_DURABLE_DATABASE_URL`` naming it with a
SQLAlchemy driver, e.g. ``postgresql+psycopg://...``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import URL

from ..app import Durable
from ..errors import ConfigurationError
from ..store.records import NewJob
from ..store.sql import SQLStorage

try:
    from django.db import connections, transaction
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ImportError(
        "celery_durable.contrib.django needs Django: pip install 'celery-durable[django]'"
    ) from exc

_BACKENDS = {
    "django.db.backends.postgresql": "postgresql",
    "django.db.backends.mysql": "mysql",
    "django.db.backends.sqlite3": "sqlite",
}


class DjangoTransaction:
    """The transaction Django's connection ``using`` is in (an ``atomic()`` block, or
    autocommit: then the row commits at once and the message follows)."""

    def __init__(self, using: str = "default") -> None:
        self.using = using

    def database_url(self) -> URL:
        config = connections[self.using].settings_dict
        backend = _BACKENDS.get(config["ENGINE"])
        if backend is None:
            raise ConfigurationError(
                f"Django database {self.using!r} uses {config['ENGINE']}; celery-durable "
                f"joins transactions on {', '.join(sorted(_BACKENDS))}"
            )
        return URL.create(
            backend,
            username=config.get("USER") or None,
            host=config.get("HOST") or None,
            port=int(config["PORT"]) if config.get("PORT") else None,
            database=str(config["NAME"]),
        )

    def write(self, storage: SQLStorage, job: NewJob) -> None:
        sql, params = storage.outbox_insert_sql(job)
        with connections[self.using].cursor() as cursor:
            cursor.execute(sql, params)

    def exists(self, storage: SQLStorage, job_id: str) -> bool:
        table = connections[self.using].ops.quote_name(storage.tables.jobs.name)
        with connections[self.using].cursor() as cursor:
            cursor.execute(f"SELECT 1 FROM {table} WHERE id = %s", [job_id])
            return cursor.fetchone() is not None

    def after_commit(self, send: Callable[[], None]) -> None:
        # Django runs it after the outermost atomic block commits, and drops it when
        # the savepoint it was registered in rolls back
        transaction.on_commit(send, using=self.using)


def join_transactions(durable: Durable, using: str = "default") -> None:
    """Every durable enqueue made inside ``transaction.atomic(using=using)`` joins it."""

    def ambient() -> Any:
        return DjangoTransaction(using) if connections[using].in_atomic_block else None

    durable.runtime.ambient_transaction = ambient
