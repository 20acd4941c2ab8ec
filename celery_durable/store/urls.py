"""Database URLs as they may be shown: never with the password."""

from __future__ import annotations

from sqlalchemy.engine import make_url


def safe_url(url: str) -> str:
    """``url`` with its password masked, for anything shown or logged."""
    try:
        return str(make_url(url).render_as_string(hide_password=True))
    except Exception:  # not a URL SQLAlchemy can parse: show nothing that could leak
        return "<unparsable database URL>"
