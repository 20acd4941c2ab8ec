"""The hot path: the statements every job sends, compiled once per store and sent on a
DBAPI connection the calling thread holds, prepared where the driver can (psycopg 3).

A durable job's life is a handful of single-row statements (enqueue, claim, one per
call, finish). Through SQLAlchemy each also pays a pool checkout and checkin and the
``Connection.execute`` machinery, which together cost more than PostgreSQL's commit
itself; here each is one ``cursor.execute`` on a connection this thread already has.
The statements are the same Core statements the rest of the store uses, compiled by
SQLAlchemy for the engine's dialect; their bind and result processing is SQLAlchemy's
too (the UTC datetimes). SQLAlchemy keeps the schema, the migrations and every statement
that is not hot.

Connections: one per thread, opened on first use, in autocommit mode (each statement is
its own commit, as on the SQLAlchemy path), and opened again in a forked child (the
parent's is left alone: psycopg does not close a connection from another process).
A connection that failed is dropped; the next statement opens a new one. Driver errors
come out as SQLAlchemy's exception classes, so the store maps them once.

The drivers it knows (psycopg 3, PyMySQL, sqlite3) are in ``DRIVERS``; for any other the
store uses the SQLAlchemy path for everything.
"""

from __future__ import annotations

import contextlib
import copy
import os
import select
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timezone
from typing import Any

from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.sql.expression import ClauseElement

from .commit_policy import SYNCHRONOUS, CommitPolicy

Processor = Callable[[Any], Any] | None
IDLE_CHECK_AFTER = 1.0


class Held:
    """A thread's connection: the pid that opened it, the DBAPI connection, its cursor,
    the generation it was opened in (``HotPath.invalidate``), when it was last used."""

    __slots__ = ("conn", "cursor", "generation", "pid", "used_at")

    def __init__(self, conn: Any, cursor: Any, generation: int) -> None:
        self.pid, self.conn, self.cursor = os.getpid(), conn, cursor
        self.generation, self.used_at = generation, time.monotonic()


@dataclass(frozen=True)
class Driver:
    """What the hot path needs to know about one DBAPI driver."""

    autocommit: Callable[[Any], None]
    prepare: bool
    """Pass ``prepare=True`` to ``cursor.execute`` (a server-side prepared statement)."""
    socket: Callable[[Any], int] | None = None
    """The connection's socket descriptor, to see that the server closed it."""


def _psycopg_autocommit(conn: Any) -> None:
    conn.autocommit = True


def _pymysql_autocommit(conn: Any) -> None:
    conn.autocommit(True)


def _sqlite_autocommit(conn: Any) -> None:
    conn.isolation_level = None


def _pymysql_socket(conn: Any) -> int:
    sock = getattr(conn, "_sock", None)
    return -1 if sock is None else int(sock.fileno())


DRIVERS = {
    "psycopg": Driver(_psycopg_autocommit, prepare=True, socket=lambda conn: conn.fileno()),
    "pymysql": Driver(_pymysql_autocommit, prepare=False, socket=_pymysql_socket),
    "pysqlite": Driver(_sqlite_autocommit, prepare=False),
}


def _closed_by_server(socket: int) -> bool:
    """An idle connection's socket has something to read: the server's goodbye (a
    restart's "terminating connection", an idle timeout) and its end of the stream. A
    connection in autocommit with nothing sent has nothing else to receive."""
    if socket < 0:
        return True
    try:
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(socket, select.POLLIN)
            return bool(poller.poll(0))
        return bool(select.select([socket], [], [], 0)[0])
    except (OSError, ValueError):
        return True


@dataclass(frozen=True)
class HotStatement:
    """One statement, compiled: its SQL text, how to bind its parameters, how to read
    its rows."""

    name: str
    sql: str
    plan: tuple[tuple[str, Any, Processor], ...]
    """Each parameter in the order the driver takes them: its name, its value if the
    caller gives none (the statement's own literals), its bind processor."""
    positional: bool
    """The driver takes a sequence (sqlite3's ``?``), not a mapping."""
    columns: tuple[str, ...]
    readers: tuple[Processor, ...]

    def parameters(self, params: Mapping[str, Any]) -> Any:
        get = params.get
        if self.positional:
            return [
                get(name, default) if bind is None else bind(get(name, default))
                for name, default, bind in self.plan
            ]
        return {
            name: get(name, default) if bind is None else bind(get(name, default))
            for name, default, bind in self.plan
        }

    def tuples(self, raw: list[Any]) -> list[tuple[Any, ...]]:
        # only the columns that have a reader (the datetimes) are touched
        processed = [(i, read) for i, read in enumerate(self.readers) if read is not None]
        if not processed:
            return [tuple(row) for row in raw]
        out = []
        for row in raw:
            values = list(row)
            for i, read in processed:
                values[i] = read(values[i])
            out.append(tuple(values))
        return out

    def rows(self, raw: list[Any]) -> list[dict[str, Any]]:
        columns, readers = self.columns, self.readers
        return [
            {
                column: value if read is None else read(value)
                for column, read, value in zip(columns, readers, row, strict=True)
            }
            for row in raw
        ]


def compile_statement(name: str, statement: ClauseElement, dialect: Dialect) -> HotStatement:
    compiled: Any = statement.compile(dialect=_positional(dialect))  # a SQLCompiler
    rendered = {name: bind for bind, name in compiled.bind_names.items()}
    order = list(compiled.positiontup or ()) if compiled.positional else list(rendered)
    plan = []
    for key in order:
        bind = rendered[key]
        # the statement's own values (`state='running'`, `lease_owner=NULL`, ...) stand
        # unless the caller names them; our parameters (`p_*`) and INSERT columns have none
        default = None if bind.required or key.startswith("p_") else bind.effective_value
        plan.append((key, default, _binder(bind.type, dialect)))
    selected = getattr(statement, "selected_columns", None)
    result_columns = (
        list(selected) if selected is not None else list(getattr(statement, "_returning", ()))
    )
    return HotStatement(
        name,
        compiled.string,
        tuple(plan),
        bool(compiled.positional),
        tuple(c.key for c in result_columns),
        tuple(_reader(c.type, dialect) for c in result_columns),
    )


def _positional(dialect: Dialect) -> Dialect:
    """The dialect rendering ``%s`` instead of ``%(name)s`` where it is not positional
    already: the driver then takes a tuple, and skips a mapping-to-sequence step per
    statement. A copy, so the engine's own statements are untouched."""
    if dialect.positional:
        return dialect
    positional = copy.copy(dialect)
    positional.paramstyle = "format"
    positional.positional = True
    return positional


def _binder(type_: Any, dialect: Dialect) -> Processor:
    """SQLAlchemy's own bind processing for this type and dialect (what its execution
    would apply), with one shortcut: our UTC datetimes on SQLite, formatted as
    SQLAlchemy's SQLite dialect stores them, in one step instead of two."""
    if dialect.name == "sqlite" and type(type_).__name__ == "UTCDateTime":
        return _sqlite_utc
    processor: Processor = type_._cached_bind_processor(dialect)
    return processor


def _reader(type_: Any, dialect: Dialect) -> Processor:
    """SQLAlchemy's result processing for this type and dialect, with one shortcut: our
    UTC datetimes from a driver that returns datetime objects (psycopg, PyMySQL) are
    made aware in one step instead of three."""
    if type(type_).__name__ == "UTCDateTime":
        native = type_.load_dialect_impl(dialect)._cached_result_processor(dialect, None)
        if native is None:
            return _aware_utc
    processor: Processor = type_._cached_result_processor(dialect, None)
    return processor


def _aware_utc(value: Any) -> Any:
    return None if value is None else value.replace(tzinfo=timezone.utc)


def _sqlite_utc(value: Any) -> Any:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("celery-durable stores aware datetimes only")
    if value.tzinfo is not timezone.utc:
        value = value.astimezone(timezone.utc)
    return value.isoformat(" ", "microseconds")[:-6]  # without its "+00:00"


@dataclass
class Result:
    rowcount: int
    rows: list[dict[str, Any]]
    tuples: list[tuple[Any, ...]] = field(default_factory=list)
    """The rows as tuples in the statement's column order, when asked for."""

    def first(self) -> dict[str, Any] | None:
        return self.rows[0] if self.rows else None


class HotPath:
    def __init__(
        self,
        engine: Engine,
        statements: dict[str, ClauseElement],
        connect_args: dict[str, Any],
        on_connect: Callable[[Any], None] | None = None,
        relaxed: CommitPolicy = SYNCHRONOUS,
    ) -> None:
        dialect = engine.dialect
        self.driver = DRIVERS[dialect.driver]
        self._engine_url = engine.url
        self._dialect = dialect
        self._connect_args = connect_args
        self._on_connect = on_connect
        self._statements = {
            name: compile_statement(name, stmt, dialect) for name, stmt in statements.items()
        }
        self._relaxed = relaxed
        self._local = threading.local()
        self._generation = 0
        """Raised when a statement finds the server gone (``invalidate``): a connection
        opened before is dropped at its thread's next statement instead of failing it."""
        self.on_disconnect: Callable[[], None] | None = None
        """Called when one of this path's statements finds the server gone."""
        self.idle_check_after = IDLE_CHECK_AFTER
        """A connection unused this long (seconds) is checked before its next statement:
        if the server closed it meanwhile (a restart while a long call ran), a new one is
        opened instead of the statement failing, and a checkpoint is not lost to it."""
        self.listeners: list[Callable[[str, Any], None]] = []
        """Called with each statement's SQL and parameters before it is sent."""

    @classmethod
    def supports(cls, engine: Engine) -> bool:
        return engine.dialect.driver in DRIVERS

    def _open(self, relaxed: bool) -> tuple[Any, Any]:
        args, kwargs = self._dialect.create_connect_args(self._engine_url)
        conn = self._dialect.connect(*args, **{**kwargs, **self._connect_args})
        self.driver.autocommit(conn)
        if self._on_connect is not None:
            self._on_connect(conn)
        try:
            cursor = conn.cursor()
            if relaxed:
                cursor.execute(self._relaxed.session_setting)
        except BaseException:
            with contextlib.suppress(Exception):
                conn.close()
            raise
        return conn, cursor

    def invalidate(self) -> None:
        """The server went away (a restart, a failover): every thread's connection from
        before is likely dead too. Each is replaced at its thread's next statement, as
        SQLAlchemy's pool does on a disconnect; otherwise each would fail once, and a
        checkpoint failing on a thread nobody used during the outage interrupts its job
        after the database is back."""
        self._generation += 1

    def _held(self, kind: str) -> Held:
        """This thread's connection of ``kind`` ("held", or "relaxed" for the statements
        the commit policy relaxes: a connection of their own, set once)."""
        held: Held | None = getattr(self._local, kind, None)
        pid, now = os.getpid(), time.monotonic()
        if held is not None and held.pid == pid and self._stale(held, now):
            self._drop(kind, held)
            held = None
        if held is None or held.pid != pid:
            # none yet in this thread, or inherited from the parent across a fork: the
            # parent's stays untouched (psycopg only closes its own process's)
            generation = self._generation
            conn, cursor = self._open(relaxed=kind == "relaxed")
            held = Held(conn, cursor, generation)
            setattr(self._local, kind, held)
        held.used_at = now
        return held

    def _stale(self, held: Held, now: float) -> bool:
        """Opened before the server went away, or closed by it while unused."""
        if held.generation != self._generation:
            return True
        socket = self.driver.socket
        if socket is None or now - held.used_at < self.idle_check_after:
            return False
        try:
            return _closed_by_server(socket(held.conn))
        except Exception:  # no socket to look at: closed
            return True

    def _drop(self, kind: str, held: Held) -> None:
        setattr(self._local, kind, None)
        with contextlib.suppress(Exception):  # already broken: nothing to save
            held.conn.close()

    def run(self, name: str, params: Mapping[str, Any], *, tuples: bool = False) -> Result:
        """Send the statement; driver errors become SQLAlchemy's DBAPIError subclasses."""
        statement = self._statements[name]
        values = statement.parameters(params)
        for listener in self.listeners:
            listener(statement.sql, values)
        kind = "relaxed" if name in self._relaxed.statements else "held"
        held = None
        try:
            held = self._held(kind)
            cursor = held.cursor
            if self.driver.prepare:
                cursor.execute(statement.sql, values, prepare=True)
            else:
                cursor.execute(statement.sql, values)
            if not statement.columns:
                return Result(cursor.rowcount, [])
            raw = cursor.fetchall()
            if tuples:
                return Result(cursor.rowcount, [], statement.tuples(raw))
            return Result(cursor.rowcount, statement.rows(raw))
        except BaseException as exc:
            dbapi = self._dialect.loaded_dbapi
            if held is not None:
                if isinstance(exc, dbapi.Error) and self._dialect.is_disconnect(
                    exc, held.conn, held.cursor
                ):
                    self.invalidate()
                    if self.on_disconnect is not None:
                        self.on_disconnect()
                self._drop(kind, held)
            if not isinstance(exc, dbapi.Error):
                raise
            raise sa_exc.DBAPIError.instance(
                statement.sql,
                values,
                exc,
                dbapi.Error,
                connection_invalidated=isinstance(
                    exc, (dbapi.OperationalError, dbapi.InterfaceError)
                ),
                dialect=self._dialect,
            ) from exc

    def close(self) -> None:
        """Close this thread's connections (tests and teardown)."""
        for kind in ("held", "relaxed"):
            held = getattr(self._local, kind, None)
            if held is not None and held.pid == os.getpid():
                self._drop(kind, held)
