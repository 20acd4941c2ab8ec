"""Which hot statements may return before PostgreSQL has flushed them to disk.

Off by default: every statement waits for its WAL flush. ``synchronous_commit="off"``
(any value PostgreSQL takes) relaxes the claim and the plain finish, whose loss in a
server crash a replay repairs: a lost claim leaves the job pending (it is delivered
again); a lost finish leaves it running until its lease expires, then the sweeper
republishes it and the replay returns every recorded call without running it. A later
synchronous commit on the same server (the next checkpoint) flushes them anyway, since
WAL is flushed in order. ``relaxed_checkpoints=True`` relaxes the call checkpoints too:
then a server crash may lose the checkpoints of the last ``3 x wal_writer_delay``
(600 ms by default), and those calls run again. See docs/explanation/performance.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import make_url

from ...errors import ConfigurationError

SYNCHRONOUS_COMMIT = ("on", "off", "local", "remote_write", "remote_apply")
REPAIRED_BY_REPLAY = frozenset({"claim", "claim_returning", "finish"})
CHECKPOINTS = frozenset({"record_call"})


@dataclass(frozen=True)
class CommitPolicy:
    statements: frozenset[str] = frozenset()
    """The hot statements sent with the relaxed setting."""
    synchronous_commit: str | None = None

    @property
    def session_setting(self) -> str:
        return f"SET synchronous_commit TO {self.synchronous_commit}"

    @property
    def local_setting(self) -> str:
        return f"SET LOCAL synchronous_commit TO {self.synchronous_commit}"


SYNCHRONOUS = CommitPolicy()
"""Every statement waits for its WAL flush (the default)."""


def commit_policy(
    url: str, synchronous_commit: str | None, relaxed_checkpoints: bool
) -> CommitPolicy:
    if synchronous_commit is None:
        if relaxed_checkpoints:
            raise ConfigurationError(
                "durable_relaxed_checkpoints needs durable_synchronous_commit (for example "
                "'off'): it says which setting the checkpoints are sent with."
            )
        return SYNCHRONOUS
    if synchronous_commit not in SYNCHRONOUS_COMMIT:
        raise ConfigurationError(
            f"durable_synchronous_commit must be one of {', '.join(SYNCHRONOUS_COMMIT)} "
            f"(PostgreSQL's values) or None, got {synchronous_commit!r}"
        )
    backend = make_url(url).get_backend_name()
    if backend != "postgresql":
        raise ConfigurationError(
            f"durable_synchronous_commit is a PostgreSQL setting; the durable database is "
            f"{backend}. Leave it unset (on MariaDB/MySQL the server's "
            f"innodb_flush_log_at_trx_commit plays that part)."
        )
    statements = REPAIRED_BY_REPLAY | (CHECKPOINTS if relaxed_checkpoints else frozenset())
    return CommitPolicy(statements, synchronous_commit)
