"""The in-memory store, for tests and docs."""

from .storage import MemoryStorage

__all__ = ["MemoryStorage"]
