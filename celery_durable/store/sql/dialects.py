"""SQL functions each database spells its own way, compiled per dialect."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import String
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

_FORMATS = {
    "postgresql": ("to_char", "YYYY-MM-DD HH24:MI"),
    "mysql": ("date_format", "%Y-%m-%d %H:%i"),
    "mariadb": ("date_format", "%Y-%m-%d %H:%i"),
    "sqlite": ("strftime", "%Y-%m-%d %H:%M"),
}


class minute_of(FunctionElement[str]):  # lower case: it reads like the SQL function
    """A naive UTC timestamp column's minute as text, "YYYY-MM-DD HH:MM"."""

    type = String()
    inherit_cache = True


@compiles(minute_of)
def _minute_of(element: minute_of, compiler: Any, **kw: Any) -> str:
    name = compiler.dialect.name
    if name not in _FORMATS:
        raise NotImplementedError(f"minute_of has no spelling for the {name} dialect")
    function, pattern = _FORMATS[name]
    (column,) = element.clauses
    # A literal the compiler renders for the driver (pymysql's paramstyle doubles its %).
    fmt = compiler.render_literal_value(pattern, String())
    args = (fmt, compiler.process(column, **kw))
    return f"{function}({', '.join(args if function == 'strftime' else args[::-1])})"


class _TextColumn(FunctionElement[str]):
    """A text column, spelled per dialect: ``spellings`` maps a dialect's name to a
    format of the column's SQL (``{}``); other dialects get the column as it is."""

    type = String()
    inherit_cache = True
    spellings: dict[str, str] = {}


@compiles(_TextColumn)
def _text_column(element: _TextColumn, compiler: Any, **kw: Any) -> str:
    (column,) = element.clauses
    text = str(compiler.process(column, **kw))
    return element.spellings.get(compiler.dialect.name, "{}").format(text)


class byte_order(_TextColumn):  # lower case: it reads like the SQL function
    """A text column compared by code point: PostgreSQL sorts by the database's collation
    (``-`` and ``:`` ignored under en_US), so there it is ``COLLATE "C"``; MySQL's
    binary collation and SQLite compare that way already."""

    inherit_cache = True
    spellings = {"postgresql": '{} COLLATE "C"'}


class outer_table(_TextColumn):  # lower case: it reads like the SQL function
    """A text join column whose table must be the outer loop of the join: SQLite, with no
    statistics, may pick the other order and scan the larger table; a unary ``+`` keeps
    it from looking this column's table up by index, so it scans this one instead.
    Elsewhere the column as it is (their planners weigh the tables' sizes)."""

    inherit_cache = True
    spellings = {"sqlite": "+{}"}


def parse_minute(text: str) -> datetime:
    """What ``minute_of`` returned, as an aware UTC datetime."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=timezone.utc)
