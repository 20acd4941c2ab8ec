"""Settings, read from ``app.conf`` under the ``durable_`` prefix.

With Django's ``CELERY_`` namespace they are ``CELERY_DURABLE_DATABASE_URL`` and so on.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from .determinism import check_determinism
from .errors import ConfigurationError
from .retry import (
    Backoff,
    ExponentialBackoff,
    check_backoff,
    check_on_exhausted,
    check_retries,
)
from .store.sql.commit_policy import commit_policy
from .store.urls import safe_url

DEFAULT_DATABASE_URL = "sqlite:///celery-durable.sqlite3"
_UNSET = object()
DAY = 86400.0
RETENTION: dict[str, float | None] = {
    "succeeded": 7 * DAY,
    "cancelled": 7 * DAY,
    "failed": 30 * DAY,
    "dead": 30 * DAY,
}


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    """SQLAlchemy URL of the durable store. Default: a SQLite file in the working dir."""
    table_prefix: str = "durable_"
    lease_seconds: float = 30.0
    """How long an execution owns its job without renewing; renewed every third of it."""
    sweep_interval: float = 10.0
    """How often each worker looks for jobs whose lease expired and republishes them."""
    delivery_timeout: float = 900.0
    """A published job nobody claimed by then is published again."""
    wait_check_interval: float = 3600.0
    """A job suspended on dispatched calls is resumed this often to look at its children
    again (a safety net: a finishing child wakes it at once)."""
    max_recoveries: int = 10
    """A job that lost its worker this many times is failed instead of republished."""
    recovery: bool = True
    """Run the recovery sweeper inside `celery worker` processes."""
    call_retries: int = 3
    """How many times a failed call() is attempted again before the body sees CallError."""
    call_backoff: Backoff = field(default_factory=lambda: ExponentialBackoff(1, 60))
    job_retries: int = 2
    """How many times a job whose body failed runs again (completed calls replay)."""
    job_backoff: Backoff = field(default_factory=lambda: ExponentialBackoff(5, 300))
    on_exhausted: str = "fail"
    """What a job becomes once its retries are spent: "fail" or "dead_letter"."""
    cancel_check_interval: float = 2.0
    """How often a worker process asks whether the jobs it runs were cancelled."""
    retention: dict[str, float | None] = field(default_factory=lambda: dict(RETENTION))
    """Seconds finished jobs are kept, per state; None keeps them forever."""
    retention_interval: float = 3600.0
    """How often the sweeper deletes expired finished jobs (in batches)."""
    shutdown_grace: float | None = 25.0
    """On a warm shutdown, running durable jobs get this long to finish; then they are
    released to another worker. None: wait for them as Celery does, without a limit."""
    metrics_port: int = 0
    """Serve Prometheus /metrics from each worker's main process on this port (0: off)."""
    determinism: str = "explicit"
    """The default determinism mode: "explicit", "strict" or "best_effort"."""
    beat_max_interval: float = 5.0
    """The longest a durable beat sleeps: schedule changes show within this long."""
    storage_wait: float = 20.0
    """A delivery that cannot reach the durable database waits this long for it (trying
    again with backoff) before its message goes back to the broker."""
    max_countdown: float = 60.0
    """Retries due within this many seconds wait as Celery countdown messages; later ones
    are stored in SQL and published by the recovery sweeper when due."""

    synchronous_commit: str | None = None
    """PostgreSQL only, off by default: the synchronous_commit ("off", "local", ...) the
    claim and finish statements are sent with; a replay repairs their loss in a server
    crash. None: every statement waits for its WAL flush."""
    outbox_relay_after: float = 5.0
    """A job enqueued in the caller's transaction (``connection=``) whose message was not
    sent after the commit (the process died) is published by the recovery sweeper this
    long after it was written (plus up to one ``durable_sweep_interval``)."""
    relaxed_checkpoints: bool = False
    """With durable_synchronous_commit: send the call checkpoints with it too. A server
    crash may then lose the last 3 x wal_writer_delay of checkpoints (those calls run
    again)."""
    async_threads: int = 8
    """Threads per worker process that run the plain (sync) tasks async bodies call, so
    a slow one never blocks the event loop."""
    web_read_only: bool = False
    """The dashboard (`celery durable web`) shows everything and acts on nothing."""
    web_username: str | None = None
    """With ``durable_web_password``: HTTP basic credentials the dashboard asks for."""
    web_password: str | None = None
    web_token: str | None = None
    """A bearer token the dashboard's JSON API accepts (``Authorization: Bearer ...``)."""
    web_secret: str | None = None
    """Signs the dashboard's CSRF tokens, so they outlive a restart and hold across its
    processes; default: a random one per process."""

    def __repr__(self) -> str:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["database_url"] = safe_url(self.database_url)  # never the password
        for secret in ("web_password", "web_token", "web_secret"):
            if values[secret] is not None:
                values[secret] = "***"
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in values.items()) + ")"

    @classmethod
    def from_conf(cls, conf: Any, **overrides: Any) -> Settings:
        values: dict[str, Any] = {}
        for f in fields(cls):
            # None is a value only for settings that may be None (shutdown_grace);
            # elsewhere it means "not set".
            nullable = "None" in str(f.type)
            # conf.get, not `in`: under a namespace (Django's CELERY_) `key in conf` is
            # False although conf.get(key) finds CELERY_DURABLE_...
            configured = conf.get(f"durable_{f.name}", _UNSET)
            if f.name in overrides and (overrides[f.name] is not None or nullable):
                value = overrides[f.name]
            elif configured is not _UNSET and (configured is not None or nullable):
                value = configured
            else:
                continue
            values[f.name] = None if value is None else _coerce(f.name, f.type, value)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        check_retries(self.call_retries, "durable_call_retries")
        check_retries(self.job_retries, "durable_job_retries")
        check_on_exhausted(self.on_exhausted, "durable_on_exhausted")
        check_determinism(self.determinism, "durable_determinism")
        if self.shutdown_grace is not None and self.shutdown_grace < 0:
            raise ConfigurationError(
                f"durable_shutdown_grace must not be negative, got {self.shutdown_grace!r}"
            )
        if self.max_countdown < 0:
            raise ConfigurationError(
                f"durable_max_countdown must not be negative, got {self.max_countdown!r}"
            )
        for state, keep in self.retention.items():
            if state not in RETENTION:
                raise ConfigurationError(
                    f"durable_retention: {state!r} is not a finished state ({', '.join(RETENTION)})"
                )
            if keep is not None and (not isinstance(keep, (int, float)) or keep < 0):
                raise ConfigurationError(
                    f"durable_retention[{state!r}] must be seconds >= 0 or None, got {keep!r}"
                )
        for name in (
            "lease_seconds",
            "sweep_interval",
            "delivery_timeout",
            "wait_check_interval",
            "cancel_check_interval",
            "retention_interval",
            "beat_max_interval",
            "storage_wait",
            "outbox_relay_after",
            "async_threads",
        ):
            if getattr(self, name) <= 0:
                raise ConfigurationError(
                    f"durable_{name} must be positive, got {getattr(self, name)!r}"
                )
        commit_policy(self.database_url, self.synchronous_commit, self.relaxed_checkpoints)
        if (self.web_username is None) != (self.web_password is None):
            raise ConfigurationError(
                "durable_web_username and durable_web_password go together: set both "
                "(HTTP basic credentials for the dashboard) or neither"
            )
        if not self.table_prefix.replace("_", "").isalnum():
            raise ConfigurationError(
                f"durable_table_prefix must be letters, digits and underscores, "
                f"got {self.table_prefix!r}"
            )


def database_url_configured(conf: Any, overrides: dict[str, Any]) -> bool:
    """Whether the app (or the Durable(...) call) names a database: otherwise the store
    is a SQLite file in each process's working directory."""
    return overrides.get("database_url") is not None or conf.get("durable_database_url") is not None


def _coerce(name: str, kind: Any, value: Any) -> Any:
    if str(kind) == "Backoff":
        return check_backoff(value, f"durable_{name}")
    if name == "retention":
        if not isinstance(value, dict):
            raise ConfigurationError(
                f"durable_retention must be a dict of state -> seconds, got {value!r}"
            )
        return {**RETENTION, **{k: _seconds_or_none(v) for k, v in value.items()}}
    if str(kind) == "float | None":
        kind = float
    if str(kind) == "str | None":
        kind = str
    kind = {"str": str, "float": float, "int": int, "bool": bool}.get(str(kind), kind)
    if kind is bool and isinstance(value, str):
        return value.lower() in ("1", "true", "yes", "on")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"durable_{name} must be a {kind.__name__}, got {value!r}"
        ) from None


def _seconds_or_none(value: Any) -> Any:
    from datetime import timedelta

    return value.total_seconds() if isinstance(value, timedelta) else value
