"""Who may use the dashboard, and proof that a state-changing request came from it.

- Bound to loopback by default; any other bind needs credentials (``check_bind``).
- Credentials: HTTP basic (``durable_web_username``/``durable_web_password``), a bearer
  token (``durable_web_token``), or the host application's own ``auth`` hook when the
  dashboard is mounted. With none of them, only loopback clients get in.
- CSRF: a random nonce in an HttpOnly, SameSite=Strict cookie, and a token that is the
  HMAC of that nonce under the app's secret, sent back in a form field or a header.
  A page from another origin can neither read the token nor forge it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Callable
from dataclasses import dataclass

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


Auth = Callable[[HTTPConnection], "Operator | str | None"]
"""The host application's check: the operator (or their name), or None to refuse."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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


def authenticate(conn: HTTPConnection, settings: Settings, auth: Auth | None) -> Operator | None:
    if auth is not None:
        found = auth(conn)
        return Operator(found) if isinstance(found, str) else found
    header = conn.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    token = settings.web_token
    if token is not None and scheme.lower() == "bearer" and _same(value, token):
        return Operator("token")
    if settings.web_password is not None and scheme.lower() == "basic":
        user = _basic_user(value, settings)
        if user is not None:
            return Operator(user)
    if not has_credentials(settings) and conn.client and is_loopback(conn.client.host):
        return Operator(f"anonymous@{conn.client.host}")
    return None


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


def csrf_token(secret: bytes, nonce: str) -> str:
    return hmac.new(secret, nonce.encode(), hashlib.sha256).hexdigest()


def csrf_valid(secret: bytes, nonce: str | None, token: str | None) -> bool:
    if not nonce or not token:
        return False
    return hmac.compare_digest(csrf_token(secret, nonce), token)
