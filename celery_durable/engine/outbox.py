"""Transactional enqueue, an outbox: ``durable.enqueue(..., connection=conn)``.

The job's row is written on the caller's connection, inside the caller's transaction,
so it commits or rolls back with the caller's own rows. Its message is sent only after
that transaction commits; a transaction that rolls back leaves no row and sends
nothing. The row is written marked ``Held.OUTBOX`` with a short deadline
(``durable_outbox_relay_after``): if the process dies between the commit and the
publish, the recovery sweeper of any worker publishes it once that deadline passes
(compare-and-set: exactly one sweeper does). A publish that happened clears the mark, so
the relay never sends it twice; and a claim makes any double publish harmless anyway.

Joined transactions: a SQLAlchemy ``Session`` (published in its ``after_commit``), a
``Connection`` (its ``commit`` event fires just before the database commits, so a
publisher thread sends the message once the row is visible to the store), or any
``Transaction`` adapter (``celery_durable.contrib.django`` has Django's).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from kombu.connection import Connection as BrokerConnection
from sqlalchemy import Connection, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session

from ..errors import ConfigurationError
from ..store.records import NewJob
from ..store.sql import SQLStorage

if TYPE_CHECKING:
    from .runtime import Runtime

logger = logging.getLogger(__name__)
OUTBOX_HEADER = "durable_outbox"
"""Set on the messages of jobs enqueued in a transaction: a delivery that finds no row
(a savepoint the row was in rolled back) drops the message instead of creating the job."""
_VISIBLE_WITHIN = 10.0


@runtime_checkable
class Transaction(Protocol):
    """The caller's open transaction an enqueue joins."""

    def database_url(self) -> URL:
        """Where it runs: it must be the store's database."""

    def write(self, storage: SQLStorage, job: NewJob) -> None:
        """Insert the job's row (``storage.outbox_insert``) in this transaction."""

    def exists(self, storage: SQLStorage, job_id: str) -> bool:
        """Whether the job's row exists, as this transaction sees it."""

    def after_commit(self, send: Callable[[], None]) -> None:
        """Call ``send`` once this transaction has committed (it may also be called
        when a savepoint is released: ``send`` checks that the row is there)."""


class SessionTransaction:
    """A ``Session``: its messages go when its outermost transaction commits (a
    savepoint's release fires ``after_commit`` too, and is not a commit)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def database_url(self) -> URL:
        return self.session.get_bind().engine.url

    def write(self, storage: SQLStorage, job: NewJob) -> None:
        statement, params = storage.outbox_insert(job)
        self.session.execute(statement, params)

    def exists(self, storage: SQLStorage, job_id: str) -> bool:
        return self.session.execute(storage.outbox_exists(), {"p_id": job_id}).first() is not None

    def after_commit(self, send: Callable[[], None]) -> None:
        session = self.session
        pending = _session_sends.get(session)
        if pending is None:  # one pair of listeners per session, for every enqueue in it
            pending = _session_sends[session] = []
            event.listen(session, "after_commit", _send_all)
            event.listen(session, "after_transaction_end", _forget_after_rollback)
        pending.append(send)


_session_sends: weakref.WeakKeyDictionary[Session, list[Callable[[], None]]] = (
    weakref.WeakKeyDictionary()
)


def _send_all(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint released: the outer transaction may still roll back
    sends = _session_sends.get(session) or []
    _session_sends[session] = []
    for send in sends:
        send()  # each looks for its row first: one in a savepoint rolled back is gone


def _forget_after_rollback(session: Session, transaction: Any) -> None:
    if transaction.parent is None:  # the outermost ended; after a commit it is empty
        _session_sends[session] = []


class ConnectionTransaction:
    """A Core ``Connection``: its ``commit`` event fires just before the database
    commits, so its messages go from a publisher thread once the store sees the row."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def database_url(self) -> URL:
        return self.connection.engine.url

    def write(self, storage: SQLStorage, job: NewJob) -> None:
        statement, params = storage.outbox_insert(job)
        self.connection.execute(statement, params)

    def exists(self, storage: SQLStorage, job_id: str) -> bool:
        found = self.connection.execute(storage.outbox_exists(), {"p_id": job_id}).first()
        return found is not None

    def after_commit(self, send: Callable[[], None]) -> None:
        conn = self.connection
        # per Connection object: its .info belongs to the pooled DBAPI connection and
        # outlives it, but listeners on a Connection do not
        pending = _connection_sends.get(conn)
        if pending is None:
            pending = _connection_sends[conn] = []
            event.listen(conn, "commit", _send_when_visible)
            event.listen(conn, "rollback", _forget_for_connection)
        pending.append(send)


_connection_sends: weakref.WeakKeyDictionary[Connection, list[Callable[[], None]]] = (
    weakref.WeakKeyDictionary()
)


def _send_when_visible(conn: Connection) -> None:
    sends = _connection_sends.get(conn) or []
    _connection_sends[conn] = []
    for send in sends:
        _publisher().put(send)


def _forget_for_connection(conn: Connection) -> None:
    _connection_sends[conn] = []


class _Publisher:
    """One daemon thread per process running sends that wait for their row."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.queue: queue.Queue[Callable[[], None]] = queue.Queue()
        threading.Thread(target=self._run, name="celery-durable-outbox", daemon=True).start()

    def put(self, send: Callable[[], None]) -> None:
        self.queue.put(send)

    def _run(self) -> None:
        while True:
            send = self.queue.get()
            try:
                send()
            except Exception:
                logger.exception("outbox: a message was not sent; the relay sends it")


_publisher_lock = threading.Lock()
_publisher_instance: _Publisher | None = None


def _publisher() -> _Publisher:
    global _publisher_instance
    with _publisher_lock:
        if _publisher_instance is None or _publisher_instance.pid != os.getpid():
            _publisher_instance = _Publisher()
        return _publisher_instance


def transaction_of(value: Any, task: str) -> Transaction | None:
    """The transaction ``connection=`` names; None for none, or for a kombu Connection
    (Celery's own ``apply_async(connection=...)``: a broker connection to reuse)."""
    if value is None or isinstance(value, BrokerConnection):
        return None
    if isinstance(value, Session):
        return SessionTransaction(value)
    if isinstance(value, Connection):
        return ConnectionTransaction(value)
    if isinstance(value, Transaction):
        return value
    raise ConfigurationError(
        f"task {task!r}: connection= takes a SQLAlchemy Session or Connection in an open "
        f"transaction on the store's database (or a celery_durable Transaction adapter; "
        f"a kombu Connection goes to Celery as its broker connection), "
        f"got {type(value).__name__}"
    )


def store_of(runtime: Runtime, task: str) -> SQLStorage:
    storage = runtime.storage
    if not isinstance(storage, SQLStorage):
        raise ConfigurationError(
            f"task {task!r}: connection= needs the SQL store (the job's row joins your "
            f"transaction); this app's store is {type(storage).__name__}"
        )
    return storage


def check_same_database(storage: SQLStorage, theirs: URL, task: str) -> None:
    """The caller's transaction must be on the store's database, or the row would be
    committed somewhere no worker looks."""
    ours = make_url(storage.engine.url)
    if _where(ours) != _where(theirs):
        raise ConfigurationError(
            f"task {task!r}: connection= is on {theirs.render_as_string(hide_password=True)}, "
            f"but the durable store is {storage.safe_url}; the job's row must be written "
            f"in a transaction on the store's own database (durable_database_url)"
        )


def _where(url: URL) -> tuple[Any, ...]:
    backend = url.get_backend_name()
    if backend == "sqlite":
        database = url.database or ""
        if database in ("", ":memory:"):
            return (backend, id(url))  # an in-memory database is nobody else's
        return (backend, os.path.realpath(database))
    backend = "mysql" if backend == "mariadb" else backend
    host = url.host or "localhost"
    if host in ("127.0.0.1", "::1", "localhost", ""):
        host = "localhost"
    return (backend, host, url.port or _DEFAULT_PORTS.get(backend), url.database)


_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306}


def visible_within(transaction: Transaction) -> float:
    """How long a send waits for its row: a Core Connection sends from its commit event,
    which fires before the database commits; every other kind sends after the commit,
    so a missing row is one its savepoint rolled back."""
    return _VISIBLE_WITHIN if isinstance(transaction, ConnectionTransaction) else 0.0


def wait_until_visible(runtime: Runtime, job_id: str, within: float = _VISIBLE_WITHIN) -> bool:
    """Until the store sees the row (the caller's commit has landed): False if it never
    does within ``within`` seconds (the commit failed, or the row's savepoint rolled
    back: nothing must be sent)."""
    if runtime.storage.get_job(job_id) is not None:
        return True
    deadline = time.monotonic() + within
    pause = 0.002
    while time.monotonic() < deadline:
        if runtime.storage.get_job(job_id) is not None:
            return True
        time.sleep(pause)
        pause = min(pause * 2, 0.2)
    return False
