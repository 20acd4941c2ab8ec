"""durable_synchronous_commit: the claim and finish statements (and, opted in, the call
checkpoints) go on a connection set to the relaxed synchronous_commit; everything else
keeps waiting for its WAL flush. Bad values are refused before anything is written."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from celery import Celery

from celery_durable import ConfigurationError, Durable, JobState
from celery_durable.store.sql import SQLStorage
from celery_durable.testing import T0, call_record, claimed
from tests.conftest import POSTGRES_URL
from tests.storage.test_hot_path import psycopg_dsn

pytestmark = pytest.mark.postgres


def _session(storage: SQLStorage, kind: str) -> tuple[str, str]:
    """The setting and the last statement of this thread's ``kind`` connection, as the
    server sees them."""
    hot = storage._hot
    assert hot is not None
    held = getattr(hot._local, kind, None)
    assert held is not None, f"no {kind} connection was opened"
    with psycopg.connect(psycopg_dsn(POSTGRES_URL), autocommit=True) as admin:
        row = admin.execute(
            "SELECT query FROM pg_stat_activity WHERE pid = %s", (held.conn.info.backend_pid,)
        ).fetchone()
    with held.conn.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        setting = cursor.fetchone()[0]
    return setting, row[0]


def test_claim_and_finish_are_relaxed_checkpoints_are_not(
    sql_storage_factory: Callable[..., SQLStorage],
) -> None:
    storage = sql_storage_factory("postgres", synchronous_commit="off")
    lease = claimed(storage, "j1")
    setting, last = _session(storage, "relaxed")
    assert setting == "off"
    assert last.lstrip().startswith("UPDATE") and storage.tables.jobs.name in last
    storage.record_call(call_record("j1", 1), lease)
    setting, last = _session(storage, "held")
    assert setting == "on"
    assert "INSERT INTO" in last and storage.tables.calls.name in last
    storage.finish_job(lease, JobState.SUCCEEDED, "1", None, T0)
    setting, last = _session(storage, "relaxed")
    assert last.lstrip().startswith("UPDATE") and "result" in last
    job = storage.get_job("j1")
    assert job is not None and job.state is JobState.SUCCEEDED
    assert [c.seq for c in storage.load_history("j1")] == [1]


def test_relaxed_checkpoints_send_the_calls_relaxed_too(
    sql_storage_factory: Callable[..., SQLStorage],
) -> None:
    storage = sql_storage_factory("postgres", synchronous_commit="local", relaxed_checkpoints=True)
    lease = claimed(storage, "j1")
    storage.record_call(call_record("j1", 1), lease)
    setting, last = _session(storage, "relaxed")
    assert setting == "local"
    assert "INSERT INTO" in last and storage.tables.calls.name in last


def test_without_the_hot_path_the_setting_is_local_to_the_statement(
    sql_storage_factory: Callable[..., SQLStorage],
) -> None:
    storage = sql_storage_factory("postgres", synchronous_commit="off", hot_path=False)
    sent: list[str] = []
    stop = storage.observe_statements(lambda sql, params: sent.append(sql))
    try:
        lease = claimed(storage, "j1")
        storage.record_call(call_record("j1", 1), lease)
    finally:
        stop()
    claim = next(i for i, sql in enumerate(sent) if sql.lstrip().startswith("UPDATE"))
    assert sent[claim - 1] == "SET LOCAL synchronous_commit TO off"
    insert = next(i for i, sql in enumerate(sent) if "INSERT INTO" in sql and "calls" in sql)
    assert "synchronous_commit" not in sent[insert - 1]
    job = storage.get_job("j1")
    assert job is not None and job.lease_owner == lease.owner


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"durable_synchronous_commit": "sometimes"}, "must be one of on, off, local"),
        ({"durable_relaxed_checkpoints": True}, "needs durable_synchronous_commit"),
        (
            {"durable_synchronous_commit": "off", "durable_database_url": "sqlite:///x.db"},
            "is a PostgreSQL setting; the durable database is sqlite",
        ),
    ],
)
def test_bad_commit_policies_are_refused_at_configuration(
    conf: dict[str, Any], message: str
) -> None:
    app = Celery("policy", set_as_current=False)
    app.conf.update({"durable_database_url": POSTGRES_URL, **conf})
    with pytest.raises(ConfigurationError, match=message):
        Durable(app)
