"""The hot path's connections: one per thread, a new one after a fork, and the parent's
left working; its statements prepared on PostgreSQL; its errors mapped like the
SQLAlchemy path's."""

from __future__ import annotations

import math
import os
import queue
import select
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url

from celery_durable import StorageUnavailable
from celery_durable.store.records import ClaimOutcome
from celery_durable.store.sql import SQLStorage
from celery_durable.testing import LEASE, T0, call_record, claimed, new_job
from tests.conftest import MYSQL_URL, POSTGRES_URL
from tests.integration.conftest import wait_for


def _held(storage: SQLStorage) -> object:
    hot = storage._hot
    assert hot is not None, "the hot path is off for this store"
    held = getattr(hot._local, "held", None)
    assert held is not None
    return held.conn


@pytest.mark.parametrize("backend", ["sqlite", "postgres", "mysql"])
def test_each_thread_holds_one_connection(
    backend: str, sql_storage_factory: Callable[[str], SQLStorage]
) -> None:
    storage = sql_storage_factory(backend)
    storage.create_job(new_job("main"))
    mine = _held(storage)
    storage.get_job("main")
    assert _held(storage) is mine  # the same one for the next statement
    theirs: list[object] = []

    def other() -> None:
        storage.create_job(new_job("other"))
        theirs.append(_held(storage))

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert theirs and theirs[0] is not mine
    assert storage.get_job("other") is not None


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_prefork_children_open_their_own_and_the_parent_keeps_its(
    backend: str, sql_storage_factory: Callable[[str], SQLStorage]
) -> None:
    storage = sql_storage_factory(backend)
    lease = claimed(storage, "parent")  # the parent's connection is open and prepared
    for seq in range(1, 7):  # psycopg prepares after the 5th execution
        storage.record_call(call_record("parent", seq), lease)
    parent_connection = _held(storage)
    children = []
    for n in range(3):
        pid = os.fork()
        if pid == 0:  # a prefork pool child: the same statements, its own connection
            try:
                ok = storage.create_job(new_job(f"child-{n}"))
                child_lease = storage.claim_job(f"child-{n}", "c", T0, T0 + LEASE)
                ok = ok and child_lease.outcome is ClaimOutcome.CLAIMED
                ok = ok and _held(storage) is not parent_connection
                os._exit(0 if ok else 1)
            except BaseException:
                os._exit(2)
        children.append(pid)
    for pid in children:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    # the parent's connection survived its children (nothing closed it under it)
    storage.record_call(call_record("parent", 7), lease)
    assert _held(storage) is parent_connection
    assert [c.seq for c in storage.load_history("parent")] == list(range(1, 8))
    assert all(storage.get_job(f"child-{n}") is not None for n in range(3))


@pytest.mark.postgres
def test_hot_statements_are_prepared_on_postgres(
    sql_storage_factory: Callable[[str], SQLStorage],
) -> None:
    storage = sql_storage_factory("postgres")
    lease = claimed(storage, "j1")
    for seq in range(1, 8):
        storage.record_call(call_record("j1", seq), lease)
    connection = _held(storage)
    with connection.cursor() as cursor:  # type: ignore[attr-defined]
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [row[0] for row in cursor.fetchall()]
    assert any(storage.tables.calls.name in sql and "INSERT" in sql for sql in prepared)


@pytest.mark.postgres
def test_an_unreachable_server_is_storage_unavailable_and_the_next_call_reconnects(
    sql_storage_factory: Callable[[str], SQLStorage],
) -> None:
    storage = sql_storage_factory("postgres")
    _never_check_idle(storage)  # the statement itself meets the closed connection
    storage.create_job(new_job("j1"))
    connection = _held(storage)
    backend = connection.info.backend_pid  # type: ignore[attr-defined]
    with psycopg.connect(psycopg_dsn(POSTGRES_URL), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (backend,))  # what a restart does
    with pytest.raises(StorageUnavailable, match="cannot use the durable database"):
        storage.get_job("j1")
    job = storage.get_job("j1")  # a fresh connection
    assert job is not None and _held(storage) is not connection
    assert job.created_at == T0 and job.lease_expires_at == T0 + timedelta(minutes=15)


def _never_check_idle(storage: SQLStorage) -> None:
    assert storage._hot is not None
    storage._hot.idle_check_after = math.inf


@pytest.mark.parametrize("backend", ["postgres", "mysql"])
def test_a_connection_the_server_closed_while_unused_is_replaced_before_the_statement(
    backend: str, sql_storage_factory: Callable[[str], SQLStorage]
) -> None:
    """A restart while a long call runs: the call's checkpoint does not fail on the
    connection the server closed meanwhile (nor wait for the job's lease to expire)."""
    storage = sql_storage_factory(backend)
    assert storage._hot is not None
    storage._hot.idle_check_after = 0.0  # "unused long enough", without waiting for it
    lease = claimed(storage, "j1")
    before = _held(storage)
    _close_from_the_server(backend, before)
    storage.record_call(call_record("j1", 1), lease)  # no error: a new connection
    assert _held(storage) is not before
    assert [c.seq for c in storage.load_history("j1")] == [1]


def _close_from_the_server(backend: str, connection: Any) -> None:
    if backend == "postgres":
        _terminate(connection)
        return
    import pymysql

    url = make_url(MYSQL_URL)
    admin = pymysql.connect(
        host=url.host, port=url.port or 3306, user=url.username, password=url.password or ""
    )
    try:
        with admin.cursor() as cursor:
            cursor.execute(f"KILL {int(connection.thread_id())}")
    finally:
        admin.close()
    wait_for(lambda: _readable(connection), 10, "the server to close the connection")


def _readable(connection: Any) -> bool:
    return bool(select.select([connection._sock.fileno()], [], [], 0)[0])


def _terminate(*connections: object) -> None:
    """What a server restart does to each of these connections."""
    with psycopg.connect(psycopg_dsn(POSTGRES_URL), autocommit=True) as admin:
        for connection in connections:
            backend = connection.info.backend_pid  # type: ignore[attr-defined]
            admin.execute("SELECT pg_terminate_backend(%s)", (backend,))


def _outcome(work: Callable[[], object]) -> object:
    try:
        return work()
    except Exception as exc:
        return exc


def _other_thread_holding_a_connection(storage: SQLStorage) -> tuple[object, Callable[..., object]]:
    """A thread that keeps running statements on its own held connection when asked."""
    asks: queue.Queue[Callable[[], object] | None] = queue.Queue()
    answers: queue.Queue[object] = queue.Queue()

    def serve() -> None:
        while (work := asks.get()) is not None:
            answers.put(_outcome(work))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def ask(work: Callable[[], object] | None) -> object:
        asks.put(work)
        return None if work is None else answers.get(timeout=30)

    held = ask(lambda: (storage.get_job("j1"), _held(storage))[1])
    return held, ask


@pytest.mark.postgres
@pytest.mark.parametrize("first", ["hot path", "SQLAlchemy path"])
def test_a_server_gone_away_replaces_every_threads_connection_not_only_the_failing_one(
    first: str, sql_storage_factory: Callable[[str], SQLStorage]
) -> None:
    """After a restart, only the first statement to meet it fails: a thread that was idle
    meanwhile (an async body's call thread) reconnects instead of failing its checkpoint."""
    storage = sql_storage_factory("postgres")
    _never_check_idle(storage)  # each statement meets its closed connection itself
    storage.create_job(new_job("j1"))
    mine = _held(storage)
    theirs, ask = _other_thread_holding_a_connection(storage)
    assert theirs is not mine
    with storage.engine.connect() as pooled:  # SQLAlchemy's pool keeps one too
        pooled_connection = pooled.connection.dbapi_connection
    _terminate(mine, theirs, pooled_connection)
    with pytest.raises(StorageUnavailable, match="cannot use the durable database"):
        if first == "hot path":
            storage.get_job("j1")
        else:
            storage.get_jobs(["j1"])
    # SQLAlchemy's pool (no pre-ping) was replaced too: its connection was dead as well
    assert [j.id for j in storage.get_jobs(["j1"])] == ["j1"]
    job = ask(lambda: storage.get_job("j1"))  # its connection was dead too
    assert not isinstance(job, Exception), job
    assert job is not None and job.id == "j1"  # type: ignore[attr-defined]
    assert ask(lambda: _held(storage)) is not theirs
    ask(None)


def psycopg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
