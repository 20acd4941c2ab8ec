"""The SQL store's connection: a lazily created engine per process, AUTOCOMMIT for the
single-statement operations, real transactions for the few that touch several rows, and
one mapping of driver errors (the server is away: StorageUnavailable; the tables are
missing: a ConfigurationError that says to migrate).

The engine is created lazily and re-created in a forked child (pid check), so pooled
connections are never shared across Celery's prefork pool.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import Any

from sqlalchemy import Connection, Engine, Executable, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.pool import SingletonThreadPool, StaticPool

from ...errors import ConfigurationError, StorageUnavailable
from ..urls import safe_url
from .commit_policy import commit_policy
from .hot import HotPath, Result
from .migrations import apply_migrations, pending_migrations
from .schema import Tables, build_tables
from .statements import HOT, JobStatements, job_statements

_SHARED_POOLS = (StaticPool, SingletonThreadPool)

_DRIVER_HINTS = {
    "psycopg": "pip install 'celery-durable[postgres]'",
    "pymysql": "pip install 'celery-durable[mysql]'",
}


class SQLConnection:
    """What every part of the SQL store shares: the URL, the tables, the engine."""

    def __init__(
        self,
        url: str,
        *,
        table_prefix: str = "durable_",
        engine_options: dict[str, Any] | None = None,
        hot_path: bool = True,
        synchronous_commit: str | None = None,
        relaxed_checkpoints: bool = False,
    ) -> None:
        self._url = url
        self.table_prefix = table_prefix
        self.safe_url = safe_url(url)
        """The URL with its password masked: what every message and repr shows."""
        self.tables: Tables = build_tables(table_prefix)
        self._engine_options = engine_options or {}
        self._hot_path = hot_path
        self._relaxed = commit_policy(url, synchronous_commit, relaxed_checkpoints)
        self._engine: Engine | None = None
        self._pid = 0
        self._lock = threading.Lock()

    @cached_property
    def _sql(self) -> JobStatements:
        return job_statements(self.tables)

    @property
    def url(self) -> str:
        """The database URL, password masked (the real one is never shown)."""
        return self.safe_url

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.safe_url!r}, table_prefix={self.table_prefix!r})"

    @property
    def engine(self) -> Engine:
        if self._engine is None or self._pid != os.getpid():
            with self._lock:
                if self._engine is None or self._pid != os.getpid():
                    if self._engine is not None:
                        self._engine.dispose(close=False)  # inherited from the parent
                    self._engine = self._create_engine(
                        isolation_level="AUTOCOMMIT", pool_reset_on_return=None
                    )
                    self._pid = os.getpid()
        return self._engine

    def _create_engine(self, **options: Any) -> Engine:
        url = make_url(self._url)
        kwargs: dict[str, Any] = {**options, **self._engine_options}
        if url.get_backend_name() == "sqlite":
            kwargs.setdefault("connect_args", {"timeout": 30, "check_same_thread": False})
            if url.database in (None, "", ":memory:"):
                kwargs.setdefault("poolclass", StaticPool)
        try:
            engine = create_engine(url, **kwargs)
        except (ImportError, sa_exc.NoSuchModuleError) as exc:
            hint = next((h for d, h in _DRIVER_HINTS.items() if d in self._url), "")
            raise ConfigurationError(
                f"cannot load the database driver for {self.safe_url}: {exc}. {hint}"
            ) from exc
        if url.get_backend_name() == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "handle_error", self._on_engine_error)
        return engine

    def _on_engine_error(self, context: Any) -> None:
        """A statement through SQLAlchemy found the server gone: SQLAlchemy's pool
        replaces its connections, and the hot path's are replaced too."""
        hot = self.__dict__.get("_hot")  # only if it exists already
        if context.is_disconnect and hot is not None:
            hot.invalidate()

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        with self._mapped_errors(), self.engine.connect() as conn:
            yield conn

    @contextmanager
    def _mapped_errors(self) -> Iterator[None]:
        """The driver's errors as ours: the server is away (StorageUnavailable), the
        tables are missing (a ConfigurationError that says to migrate); others pass."""
        try:
            yield
        except sa_exc.DBAPIError as exc:
            mapped = self._mapped(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    def _mapped(self, exc: sa_exc.DBAPIError) -> Exception:
        if _missing_table(exc):
            return _not_migrated(self.safe_url)
        if not _unreachable(exc):
            return exc
        return StorageUnavailable(
            f"cannot use the durable database {self.safe_url}: {exc.orig}. "
            f"Check app.conf.durable_database_url and that the server is running."
        )

    @cached_property
    def _hot(self) -> HotPath | None:
        """The hot path, on the drivers it knows (not an in-memory SQLite: each
        connection would be a database of its own)."""
        engine = self.engine
        url = make_url(self._url)
        in_memory = url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")
        if not self._hot_path or in_memory or not HotPath.supports(engine):
            return None
        connect_args = dict(self._engine_options.get("connect_args") or {})
        on_connect = None
        if url.get_backend_name() == "sqlite":
            connect_args = {"timeout": 30, "check_same_thread": False, **connect_args}
            on_connect = _sqlite_pragmas_on
        hot = HotPath(
            engine,
            {name: getattr(self._sql, name) for name in HOT},
            connect_args,
            on_connect,
            relaxed=self._relaxed,
        )
        hot.on_disconnect = self._on_hot_disconnect
        return hot

    def _on_hot_disconnect(self) -> None:
        """A hot statement found the server gone: SQLAlchemy's pooled connections are
        likely dead too. A new pool replaces them (one checked out now goes back to the
        old pool, which is dropped). Not for pools that share one connection between
        threads (StaticPool, SingletonThreadPool): disposing closes it under them."""
        with self._lock:
            engine = self._engine if self._pid == os.getpid() else None
        if engine is not None and not isinstance(engine.pool, _SHARED_POOLS):
            engine.dispose()

    def _run(self, name: str, params: dict[str, Any], *, tuples: bool = False) -> Result:
        """One of the hot statements (``HOT``): on the hot path where there is one.
        ``tuples``: the rows as tuples in column order (``Result.tuples``)."""
        hot = self._hot
        if hot is not None:
            try:
                return hot.run(name, params, tuples=tuples)
            except sa_exc.DBAPIError as exc:
                mapped = self._mapped(exc)
                if mapped is exc:
                    raise
                raise mapped from exc
        with self._connect() as conn:
            if name in self._relaxed.statements:
                conn = conn.execution_options(isolation_level="READ COMMITTED")
                with conn.begin():
                    conn.exec_driver_sql(self._relaxed.local_setting)
                    result = conn.execute(getattr(self._sql, name), params)
            else:
                result = conn.execute(getattr(self._sql, name), params)
            if not result.returns_rows:
                return Result(result.rowcount, [])
            if tuples:
                return Result(result.rowcount, [], [tuple(row) for row in result])
            return Result(result.rowcount, [dict(row._mapping) for row in result])

    def observe_statements(self, listener: Callable[[str, Any], None]) -> Callable[[], None]:
        """Call ``listener(sql, parameters)`` before every statement this store sends (on
        the hot path and through SQLAlchemy, with the parameters as the driver gets
        them); returns a function that stops it."""
        hot = self._hot

        def on_execute(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
            listener(statement, parameters)

        event.listen(self.engine, "before_cursor_execute", on_execute)
        if hot is not None:
            hot.listeners.append(listener)

        def stop() -> None:
            event.remove(self.engine, "before_cursor_execute", on_execute)
            if hot is not None:
                hot.listeners.remove(listener)

        return stop

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """A real transaction, for the rare writes that touch more than one row."""
        with self._connect() as conn:
            level = "SERIALIZABLE" if conn.dialect.name == "sqlite" else "READ COMMITTED"
            conn = conn.execution_options(isolation_level=level)
            with conn.begin():
                yield conn

    def dispose(self) -> None:
        hot = self.__dict__.get("_hot")
        if hot is not None:
            hot.close()
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def migrate(self) -> list[int]:
        engine = self._create_engine()
        try:
            with engine.begin() as conn:
                return apply_migrations(conn, self.tables)
        except sa_exc.OperationalError as exc:
            raise StorageUnavailable(
                f"cannot migrate the durable database {self.safe_url}: {exc.orig}"
            ) from exc
        finally:
            engine.dispose()

    def pending_migrations(self) -> list[int]:
        with self._connect() as conn:
            return pending_migrations(conn, self.tables)

    def drop_tables(self) -> None:
        """Drop every table this store owns (tests and teardown only)."""
        with self._connect() as conn:
            self.tables.metadata.drop_all(conn)

    def _rowcount(self, stmt: Executable, params: dict[str, Any]) -> int:
        with self._connect() as conn:
            return int(conn.execute(stmt, params).rowcount)


def _sqlite_pragmas_on(dbapi_conn: Any) -> None:
    _sqlite_pragmas(dbapi_conn, None)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _unreachable(exc: sa_exc.DBAPIError) -> bool:
    """The server is down, restarting or unreachable: OperationalError on every driver,
    InterfaceError from PyMySQL on a connection the server closed, and any error that
    made SQLAlchemy drop the connection."""
    return (
        isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError))
        or exc.connection_invalidated
    )


def _missing_table(exc: sa_exc.DBAPIError) -> bool:
    text = str(exc.orig).lower()
    return any(s in text for s in ("no such table", "does not exist", "doesn't exist"))


def _not_migrated(safe_url: str) -> ConfigurationError:
    return ConfigurationError(
        f"the celery-durable tables do not exist in {safe_url}. Create them once with "
        f"`celery -A <your app> durable migrate` or `Durable(app).migrate()`."
    )
