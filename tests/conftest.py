"""Shared fixtures: local services (required in CI, skipped with a reason elsewhere)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from celery_durable.store.sql import SQLStorage

# Our user-facing fixtures (durable_worker), tested in tests/integration/test_pytest_plugin
pytest_plugins = ["celery_durable.testing.pytest_plugin"]

POSTGRES_URL = os.environ.get(
    "DURABLE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MYSQL_URL = os.environ.get("DURABLE_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
REDIS_URL = os.environ.get("DURABLE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RABBITMQ_URL = os.environ.get("DURABLE_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")


def _address(url: str, default_port: int) -> tuple[str, int]:
    parsed = urlsplit(url)
    return parsed.hostname or "127.0.0.1", parsed.port or default_port


SERVICES = {
    "postgres": _address(POSTGRES_URL, 5432),
    "mysql": _address(MYSQL_URL, 3306),
    "redis": _address(REDIS_URL, 6379),
    "rabbitmq": _address(RABBITMQ_URL, 5672),
}

# .ci/run sets this: there a missing service is a failure, never a skip.
REQUIRE_SERVICES = os.environ.get("CELERY_DURABLE_REQUIRE_SERVICES") == "1"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str) -> None:
    host, port = SERVICES[name]
    if _reachable(host, port):
        return
    message = f"{name} is not reachable at {host}:{port}"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} (CELERY_DURABLE_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(autouse=True)
def _services_for_markers(request: pytest.FixtureRequest) -> None:
    for name in SERVICES:
        if request.node.get_closest_marker(name):
            require_service(name)


def unique_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}_"


SQL_BACKENDS = {
    "sqlite": None,
    "postgres": POSTGRES_URL,
    "mysql": MYSQL_URL,
}


def sql_url(backend: str, tmp_path: os.PathLike[str]) -> str:
    if backend == "sqlite":
        return f"sqlite:///{os.fspath(tmp_path)}/store.sqlite3"
    require_service(backend)
    url = SQL_BACKENDS[backend]
    assert url is not None
    return url


@pytest.fixture
def sql_storage_factory(tmp_path: os.PathLike[str]) -> Iterator[object]:
    """Makes migrated SQLStorages with a unique table prefix, dropped at teardown."""
    made: list[SQLStorage] = []

    def make(backend: str, **options: Any) -> SQLStorage:
        store = SQLStorage(sql_url(backend, tmp_path), table_prefix=unique_prefix(), **options)
        store.migrate()
        made.append(store)
        return store

    yield make
    for store in made:
        store.drop_tables()
        store.dispose()
