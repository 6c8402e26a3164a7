"""Entity tags of the dashboard snapshots (the REST API's overview, industry and company
views), derived from what a snapshot shows rather than from its body, so that a
conditional request is answered 304 before the body is built.

A snapshot is a function of the change-log position it carries (epoch and seq), the
audience (staff see more), the request's path and query, and the rows no capture
trigger covers (the industries: an admin renaming one moves no seq). The tag hashes
those with the code that renders the body (this app's views, selectors and serializers,
fingerprinted at import), so a deploy that changes a response's shape changes its tags.

A body read at seq S may already show a write committed but not yet published; a client
revalidating at S keeps the body it has, which shows everything up to S too, and the
live changes after S bring it the rest: the contract of `seq` (PROTOCOL.md).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from django.utils.http import parse_etags

_RENDERING = ("views.py", "selectors.py", "serializers.py")
_HERE = Path(__file__).resolve().parent
CODE_FINGERPRINT = hashlib.blake2b(
    b"".join((_HERE / name).read_bytes() for name in _RENDERING), digest_size=8
).hexdigest()


def snapshot_etag(
    *, epoch: str, seq: int, audience: str, path: str, query: list[tuple[str, str]], rows: str
) -> str:
    """The quoted strong tag of one snapshot (`rows`: the fingerprint of the uncaptured
    rows it may show)."""
    digest = hashlib.blake2b(digest_size=10)
    for part in (CODE_FINGERPRINT, audience, path, rows, *(f"{k}={v}" for k, v in sorted(query))):
        digest.update(part.encode())
        digest.update(b"\0")
    return f'"{epoch}.{seq}.{digest.hexdigest()}"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an If-None-Match header names `etag` (weak comparison, as for GET and HEAD;
    `*` matches any current representation)."""
    if not if_none_match:
        return False
    tags = parse_etags(if_none_match)
    if tags == ["*"]:
        return True
    return etag.removeprefix("W/") in (tag.removeprefix("W/") for tag in tags)
