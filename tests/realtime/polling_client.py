"""The polling tests' client: `GET /api/updates/latest/<cursor>` over httpx, and the
change log's head that answers are measured against."""

import httpx
from channels.db import database_sync_to_async

from changes.selectors import change_log_state

LATEST = "/api/updates/latest/"


async def head() -> int:
    return (await database_sync_to_async(change_log_state)()).head_seq


async def poll(http, cursor, headers=None, **params) -> httpx.Response:
    return await http.get(f"{LATEST}{cursor}", params=params, headers=headers or {})
