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


class byte_order(FunctionElement[str]):  # lower case: it reads like the SQL function
    """A text column compared by code point: PostgreSQL sorts by the database's collation
    (``-`` and ``:`` ignored under en_US), so there it is ``COLLATE "C"``; MySQL's
    binary collation and SQLite compare that way already."""

    type = String()
    inherit_cache = True


@compiles(byte_order)
def _byte_order(element: byte_order, compiler: Any, **kw: Any) -> str:
    (column,) = element.clauses
    text = str(compiler.process(column, **kw))
    return f'{text} COLLATE "C"' if compiler.dialect.name == "postgresql" else text


def parse_minute(text: str) -> datetime:
    """What ``minute_of`` returned, as an aware UTC datetime."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=timezone.utc)
