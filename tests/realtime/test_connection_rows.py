"""The rows of live connections (realtime/services.py), on the real PostgreSQL: every write
is one statement that commits without waiting for the WAL flush, and that setting ends
with its own transaction."""

import datetime as dt
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.db import connection, transaction

from realtime.models import ActiveConnection
from realtime.services import (
    connection_close,
    connection_contexts_set,
    connection_open,
    connections_at_address,
    connections_close,
    connections_touch,
)

pytestmark = pytest.mark.django_db(transaction=True)


def synchronous_commit() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        return cursor.fetchone()[0]


def opened(address: str | None = "127.0.0.9", user=None) -> str:
    session = uuid.uuid4().hex
    connection_open(
        session=session,
        transport="websocket",
        user=user,
        audience="public",
        client_address=address,
        user_agent="a" * 400,
    )
    return session


WRITES = {
    "open": lambda session: opened(),
    "contexts": lambda session: connection_contexts_set(
        session=session, contexts=["industry:steel", "overview"]
    ),
    "touch": lambda session: connections_touch(sessions=[session]),
    "close": lambda session: connection_close(session=session),
    "close many": lambda session: connections_close(sessions=[session]),
}


@pytest.mark.parametrize("write", list(WRITES))
def test_a_write_commits_unsynced_and_the_setting_ends_with_its_transaction(write):
    session = opened()
    assert synchronous_commit() == "on"
    with transaction.atomic():
        WRITES[write](session)
        assert synchronous_commit() == "off"
    # In autocommit the statement is the transaction: nothing is left for the next one.
    WRITES[write](opened())
    assert synchronous_commit() == "on"


def test_open_records_the_row_and_a_returning_session_takes_it_over():
    user = get_user_model().objects.create_user("rows-owner", password="x-pass-1")
    session = opened(user=user)
    row = ActiveConnection.objects.get(id=session)
    assert (row.transport, row.user_id, row.audience) == ("websocket", user.pk, "public")
    assert (row.client_address, row.contexts, row.dashboard_context) == ("127.0.0.9", [], "")
    assert len(row.user_agent) == 300
    ActiveConnection.objects.filter(id=session).update(
        last_seen=row.last_seen - dt.timedelta(minutes=5)
    )
    connection_open(
        session=session,
        transport="sse",
        user=None,
        audience="public",
        client_address="::1",
    )
    again = ActiveConnection.objects.get(id=session)
    assert (again.transport, again.user_id, again.client_address) == ("sse", None, "::1")
    assert again.last_seen > row.last_seen - dt.timedelta(minutes=1)


def test_contexts_are_recorded_with_the_first_as_the_dashboard():
    session = opened()
    connection_contexts_set(session=session, contexts=["company:7", "overview"])
    row = ActiveConnection.objects.get(id=session)
    assert (row.contexts, row.dashboard_context) == (["company:7", "overview"], "company:7")
    connection_contexts_set(session=session, contexts=[])
    row.refresh_from_db()
    assert (row.contexts, row.dashboard_context) == ([], "")


def test_connections_at_an_address_count_only_fresh_rows():
    sessions = [opened("127.0.0.10") for _ in range(3)]
    opened("127.0.0.11")
    opened(None)
    assert connections_at_address(address="127.0.0.10") == 3
    assert connections_at_address(address=None) == 0
    ActiveConnection.objects.filter(id=sessions[0]).update(
        last_seen=ActiveConnection.objects.get(id=sessions[0]).last_seen - dt.timedelta(hours=1)
    )
    assert connections_at_address(address="127.0.0.10") == 2
    assert connections_touch(sessions=sessions) == 3
    assert connections_at_address(address="127.0.0.10") == 3
    assert connections_close(sessions=sessions[:2]) == 2
    connection_close(session=sessions[2])
    assert connections_at_address(address="127.0.0.10") == 0
