"""Helpers of the tests of refresh policies on open connections: the deadline a policy
change must meet, policy rows they edit, writing preferences and policies, and the data
changes the tests publish."""

import json

from channels.db import database_sync_to_async

from preferences.services import refresh_preferences_update
from tests.preferences.conftest import POLICIES, make_user, token_header
from tests.realtime.conftest import db, make_client, publish

# The requirement: a policy change reaches an open connection within a second.
POLICY_DEADLINE_S = 1.0
ANONYMOUS_METRICS = {"user_type": "anonymous", "category": "company_metrics"}
ANONYMOUS_BENCHMARKS = {"user_type": "anonymous", "category": "industry_benchmarks"}


async def set_preferences(user, session_key, document) -> None:
    await database_sync_to_async(refresh_preferences_update)(
        user=user, session_key=session_key, document=document
    )


async def put_json(http, path, body, headers=None):
    return await http.put(
        path,
        content=json.dumps(body),
        headers={"Content-Type": "application/json", **(headers or {})},
    )


async def put_policies_as_staff(*policies: dict):
    """PUT `policies` through the admin API as a staff user; the response."""
    _, staff = await make_user("ops", staff=True)
    async with make_client() as http:
        return await put_json(http, POLICIES, {"policies": list(policies)}, token_header(staff))


async def rename(company, name: str) -> None:
    await db("UPDATE companies SET name = %s WHERE id = %s", [name, company])
    await publish()


async def record(company, year: int, tonnes: int) -> None:
    await db(
        "UPDATE emission_records SET scope1_tonnes = %s WHERE company_id = %s AND year = %s",
        [tonnes, company, year],
    )
    await publish()
