"""Schema upgrades: a database created by an earlier release is brought up to date."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import delete, inspect

from celery_durable.store.base import JobState
from celery_durable.store.schema import SCHEMA_VERSION
from celery_durable.store.sql import SQLStorage
from celery_durable.testing import LEASE, T0, claimed


def _downgrade_to_v1(storage: SQLStorage) -> None:
    """Put the tables back in the shape release 0.1 (schema version 1) created."""
    tables = storage.tables
    with storage._create_engine().begin() as conn:
        operations = Operations(MigrationContext.configure(conn))
        for index in ("state_finished_at", "unique_key", "started_at", "finished_at"):
            operations.drop_index(f"{tables.jobs.name}_{index}", tables.jobs.name)
        operations.drop_index(f"{tables.calls.name}_finished_at", tables.calls.name)
        with operations.batch_alter_table(tables.jobs.name) as batch:  # SQLite rebuilds
            for column in ("failures", "requeues", "not_before", "cancel_requested_at",
                           "unique_key"):
                batch.drop_column(column)
        tables.job_errors.drop(conn)
        tables.schedule_runs.drop(conn)
        tables.schedules.drop(conn)
        conn.execute(delete(tables.schema_version).where(
            tables.schema_version.c.version > 1))


@pytest.mark.parametrize("backend", ["sqlite", "postgres", "mysql"])
def test_a_version_1_database_is_upgraded_in_place(
        backend: str, sql_storage_factory: Callable[[str], SQLStorage]) -> None:
    storage = sql_storage_factory(backend)
    lease = claimed(storage, "old-job")  # a job in flight across the upgrade
    _downgrade_to_v1(storage)
    storage.dispose()
    columns = {c["name"] for c in inspect(storage.engine).get_columns(storage.tables.jobs.name)}
    assert not {"failures", "unique_key"} & columns
    assert storage.pending_migrations() == list(range(2, SCHEMA_VERSION + 1))

    assert storage.migrate() == list(range(2, SCHEMA_VERSION + 1))
    assert storage.migrate() == []  # safe to run twice
    storage.dispose()
    job = storage.get_job("old-job")
    assert job is not None and (job.failures, job.requeues, job.not_before) == (0, 0, None)
    storage.retry_job(lease, '{"type": "Timeout"}', [], T0 + LEASE, T0 + LEASE * 2, T0)
    assert [e.execution for e in storage.job_errors("old-job")] == [1]
    indexes = {i["name"] for i in inspect(storage.engine).get_indexes(storage.tables.jobs.name)}
    assert {f"{storage.tables.jobs.name}_{n}" for n in ("state_finished_at", "unique_key")} \
        <= indexes
    assert storage.claim_job("old-job", "w2", T0 + timedelta(minutes=1),
                             T0 + timedelta(minutes=2)).outcome.value == "claimed"
    assert storage.get_job("old-job").state is JobState.RUNNING  # type: ignore[union-attr]
