"""JSON codec for everything stored: task arguments, call results, job results.

It is kombu's JSON (the one Celery's default serializer uses), so whatever a Celery JSON
message can carry (datetime, Decimal, UUID, ...) round-trips through the store too.
"""

from __future__ import annotations

import hashlib
from typing import Any

from kombu.utils import json as kombu_json

from .errors import SerializationError

# kombu's encoder, built once: the same text kombu_json.dumps() gives, without building
# an encoder per value (every call() encodes twice).
_encode = kombu_json.JSONEncoder().encode
_encode_sorted = kombu_json.JSONEncoder(sort_keys=True).encode


def dumps(value: Any, *, what: str) -> str:
    """Encode ``value``; ``what`` names it in the error ("task 'x' argument", ...)."""
    try:
        if type(value) is int:  # the commonest result, in the encoder's own text
            return int.__repr__(value)
        return _encode(value)
    except (TypeError, ValueError, OverflowError):
        path, bad = _first_unserializable(value, "")
        where = f" at {path}" if path else ""
        raise SerializationError(
            f"{what}{where} is of type {type(bad).__module__}.{type(bad).__qualname__}, "
            f"which cannot be stored as JSON. Pass plain data (str, int, float, bool, None, "
            f"list, dict, datetime, Decimal, UUID) instead, e.g. an id or a dict."
        ) from None


def loads(text: str | None) -> Any:
    return None if text is None else kombu_json.loads(text)


def digest(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """A short, stable fingerprint of call arguments (for history inspection)."""
    try:
        text = _encode_sorted([list(args), kwargs])
    except (TypeError, ValueError):
        text = repr((args, sorted(kwargs.items())))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _first_unserializable(value: Any, path: str) -> tuple[str, Any]:
    """Walk containers to name the innermost value JSON cannot encode."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                return f"{path}[{key!r}] (the key)", key
            if not encodes(item):
                return _first_unserializable(item, f"{path}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            if not encodes(item):
                return _first_unserializable(item, f"{path}[{index}]")
    return path, value


def encodes(value: Any) -> bool:
    try:
        _encode(value)
    except (TypeError, ValueError, OverflowError):
        return False
    return True
