"""The storage conformance suite on every implementation we ship."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from celery_durable.store import MemoryStorage, SQLStorage, Storage
from celery_durable.testing import StorageConformance


class TestMemoryStorage(StorageConformance):
    @pytest.fixture
    def storage(self) -> Iterator[Storage]:
        yield MemoryStorage()


@pytest.mark.parametrize("backend", ["sqlite", "postgres", "mysql"])
class TestSQLStorage(StorageConformance):
    @pytest.fixture
    def storage(
        self, backend: str, sql_storage_factory: Callable[[str], SQLStorage]
    ) -> Iterator[Storage]:
        yield sql_storage_factory(backend)
