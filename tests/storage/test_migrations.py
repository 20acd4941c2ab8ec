"""Schema upgrades: a database created by release 0.1 (schema version 1) is brought up to
date, and the migrations give exactly the tables the code declares."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import (
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    inspect,
    text,
)
from sqlalchemy.dialects import mysql

from celery_durable.store.records import JobState
from celery_durable.store.sql import SQLStorage
from celery_durable.store.sql.migrations import SCHEMA_VERSION
from celery_durable.store.sql.schema import ExactString, binary_collation
from celery_durable.testing import LEASE, T0

_JSON = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
_TIME = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def _create_version_1(storage: SQLStorage) -> None:
    """The tables exactly as release 0.1 created them (frozen here, never derived from
    today's declarations): no retry, cancel, scheduling or suspension columns, no
    job_errors / schedules / messages / workers tables, the server's default collation
    on MySQL, and one job in flight."""
    prefix = storage.table_prefix
    metadata = MetaData()
    jobs = Table(
        f"{prefix}jobs",
        metadata,
        Column("id", String(191), primary_key=True),
        Column("task", String(255), nullable=False),
        Column("args", _JSON, nullable=False),
        Column("kwargs", _JSON, nullable=False),
        Column("queue", String(255)),
        Column("priority", Integer),
        Column("options", _JSON, nullable=False),
        Column("state", String(16), nullable=False),
        Column("attempts", Integer, nullable=False),
        Column("recoveries", Integer, nullable=False),
        Column("lease_owner", String(128)),
        Column("lease_expires_at", _TIME),
        Column("result", _JSON),
        Column("error", _JSON),
        Column("created_at", _TIME, nullable=False),
        Column("started_at", _TIME),
        Column("finished_at", _TIME),
    )
    Index(f"{prefix}jobs_lease_expires_at", jobs.c.lease_expires_at)
    Table(
        f"{prefix}calls",
        metadata,
        Column("root_id", String(191), primary_key=True),
        Column("job_id", String(191), primary_key=True),
        Column("seq", Integer, primary_key=True, autoincrement=False),
        Column("name", String(255), nullable=False),
        Column("args_digest", String(64), nullable=False),
        Column("state", String(16), nullable=False),
        Column("attempts", Integer, nullable=False),
        Column("result", _JSON),
        Column("error", _JSON),
        Column("started_at", _TIME, nullable=False),
        Column("finished_at", _TIME, nullable=False),
    )
    versions = Table(
        f"{prefix}schema_version",
        metadata,
        Column("version", Integer, primary_key=True, autoincrement=False),
        Column("applied_at", _TIME, nullable=False),
    )
    storage.drop_tables()
    naive = T0.replace(tzinfo=None)
    with storage._create_engine().begin() as conn:
        metadata.create_all(conn)
        conn.execute(versions.insert().values(version=1, applied_at=naive))
        conn.execute(
            jobs.insert().values(
                id="old-job",
                task="tests.flow",
                args="[1]",
                kwargs="{}",
                queue="default",
                options="{}",
                state="running",
                attempts=1,
                recoveries=0,
                lease_owner="w1",
                lease_expires_at=naive + LEASE,
                created_at=naive,
                started_at=naive,
            )
        )


@pytest.mark.parametrize("backend", ["sqlite", "postgres", "mysql"])
def test_a_version_1_database_is_upgraded_in_place(
    backend: str, sql_storage_factory: Callable[[str], SQLStorage]
) -> None:
    storage = sql_storage_factory(backend)
    _create_version_1(storage)
    storage.dispose()
    assert storage.pending_migrations() == list(range(2, SCHEMA_VERSION + 1))

    assert storage.migrate() == list(range(2, SCHEMA_VERSION + 1))
    assert storage.migrate() == []  # safe to run twice
    storage.dispose()
    _assert_declared_schema(storage)

    job = storage.get_job("old-job")  # the job in flight survived, with defaults
    assert job is not None and (job.state, job.failures, job.awaiting, job.reported_at) == (
        JobState.RUNNING,
        0,
        0,
        None,
    )
    later = T0 + LEASE * 2
    [expired] = storage.expired_jobs(later, 10)
    assert storage.recover_job(expired, later + LEASE, later)
    assert storage.claim_job("old-job", "w2", later, later + LEASE).outcome.value == "claimed"
    # the upgraded id columns compare exactly, also on MySQL/MariaDB
    from celery_durable.testing import new_job

    assert storage.create_job(new_job("Old-Job"))
    assert storage.get_job("Old-Job") is not None
    assert storage.get_job("old-job").state is JobState.RUNNING  # type: ignore[union-attr]


def _assert_declared_schema(storage: SQLStorage) -> None:
    """Every declared table, column and index exists, and nothing else."""
    inspector = inspect(storage.engine)
    for table in storage.tables.metadata.sorted_tables:
        columns = {c["name"]: c for c in inspector.get_columns(table.name)}
        assert set(columns) == {c.name for c in table.columns}, table.name
        for column in table.columns:
            assert columns[column.name]["nullable"] == (
                column.nullable and not column.primary_key
            ), (table.name, column.name)
        declared = {i.name for i in table.indexes}
        found = {i["name"] for i in inspector.get_indexes(table.name)}
        assert declared <= found, (table.name, declared - found)
        pk = inspector.get_pk_constraint(table.name)["constrained_columns"]
        assert pk == [c.name for c in table.primary_key.columns], table.name
    if storage.engine.dialect.name in ("mysql", "mariadb"):
        expected = binary_collation(storage.engine.dialect)
        with storage.engine.connect() as conn:
            for table in storage.tables.metadata.sorted_tables:
                collations = dict(
                    conn.execute(
                        text(
                            "SELECT column_name, collation_name FROM information_schema.columns "
                            "WHERE table_schema = DATABASE() AND table_name = :t"
                        ),
                        {"t": table.name},
                    ).all()
                )
                for column in table.columns:
                    if isinstance(column.type, ExactString):
                        assert collations[column.name] == expected, (table.name, column.name)


def test_the_version_1_fixture_is_what_migration_1_created_then(tmp_path: Path) -> None:
    """Guard: the frozen release-0.1 shape must not drift towards today's declarations
    (that would make the upgrade test prove nothing)."""
    storage = SQLStorage(f"sqlite:///{tmp_path}/v1.sqlite3", table_prefix="v1_")
    _create_version_1(storage)
    inspector = inspect(storage.engine)
    assert set(inspector.get_table_names()) == {"v1_jobs", "v1_calls", "v1_schema_version"}
    columns = {c["name"] for c in inspector.get_columns("v1_jobs")}
    assert not columns & {
        "failures",
        "cancel_requested_at",
        "unique_key",
        "parent_id",
        "reported_at",
    }
    storage.dispose()
