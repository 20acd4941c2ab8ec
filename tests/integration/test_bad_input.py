"""Bad input gets a clear error and leaves nothing half-written: no rows, no message."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery, group
from sqlalchemy import func, select

from celery_durable import (
    ConfigurationError,
    Durable,
    SerializationError,
    StorageUnavailable,
    UnknownTaskError,
    ValidationError,
    call,
)
from celery_durable.store.sql import SQLStorage
from tests.conftest import POSTGRES_URL, unique_prefix
from tests.integration.conftest import BROKERS

pytestmark = [pytest.mark.redis, pytest.mark.postgres]


@pytest.fixture
def queue() -> Iterator[str]:
    name = f"bad-{uuid.uuid4().hex[:8]}"
    yield name
    redis.Redis.from_url(BROKERS["redis"]).delete(name)


def _published(queue: str) -> int:
    return int(redis.Redis.from_url(BROKERS["redis"]).llen(queue))


def _app(queue: str, store: str, prefix: str) -> Celery:
    app = Celery("bad", broker=BROKERS["redis"], set_as_current=False)
    app.conf.update(
        task_default_queue=queue, durable_database_url=store, durable_table_prefix=prefix
    )
    return app


@pytest.fixture
def storage() -> Iterator[SQLStorage]:
    store = SQLStorage(POSTGRES_URL, table_prefix=unique_prefix())
    store.migrate()
    yield store
    store.drop_tables()
    store.dispose()


def _rows(storage: SQLStorage) -> tuple[int, int]:
    with storage.engine.connect() as conn:
        jobs = conn.scalar(select(func.count()).select_from(storage.tables.jobs))
        calls = conn.scalar(select(func.count()).select_from(storage.tables.calls))
    return int(jobs or 0), int(calls or 0)


def test_non_json_arguments(queue: str, storage: SQLStorage) -> None:
    app = _app(queue, POSTGRES_URL, storage.tables.jobs.name.removesuffix("jobs"))
    durable = Durable(app)

    @durable.task(name="bad.t", shared=False)
    def t(*args: object, **kwargs: object) -> None: ...

    with pytest.raises(
        SerializationError,
        match=r"task 'bad.t' positional arguments at \[1\]"
        r" is of type pathlib.PosixPath",
    ):
        t.delay(1, Path("/tmp"))
    with pytest.raises(SerializationError, match=r"keyword arguments at \['when'\]"):
        t.apply_async(kwargs={"when": object()})
    assert _rows(storage) == (0, 0)
    assert _published(queue) == 0
    t.delay(1, "/tmp")  # the same task with good input is written and published
    assert _rows(storage) == (1, 0)
    assert _published(queue) == 1


def test_a_bad_item_fails_the_whole_batch(queue: str, storage: SQLStorage) -> None:
    app = _app(queue, POSTGRES_URL, storage.tables.jobs.name.removesuffix("jobs"))
    durable = Durable(app)

    @durable.task(name="bad.t", shared=False)
    def t(*args: object) -> None: ...

    @app.task(name="bad.plain", shared=False)
    def plain() -> None: ...

    good = [t.s(n) for n in range(5)]
    bad_batches: list[tuple[Any, type[Exception], str]] = [
        ([*good, t.s(Path("/tmp"))], SerializationError, "is of type pathlib.PosixPath"),
        ([*good, t.s(1).set(task_id="x" * 129)], ValidationError, "at most 128"),
        ([*good, t.s(1).set(unique="k")], ValidationError, "one at a time"),
        (
            [*good, t.s(1).set(task_id="same"), t.s(2).set(task_id="same")],
            ValidationError,
            "more than once",
        ),
        ([*good, plain.s()], ConfigurationError, "'bad.plain', which is not a durable task"),
        ([*good, t.chunks([(1,), (2,)], 1)], ValidationError, "one signature per item"),
        ([*good, "bad.t"], ValidationError, "not a signature"),
        (group(good).set(queue="elsewhere"), ValidationError, "set them on each member"),
        (group([*good, t.s(Path("/tmp"))]), SerializationError, "pathlib.PosixPath"),
    ]
    for batch, error, message in bad_batches:
        with pytest.raises(error, match=message):
            durable.enqueue_many(batch)
        assert _rows(storage) == (0, 0), message
        assert _published(queue) == 0, message
    t.apply_async((1,), task_id="exists")
    with pytest.raises(ValidationError, match="'exists' exist already"):
        durable.enqueue_many([t.s(2), t.s(3).set(task_id="exists")])
    assert _rows(storage) == (1, 0)
    assert _published(queue) == 1
    results = durable.enqueue_many([t.s(n) for n in range(5)])  # good input goes through
    assert _rows(storage) == (6, 0)
    assert _published(queue) == 6
    assert all(storage.get_job(r.id) is not None for r in results)


def test_unreachable_database(queue: str) -> None:
    app = _app(queue, "postgresql+psycopg://postgres:s3cret@127.0.0.1:1/none", "x_")
    durable = Durable(app)

    @durable.task(name="bad.t", shared=False)
    def t() -> None: ...

    with pytest.raises(StorageUnavailable) as info:
        t.delay()
    message = str(info.value)
    assert "127.0.0.1:1/none" in message and "durable_database_url" in message
    assert "s3cret" not in message
    assert _published(queue) == 0


def test_tables_not_migrated(queue: str) -> None:
    app = _app(queue, POSTGRES_URL, unique_prefix())

    @Durable(app).task(name="bad.t", shared=False)
    def t() -> None: ...

    with pytest.raises(ConfigurationError, match="durable migrate"):
        t.delay()
    assert _published(queue) == 0


def test_bad_call_results_and_names_write_no_call(queue: str, storage: SQLStorage) -> None:
    app = _app(queue, POSTGRES_URL, storage.tables.jobs.name.removesuffix("jobs"))
    durable = Durable(app)

    @app.task(name="bad.objecty", shared=False)
    def objecty() -> object:
        return object()

    @durable.task(name="bad.returns_object", shared=False)
    def returns_object() -> None:
        call(objecty)

    @durable.task(name="bad.typo", shared=False)
    def typo() -> None:
        call("bad.objcety")

    # apply() runs the durable body in this process: fine for input checks, not for
    # durability (those tests run real workers).
    result = returns_object.apply(task_id="j-result")
    assert isinstance(result.result, SerializationError)
    assert "'bad.objecty'" in str(result.result) and "builtins.object" in str(result.result)
    result = typo.apply(task_id="j-typo")
    assert isinstance(result.result, UnknownTaskError)
    assert "Did you mean 'bad.objecty'" in str(result.result)
    assert _rows(storage) == (2, 0)
    assert durable.get_job("j-result").state == "failed"
    assert durable.get_job("j-typo").state == "failed"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"concurrency": 0}, r"task 'bad.limited': concurrency=0 must be a whole number"),
        ({"concurrency": -2}, r"task 'bad.limited': concurrency=-2 must be a whole number"),
        ({"concurrency": "2"}, r"task 'bad.limited': concurrency='2' must be a whole number"),
        ({"rate_limit": "ten per second"}, r"task 'bad.limited': rate_limit='ten per second'"),
        ({"rate_limit": "0/s"}, r"task 'bad.limited': rate_limit='0/s' must allow"),
        ({"concurrency": 1, "concurrency_key": "customer"}, r"concurrency_key must be a function"),
        ({"concurrency_key": lambda order: order}, r"concurrency_key without concurrency="),
        ({"rate_limit_key": lambda order: order}, r"rate_limit_key without rate_limit="),
    ],
)
def test_bad_flow_limits_are_refused_when_the_task_is_defined(
    queue: str, options: dict[str, Any], message: str
) -> None:
    durable = Durable(_app(queue, "sqlite://", "bad_"))
    with pytest.raises(ConfigurationError, match=message):
        durable.task(name="bad.limited", shared=False, **options)(lambda order: None)


def test_bad_debounce_and_failing_keys_write_and_send_nothing(
    queue: str, storage: SQLStorage
) -> None:
    app = _app(queue, POSTGRES_URL, storage.tables.jobs.name.removesuffix("jobs"))
    durable = Durable(app)

    @durable.task(name="bad.t", shared=False)
    def t(order: Any) -> None: ...

    @durable.task(
        name="bad.keyed", shared=False, concurrency=1, concurrency_key=lambda o: o["customer"]
    )
    def keyed(order: Any) -> None: ...

    cases: list[tuple[Callable[[], object], str]] = [
        (
            lambda: durable.enqueue(t, {}, debounce=("profile-1", None)),
            r"task 'bad.t': debounce=\('profile-1', None\) needs a key and a window",
        ),
        (
            lambda: durable.enqueue(t, {}, debounce="profile-1"),
            r"task 'bad.t': debounce='profile-1' needs a key and a window",
        ),
        (
            lambda: durable.enqueue(t, {}, debounce=("profile-1", 0)),
            r"task 'bad.t': the debounce window must be longer than 0",
        ),
        (
            lambda: durable.enqueue(t, {}, debounce=("profile-1", 5), delay=3),
            r"cannot be combined with delay=",
        ),
        (
            lambda: durable.enqueue(t, {}, debounce=("profile-1", 5), debounce_keep="middle"),
            r"debounce_keep='middle' must be 'last'",
        ),
        (
            lambda: durable.enqueue(keyed, {"no customer": 1}),
            r"task 'bad.keyed': its concurrency_key raised KeyError",
        ),
        (lambda: durable.pause(), r"queue='name' or task='name'"),
        (lambda: durable.pause(queue="a", task="b"), r"queue='name' or task='name'"),
    ]
    for attempt, message in cases:
        with pytest.raises(ConfigurationError, match=message):
            attempt()
    with pytest.raises(ValidationError, match=r"item 0 has debounce="):
        durable.enqueue_many([t.s({}).set(debounce=("k", 5))])
    assert _rows(storage) == (0, 0)
    assert _published(queue) == 0
    durable.enqueue(keyed, {"customer": "c1"})  # good input is written and published
    assert _rows(storage) == (1, 0)
    assert _published(queue) == 1


def test_an_enqueue_in_a_transaction_on_another_database_is_refused(
    queue: str, storage: SQLStorage, tmp_path: Path
) -> None:
    app = _app(queue, POSTGRES_URL, storage.tables.jobs.name.removesuffix("jobs"))
    durable = Durable(app)

    @durable.task(name="bad.t", shared=False)
    def t(order: Any) -> None: ...

    from sqlalchemy import create_engine, text
    from sqlalchemy.orm import Session

    other = create_engine(f"sqlite:///{tmp_path}/app.sqlite3")
    with Session(other) as session, session.begin():
        session.execute(text("CREATE TABLE orders (id INTEGER)"))
        with pytest.raises(
            ConfigurationError,
            match=r"task 'bad.t': connection= is on sqlite:///.*app.sqlite3, but the durable "
            r"store is postgresql\+psycopg://.*; the job.s row must be written",
        ):
            durable.enqueue(t, {}, connection=session)
        with pytest.raises(ConfigurationError, match=r"unique= is settled in the store's own"):
            durable.enqueue(t, {}, connection=session, unique="k")
    with pytest.raises(ConfigurationError, match=r"connection= takes a SQLAlchemy Session"):
        durable.enqueue(t, {}, connection="postgresql://elsewhere")
    other.dispose()
    assert _rows(storage) == (0, 0)
    assert _published(queue) == 0
