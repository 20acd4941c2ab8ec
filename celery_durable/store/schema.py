"""Tables, declared once in SQLAlchemy Core, and the migrations that create them.

Dialect differences live here and nowhere else: MySQL needs fractional-second
DATETIME and LONGTEXT, everything else takes the portable types.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    select,
)
from sqlalchemy.dialects import mysql

ID = String(191)  # 191 * 4 bytes fits MySQL's utf8mb4 index limit
NAME = String(255)
JSON_TEXT = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in Python, naive UTC in the database (microseconds kept)."""

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("celery-durable stores aware datetimes only")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class Tables:
    metadata: MetaData
    jobs: Table
    calls: Table
    schema_version: Table


def build_tables(prefix: str) -> Tables:
    metadata = MetaData()
    jobs = Table(
        f"{prefix}jobs", metadata,
        Column("id", ID, primary_key=True),
        Column("task", NAME, nullable=False),
        Column("args", JSON_TEXT, nullable=False),
        Column("kwargs", JSON_TEXT, nullable=False),
        Column("queue", NAME),
        Column("priority", Integer),
        Column("options", JSON_TEXT, nullable=False),
        Column("state", String(16), nullable=False),
        Column("attempts", Integer, nullable=False, default=0),
        Column("recoveries", Integer, nullable=False, default=0),
        Column("lease_owner", String(128)),
        Column("lease_expires_at", UTCDateTime()),
        Column("result", JSON_TEXT),
        Column("error", JSON_TEXT),
        Column("created_at", UTCDateTime(), nullable=False),
        Column("started_at", UTCDateTime()),
        Column("finished_at", UTCDateTime()),
    )
    # Recovery scans only active rows past their deadline; finished rows hold NULL here.
    Index(f"{prefix}jobs_lease_expires_at", jobs.c.lease_expires_at)
    # Keyed by root first: one index range serves a whole tree's history, and a child
    # scope "<job>.<seq>" can never collide with a real job whose id has that shape.
    calls = Table(
        f"{prefix}calls", metadata,
        Column("root_id", ID, primary_key=True),
        Column("job_id", ID, primary_key=True),
        Column("seq", Integer, primary_key=True, autoincrement=False),
        Column("name", NAME, nullable=False),
        Column("args_digest", String(64), nullable=False),
        Column("state", String(16), nullable=False),
        Column("attempts", Integer, nullable=False),
        Column("result", JSON_TEXT),
        Column("error", JSON_TEXT),
        Column("started_at", UTCDateTime(), nullable=False),
        Column("finished_at", UTCDateTime(), nullable=False),
    )
    schema_version = Table(
        f"{prefix}schema_version", metadata,
        Column("version", Integer, primary_key=True, autoincrement=False),
        Column("applied_at", UTCDateTime(), nullable=False),
    )
    return Tables(metadata, jobs, calls, schema_version)


Migration = Callable[[Connection, Tables], None]


def _create_initial_tables(conn: Connection, tables: Tables) -> None:
    tables.metadata.create_all(conn, tables=[tables.jobs, tables.calls], checkfirst=True)


# Append-only: version N is MIGRATIONS[N - 1]. Never edit a shipped step; add one.
MIGRATIONS: list[Migration] = [_create_initial_tables]
SCHEMA_VERSION = len(MIGRATIONS)


def pending_migrations(conn: Connection, tables: Tables) -> list[int]:
    if not conn.dialect.has_table(conn, tables.schema_version.name):
        return list(range(1, SCHEMA_VERSION + 1))
    applied = set(conn.scalars(select(tables.schema_version.c.version)))
    return [v for v in range(1, SCHEMA_VERSION + 1) if v not in applied]


def apply_migrations(conn: Connection, tables: Tables) -> list[int]:
    """Apply what is missing; returns the versions applied (empty when up to date)."""
    tables.schema_version.create(conn, checkfirst=True)
    todo = pending_migrations(conn, tables)
    for version in todo:
        MIGRATIONS[version - 1](conn, tables)
        conn.execute(tables.schema_version.insert().values(
            version=version, applied_at=datetime.now(timezone.utc)))
    return todo
