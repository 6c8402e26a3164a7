"""The live protocol's REST endpoints are documented in the OpenAPI schema."""

import pytest

from tests.realtime.rest_endpoints import ACKNOWLEDGE, HEALTH, STATUS, SUBSCRIBE

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


async def test_the_rest_endpoints_are_in_the_openapi_schema(http, published):
    response = await http.get("/api/schema/")
    assert response.status_code == 200
    schema = response.text
    for path in (SUBSCRIBE, ACKNOWLEDGE, STATUS, HEALTH):
        assert f"{path}:" in schema, path
