"""The SQL store (PostgreSQL, MySQL/MariaDB, SQLite)."""

from .storage import SQLStorage

__all__ = ["SQLStorage"]
