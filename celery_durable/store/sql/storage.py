"""SQLAlchemy Storage for PostgreSQL, MySQL/MariaDB and SQLite.

Every operation is a single statement on an AUTOCOMMIT connection, one round trip that
is also the commit, unless it must touch several rows atomically. Fenced writes use
``INSERT ... SELECT ... WHERE lease_owner = :me`` and ``UPDATE ... WHERE lease_owner =
:me``, so ownership is checked by the database in the same statement that writes.

Its parts: ``connection`` (engine, errors, transactions), ``jobs``, ``calls``
(checkpoints and the writes of jobs that wait), ``schedules``, ``observing`` (the event
stream's rows, heartbeats); their statements are built once per store.
"""

from __future__ import annotations

from .calls import CallsSQL
from .flow import FlowSQL
from .observing import ObservingSQL
from .schedules import ScheduleSQL


class SQLStorage(CallsSQL, FlowSQL, ScheduleSQL, ObservingSQL):
    """``SQLStorage(url, table_prefix="durable_", engine_options=None, hot_path=True,
    synchronous_commit=None, relaxed_checkpoints=False)``: the durable store on any
    database SQLAlchemy reaches through psycopg 3, PyMySQL or sqlite3.

    ``synchronous_commit`` (PostgreSQL only) relaxes the claim and finish statements,
    ``relaxed_checkpoints`` the call checkpoints too; see ``commit_policy``."""
