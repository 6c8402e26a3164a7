"""The context vocabulary of PROTOCOL.md: what a dashboard view subscribes to."""

from __future__ import annotations

import re
import uuid

OVERVIEW = "overview"
COMPANIES = "companies"
SYSTEM = "system"

# Context strings are short: `company:` and a UUID is the longest legitimate one.
CONTEXT_MAX_LENGTH = 100
_SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


class InvalidContext(ValueError):
    """A string that is not a context at all (as opposed to one that is forbidden)."""


def company_context(company_id: uuid.UUID | str) -> str:
    return f"company:{company_id}"


def industry_context(slug: str) -> str:
    return f"industry:{slug}"


def context_parse(context: object) -> tuple[str, str | None]:
    """Split and validate a context string: ("company", "<uuid>"), ("overview", None)...

    Raises InvalidContext for anything malformed; says nothing about existence or access.
    """
    if not isinstance(context, str) or not context or len(context) > CONTEXT_MAX_LENGTH:
        raise InvalidContext("A context is a non-empty string of at most 100 characters.")
    if context in (OVERVIEW, COMPANIES, SYSTEM):
        return context, None
    kind, _, key = context.partition(":")
    if kind == "company":
        try:
            parsed = uuid.UUID(key)
        except ValueError as exc:
            raise InvalidContext(f"{context!r}: company contexts name a company UUID.") from exc
        if str(parsed) != key.lower():
            raise InvalidContext(f"{context!r}: write the UUID in its canonical form.")
        return "company", str(parsed)
    if kind == "industry":
        if not _SLUG.match(key):
            raise InvalidContext(f"{context!r}: industry contexts name an industry slug.")
        return "industry", key
    raise InvalidContext(f"{context!r} is not a context.")


def context_normalize(context: object) -> str:
    """The canonical spelling of a valid context (lower-case UUIDs)."""
    kind, key = context_parse(context)
    return kind if key is None else f"{kind}:{key}"
