"""The JSON codec of the database and the wire: Decimal stays exact in, goes out as a JSON
number."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import orjson


def json_loads(text: str | None) -> Any:
    """jsonb as Python, numbers with decimals as Decimal so totals never drift."""
    if text is None:
        return None
    return json.loads(text, parse_float=Decimal)


# How deep a client's JSON may nest. Every message and body of the protocol and the REST
# API nests a few levels; the limit is ours, not the interpreter's, so a body is refused
# the same way on every Python (3.11's parser gives up near 1,000 levels, 3.13's near
# 10,000) and parsing never goes deep enough to cost.
CLIENT_JSON_MAX_DEPTH = 64
_STRING = re.compile(r'"(?:\\.|[^"\\])*"')
_BRACKET = re.compile(r"[\[\]{}]")


def json_too_deep(text: str, limit: int = CLIENT_JSON_MAX_DEPTH) -> bool:
    """Whether `text` nests arrays and objects deeper than `limit` (strings skipped)."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for bracket in _BRACKET.finditer(_STRING.sub("", text)):
        depth += 1 if bracket.group() in "[{" else -1
        if depth > limit:
            return True
    return False


def json_loads_client(text: str | bytes) -> Any:
    """A client's JSON; ValueError when it does not parse or nests deeper than
    CLIENT_JSON_MAX_DEPTH."""
    if isinstance(text, bytes):
        text = text.decode()  # UnicodeDecodeError is a ValueError
    if json_too_deep(text):
        raise ValueError(f"JSON nested deeper than {CLIENT_JSON_MAX_DEPTH} levels")
    return json.loads(text)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def json_dumps(value: Any) -> str:
    """Compact JSON for the database and the wire (Decimal as a JSON number), by orjson:
    every frame is encoded once, but there are many frames."""
    return orjson.dumps(value, default=_json_default).decode()
