"""Who may use the dashboard, and proof that a state-changing request came from it.

- Bound to loopback by default; any other bind needs credentials (``check_bind``).
- Credentials: HTTP basic (``durable_web_username``/``durable_web_password``), a bearer
  token (``durable_web_token``), or the host application's own ``auth`` hook when the
  dashboard is mounted. With none of them, only loopback clients get in.
- Anonymous loopback access also needs a loopback ``Host`` header, so a page on a
  rebound DNS name cannot talk to it as if it were this machine.
- CSRF: a random nonce in an HttpOnly, SameSite=Lax cookie, and a token that is the
  HMAC of that nonce and the operator's name under the app's secret, sent back in a
  form field or a header. A page from another origin can neither read the token nor
  forge it; a POST whose ``Origin`` is another site is refused as well.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import inspect
import ipaddress
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from ..errors import ConfigurationError
from ..settings import Settings

CSRF_COOKIE = "durable_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True)
class Operator:
    """Who is asking; ``can_act=False`` sees everything and may change nothing."""

    name: str
    can_act: bool = True


Auth = Callable[[HTTPConnection], "Operator | str | Awaitable[Operator | str | None] | None"]
"""The host application's check: the operator (or their name), or None to refuse. It
may be ``async def``; a plain function runs in a thread (it may touch a database)."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_name(host_header: str) -> str:
    """``example.com`` of ``example.com:5556``, ``::1`` of ``[::1]:5556``."""
    return urlsplit(f"//{host_header}").hostname or ""


def has_credentials(settings: Settings) -> bool:
    return settings.web_token is not None or settings.web_password is not None


def check_bind(host: str, settings: Settings, auth: Auth | None) -> None:
    """Refuse to serve beyond this machine with nobody asked who they are."""
    if is_loopback(host) or has_credentials(settings) or auth is not None:
        return
    raise ConfigurationError(
        f"refusing to serve the dashboard on {host} without authentication: anyone who "
        "can reach it could retry, cancel and purge jobs. Set durable_web_username and "
        "durable_web_password (HTTP basic) or durable_web_token (a bearer token), or bind "
        "to 127.0.0.1"
    )


async def authenticate(
    conn: HTTPConnection, settings: Settings, auth: Auth | None
) -> Operator | None:
    if auth is not None:
        found = await _ask(auth, conn)
        if isinstance(found, Operator) and found.name:
            return found
        return Operator(found) if isinstance(found, str) and found else None
    header = conn.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    token = settings.web_token
    if token is not None and scheme.lower() == "bearer" and _same(value, token):
        return Operator("token")
    if settings.web_password is not None and scheme.lower() == "basic":
        user = _basic_user(value, settings)
        if user is not None:
            return Operator(user)
    if not has_credentials(settings) and _local(conn):
        return Operator(f"anonymous@{conn.client.host}")  # type: ignore[union-attr]
    return None


async def _ask(auth: Auth, conn: HTTPConnection) -> object:
    if inspect.iscoroutinefunction(auth):
        return await auth(conn)
    found = await run_in_threadpool(auth, conn)
    return await found if inspect.isawaitable(found) else found


def _local(conn: HTTPConnection) -> bool:
    """A loopback client that asked for a loopback name (not a rebound DNS name)."""
    if not (conn.client and is_loopback(conn.client.host)):
        return False
    return is_loopback(_host_name(conn.headers.get("host", "")))


def same_origin(conn: HTTPConnection) -> bool:
    """No ``Origin`` (not a browser), or the one this request was sent to."""
    origin = conn.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc == conn.headers.get("host", "")


def _basic_user(value: str, settings: Settings) -> str | None:
    try:
        user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    ok_user = _same(user, settings.web_username or "")
    ok_password = _same(password, settings.web_password or "")
    return user if ok_user and ok_password else None


def _same(given: str, expected: str) -> bool:
    """In constant time: how much of a secret matched must not show in the timing."""
    return hmac.compare_digest(given.encode(), expected.encode())


def new_nonce() -> str:
    return secrets.token_urlsafe(24)


def csrf_token(secret: bytes, nonce: str, operator: Operator) -> str:
    """Bound to the operator too: a viewer's token is no good in an admin's browser."""
    message = f"{nonce}|{operator.name}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def csrf_valid(secret: bytes, nonce: str | None, operator: Operator, token: str | None) -> bool:
    if not nonce or not token:
        return False
    return _same(token, csrf_token(secret, nonce, operator))
