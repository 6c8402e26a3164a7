"""The JSON codec of the database and the wire: Decimal stays exact in, goes out as a JSON
number."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson


def json_loads(text: str | None) -> Any:
    """jsonb as Python, numbers with decimals as Decimal so totals never drift."""
    if text is None:
        return None
    return json.loads(text, parse_float=Decimal)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def json_dumps(value: Any) -> str:
    """Compact JSON for the database and the wire (Decimal as a JSON number), by orjson:
    every frame is encoded once, but there are many frames."""
    return orjson.dumps(value, default=_json_default).decode()
