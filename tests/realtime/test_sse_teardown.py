"""How an SSE stream ends: the client's disconnect, the server's stop, the hub's
shutdown, and one end-to-end test of SIGTERM to a live daphne."""

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.conf import settings as django_settings

from changes.publisher import change_batch_publish, frames_fan_out
from realtime import sse
from realtime.hub import get_hub
from realtime.models import ActiveConnection
from tests.helpers import sql
from tests.live.conftest import database_url_of_tests, free_port, wait_for_port
from tests.realtime.sse_stream import PATH, Stream, company, refused

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(60),
    pytest.mark.usefixtures("layer_prefix"),
]


REPO = Path(__file__).resolve().parents[2]
APP = "config.asgi:application"


async def test_disconnect_leaves_the_hub(world):
    acme = company(world, "acme")
    stream = Stream(f"contexts={acme}")
    hello, _ = await stream.opened()
    hub = get_hub()
    assert (acme, "public") in hub.members
    assert await database_sync_to_async(
        ActiveConnection.objects.filter(id=hello["session"]).exists
    )()
    await stream.close()
    assert (acme, "public") not in hub.members
    assert not any(session.id == hello["session"] for session in hub.sessions)
    count = database_sync_to_async(ActiveConnection.objects.filter(id=hello["session"]).count)
    # Rows of ended sessions are deleted in batches (realtime.hub.ROW_RELEASE_BATCH_S).
    for _ in range(50):
        if await count() == 0:
            break
        await asyncio.sleep(0.02)
    assert await count() == 0


async def test_server_stop_ends_the_body_and_leaves_the_hub(world):
    """daphne cancels every application when it stops: the body still ends properly."""
    stream = Stream("contexts=industry:steel")
    await stream.opened()
    stream.communicator.future.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stream.communicator.future
    last = None
    while not stream.communicator.output_queue.empty():
        last = stream.communicator.output_queue.get_nowait()
    assert last == {"type": "http.response.body", "body": b"", "more_body": False}
    assert ("industry:steel", "public") not in get_hub().members


async def test_hub_shutdown_ends_streams_and_refuses_new_ones(world):
    stream = Stream("contexts=overview")
    await stream.opened()
    await get_hub().shutdown()
    while not stream.ended:
        await stream.chunk()
    status, body, headers = await refused("contexts=overview")
    assert status == 503 and body["error"]["code"] == "unavailable"
    assert headers[b"retry-after"]
    await stream.close()


# -- end to end ------------------------------------------------------------------------


def publish_now() -> None:
    result = change_batch_publish()
    if result and result.frames:
        async_to_sync(frames_fan_out)(result.frames)


def sse_events(lines):
    """Parse httpx's lines into events (dicts of field to value)."""
    fields: dict = {}
    for line in lines:
        if line == "":
            if fields:
                yield fields
            fields = {}
            continue
        name, _, value = line.partition(": ")
        fields[name] = value
    assert not fields, f"the stream ended inside an event: {fields}"


@pytest.mark.timeout(90)
def test_live_daphne_stream_ends_cleanly_on_sigterm(world, tmp_path, layer_prefix):
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url_of_tests(),
        "REDIS_URL": django_settings.REDIS_URL,
        "REDIS_PREFIX": layer_prefix,
    }
    with open(tmp_path / "daphne.log", "w") as log:
        daphne = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), APP],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port(port, process=daphne)
            publish_now()
            acme = company(world, "acme")
            url = f"http://127.0.0.1:{port}{PATH}"
            with (
                httpx.Client(timeout=httpx.Timeout(15.0)) as client,
                client.stream(
                    "GET", url, params={"contexts": f"{acme},industry:steel"}
                ) as response,
            ):
                assert response.status_code == 200, (tmp_path / "daphne.log").read_text()
                assert response.headers["content-type"] == "text/event-stream"
                events = sse_events(response.iter_lines())
                assert next(events) == {"retry": str(sse.RETRY_MS)}
                assert next(events)["event"] == "hello"
                subscribed = json.loads(next(events)["data"])
                assert subscribed["contexts"] == [acme, "industry:steel"]

                sql("UPDATE companies SET name = 'Daphne Co' WHERE id = %s", [world["acme"]])
                publish_now()
                batch = next(e for e in events if e["event"] != "heartbeat")
                assert batch["event"] == "batch" and batch["id"]
                assert json.loads(batch["data"])["changes"][0]["fields"]["name"] == "Daphne Co"

                daphne.send_signal(signal.SIGTERM)
                # The rest of the stream, then its proper end: no RemoteProtocolError.
                rest = list(events)
                assert all(e["event"] in ("batch", "heartbeat") for e in rest)
            assert daphne.wait(timeout=15) == 0
        finally:
            if daphne.poll() is None:
                daphne.kill()
                daphne.wait()
    assert "Traceback" not in (tmp_path / "daphne.log").read_text()
