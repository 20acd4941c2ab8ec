"""Settings under Django's CELERY_ namespace, the warning for a store nobody configured,
passwords kept out of every repr, and bad ids, names and keys refused at the edge with
the same error on every store (the SQL stores are in tests/integration/test_bad_input)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from celery import Celery, signals

from celery_durable import (
    Durable,
    JobNotFound,
    MemoryStorage,
    ScheduleNotFound,
    SQLStorage,
    ValidationError,
    every,
)
from celery_durable.settings import DEFAULT_DATABASE_URL
from tests.unit.conftest import make_env


class DjangoSettings:
    """What ``django.conf:settings`` looks like to Celery."""

    CELERY_BROKER_URL = "redis://127.0.0.1:6379/0"
    CELERY_DURABLE_DATABASE_URL = "postgresql+psycopg://shop:s3cret@db.internal/shop"
    CELERY_DURABLE_LEASE_SECONDS = 12
    CELERY_DURABLE_TABLE_PREFIX = "shop_"
    CELERY_DURABLE_SHUTDOWN_GRACE = None
    DURABLE_LEASE_SECONDS = 99  # not in the namespace: ignored


def test_settings_are_read_under_a_namespace() -> None:
    app = Celery("shop", set_as_current=False)
    app.config_from_object(DjangoSettings, namespace="CELERY")
    durable = Durable(app)
    assert durable.settings.database_url == DjangoSettings.CELERY_DURABLE_DATABASE_URL
    assert (durable.settings.lease_seconds, durable.settings.table_prefix) == (12.0, "shop_")
    assert durable.settings.shutdown_grace is None  # None is a value where it may be


class _Consumer:
    """What Celery's worker_ready signal is sent by."""

    def __init__(self, app: Celery) -> None:
        self.app, self.hostname = app, "w1@test"


def _ready(durable: Durable) -> None:
    signals.worker_ready.send(sender=_Consumer(durable.app))


def test_a_worker_without_a_database_url_warns_and_names_the_file(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = Celery("shop", broker="redis://127.0.0.1:6379/0", set_as_current=False)
    durable = Durable(app, recovery=False)
    with caplog.at_level(logging.WARNING, logger="celery_durable.worker.signals"):
        _ready(durable)
    path = Path(DEFAULT_DATABASE_URL.removeprefix("sqlite:///")).resolve()
    [warning] = [r.getMessage() for r in caplog.records if "durable_database_url" in r.getMessage()]
    assert str(path) in warning and "CELERY_DURABLE_DATABASE_URL" in warning


@pytest.mark.parametrize(
    "configure",
    [
        lambda app: app.conf.update(durable_database_url="sqlite:///x.sqlite3"),
        lambda app: app.conf.update(broker_url="sqla+sqlite:///broker.sqlite3"),
        lambda app: app.config_from_object(DjangoSettings, namespace="CELERY"),
    ],
)
def test_no_warning_when_the_store_is_meant(
    configure: object, caplog: pytest.LogCaptureFixture
) -> None:
    app = Celery("shop", broker="redis://127.0.0.1:6379/0", set_as_current=False)
    configure(app)  # type: ignore[operator]
    durable = Durable(app, recovery=False)
    with caplog.at_level(logging.WARNING, logger="celery_durable.worker.signals"):
        _ready(durable)
    assert not [r for r in caplog.records if "durable_database_url" in r.getMessage()]


def test_passwords_never_show() -> None:
    app = Celery("shop", set_as_current=False)
    app.config_from_object(DjangoSettings, namespace="CELERY")
    durable = Durable(app)
    storage = SQLStorage(durable.settings.database_url)
    for text in (
        repr(durable.settings),
        str(durable.settings),
        repr(storage),
        str(storage),
        storage.url,
        storage.safe_url,
    ):
        assert "s3cret" not in text
        assert "shop:***@db.internal" in text


NAMES = [
    ("", "must be a non-empty string"),
    ("a\x00b", "must not contain a NUL byte"),
    ("x" * 300, "is 300 characters long"),
    ("\ud800", "not valid Unicode"),
]


@pytest.mark.parametrize("bad, message", NAMES)
def test_bad_ids_names_and_keys_are_refused_before_any_io(bad: str, message: str) -> None:
    env = make_env()

    def touches(*_: object, **__: object) -> None:
        raise AssertionError("the store was used")

    for name in (
        "get_job",
        "cancel_job",
        "send_message",
        "list_jobs",
        "requeue_job",
        "load_history",
        "get_schedule",
        "delete_jobs",
        "schedule_runs",
    ):
        setattr(env.storage, name, touches)
    durable = env.durable
    for attempt in (
        lambda: durable.get_job(bad),
        lambda: durable.cancel(bad),
        lambda: durable.retry(bad),
        lambda: durable.send(bad, "t", 1),
        lambda: durable.send("j1", bad, 1),
        lambda: durable.send("j1", "t", 1, key=bad),
        lambda: durable.jobs(task=bad),
        lambda: durable.jobs(queue=bad),
        lambda: durable.requeue([bad]),
        lambda: durable.dead_letter(bad),
        lambda: durable.export_history(bad),
        lambda: durable.purge_dead_letters([bad]),
        lambda: durable.dead_letters(task=bad),
        lambda: durable.schedules.get(bad),
        lambda: durable.schedules.runs(bad),
        lambda: durable.schedules.add(bad, "u.t", every(1)),
        lambda: durable.schedules.add("s", bad, every(1)),
    ):
        with pytest.raises(ValidationError, match=message if bad else "."):
            attempt()


def test_a_job_id_longer_than_128_characters_is_refused_at_enqueue() -> None:
    env = make_env()

    @env.durable.task(name="u.t", shared=False)
    def t() -> None: ...

    with pytest.raises(ValidationError, match="task_id is 129 characters long; at most 128"):
        t.apply_async(task_id="j" * 129)
    assert env.durable.jobs() == [] and env.published() == []
    t.apply_async(task_id="j" * 128)
    assert [j.id for j in env.durable.jobs()] == ["j" * 128]


def test_not_found_errors_say_what_was_not_found() -> None:
    durable = Durable(Celery("x", set_as_current=False), storage=MemoryStorage())
    with pytest.raises(ScheduleNotFound, match="no schedule named 'nightly'"):
        durable.schedules.get("nightly")
    with pytest.raises(JobNotFound, match="durable job 'j1' not found"):
        durable.get_job("j1")


@pytest.mark.parametrize("since", ["yesterday", "2026-13-01", "|||"])
def test_a_bad_events_cursor_is_a_clear_error(since: str) -> None:
    env = make_env()
    with pytest.raises(ValidationError, match="neither an event's cursor nor an ISO time"):
        list(env.durable.events(since=since, follow=False))
