"""Readers of the environment, for the settings: each parses one variable, or gives
the default when it is not set."""

import os

import limits
from django.core.exceptions import ImproperlyConfigured


def env_int(name: str, default: int) -> int:
    """Read a whole number (a variable set but empty is an error, as a typo would be)."""
    return int(os.environ.get(name, default))


def env_float(name: str, default: float) -> float:
    """Read a number (a variable set but empty is an error, as a typo would be)."""
    return float(os.environ.get(name, default))


def env_bool(name: str, default: bool) -> bool:
    """Read a yes/no environment variable ("1", "true", "yes", "on" are yes)."""
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    """Read a comma-separated environment variable."""
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def env_rate(name: str, default: str) -> str:
    """Read a rate in `limits` notation ("300/minute", "5 per second"), checked at start-up
    so that a typo is a clear error here rather than a failure at the first request."""
    value = os.environ.get(name) or default
    try:
        limits.parse(value)
    except ValueError:
        raise ImproperlyConfigured(
            f"{name}={value!r} is not a rate such as '300/minute' or '5 per second'."
        ) from None
    return value
