"""The migrations that bring a database to the tables ``schema`` declares.

Append-only: schema version N is ``MIGRATIONS[N - 1]``, and a shipped step is never
edited. Step 1 creates tables from today's declarations, so on a fresh database every
later step finds its columns there already and adds only what is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import Column, Connection, Table, inspect, select

from .schema import (
    ExactString,
    Tables,
    cancellation_columns,
    flow_columns,
    reporting_columns,
    retry_layer_columns,
    scheduling_columns,
    suspension_columns,
)

Migration = Callable[[Connection, Tables], None]


def _create_initial_tables(conn: Connection, tables: Tables) -> None:
    """jobs and calls."""
    tables.metadata.create_all(conn, tables=[tables.jobs, tables.calls], checkfirst=True)


def _add_missing_columns(conn: Connection, tables: Tables, columns: list[Column[Any]]) -> None:
    # Migration 1 creates tables from today's declarations, so on a fresh database the
    # columns are already there: each step after it adds only what is missing.
    existing = {c["name"] for c in inspect(conn).get_columns(tables.jobs.name)}
    operations = Operations(MigrationContext.configure(conn))
    for column in columns:
        if column.name not in existing:
            operations.add_column(tables.jobs.name, column)


def _add_missing_index(conn: Connection, table: Table, suffix: str) -> None:
    """Create the declared index ``<table>_<suffix>`` unless it exists."""
    name = f"{table.name}_{suffix}"
    if name not in {i["name"] for i in inspect(conn).get_indexes(table.name)}:
        next(i for i in table.indexes if i.name == name).create(conn)


def _add_retry_layer(conn: Connection, tables: Tables) -> None:
    """failures, requeues, not_before; the job_errors table; an index for dead letters."""
    _add_missing_columns(conn, tables, retry_layer_columns())
    _add_missing_index(conn, tables.jobs, "state_finished_at")
    tables.job_errors.create(conn, checkfirst=True)


def _add_cancellation(conn: Connection, tables: Tables) -> None:
    """cancel_requested_at: a cancel asked of a running job, seen at its next call."""
    _add_missing_columns(conn, tables, cancellation_columns())


def _add_scheduler(conn: Connection, tables: Tables) -> None:
    """schedules and schedule_runs (the database beat scheduler); jobs.unique_key."""
    _add_missing_columns(conn, tables, scheduling_columns())
    _add_missing_index(conn, tables.jobs, "unique_key")
    tables.metadata.create_all(
        conn, tables=[tables.schedules, tables.schedule_runs], checkfirst=True
    )


def _add_event_indexes(conn: Connection, tables: Tables) -> None:
    """Indexes the event stream reads by: started_at / finished_at / failed_at."""
    for table, column in (
        (tables.jobs, "started_at"),
        (tables.jobs, "finished_at"),
        (tables.calls, "finished_at"),
        (tables.job_errors, "failed_at"),
    ):
        _add_missing_index(conn, table, column)


def _add_suspension(conn: Connection, tables: Tables) -> None:
    """parent_id, awaiting, waiting_topic: dispatched child jobs and the parent waiting
    for them, or for a message; the messages table."""
    _add_missing_columns(conn, tables, suspension_columns())
    tables.messages.create(conn, checkfirst=True)


def _add_exact_identifiers(conn: Connection, tables: Tables) -> None:
    """Ids, keys and names compared byte for byte on MySQL/MariaDB (binary collation);
    jobs.reported_at (a canvas continued once); the workers table (heartbeats)."""
    _add_missing_columns(conn, tables, reporting_columns())
    tables.workers.create(conn, checkfirst=True)
    if conn.dialect.name not in ("mysql", "mariadb"):
        return  # PostgreSQL and SQLite compare exactly already
    for table in tables.metadata.sorted_tables:
        if not conn.dialect.has_table(conn, table.name):
            continue
        # only the columns there by now: a later step adds its own already exact
        existing = {c["name"] for c in inspect(conn).get_columns(table.name)}
        changes = [
            f"MODIFY {conn.dialect.identifier_preparer.quote(c.name)} "
            f"{c.type.compile(conn.dialect)}{'' if c.nullable else ' NOT NULL'}"
            for c in table.columns
            if isinstance(c.type, ExactString) and c.name in existing
        ]
        if changes:
            conn.exec_driver_sql(f"ALTER TABLE {table.name} {', '.join(changes)}")


def _add_flow_control(conn: Connection, tables: Tables) -> None:
    """held, flow_key, debounce_key, held_on (with their indexes); the pauses and flow_gates
    tables: paused queues and tasks, concurrency and rate limits, debounce."""
    _add_missing_columns(conn, tables, flow_columns())
    for suffix in ("flow", "held", "debounce_key"):
        _add_missing_index(conn, tables.jobs, suffix)
    tables.metadata.create_all(conn, tables=[tables.pauses, tables.flow_gates], checkfirst=True)


MIGRATIONS: list[Migration] = [
    _create_initial_tables,
    _add_retry_layer,
    _add_cancellation,
    _add_scheduler,
    _add_event_indexes,
    _add_suspension,
    _add_exact_identifiers,
    _add_flow_control,
]
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
        conn.execute(
            tables.schema_version.insert().values(
                version=version, applied_at=datetime.now(timezone.utc)
            )
        )
    return todo
