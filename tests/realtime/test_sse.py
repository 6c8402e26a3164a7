"""The SSE endpoint `GET /api/stream/dashboard`: communicator tests on the real ASGI
application, and one end-to-end test against a live daphne."""

import asyncio
import copy
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import ApplicationCommunicator, HttpCommunicator
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from changes.publisher import change_batch_publish, frames_fan_out
from changes.selectors import change_log_state
from config.asgi import application
from realtime import sse, sse_codec
from realtime.hub import get_hub
from realtime.models import ActiveConnection
from tests.helpers import sql
from tests.live.conftest import database_url_of_tests, free_port, wait_for_port
from tests.realtime.conftest import db, publish

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

PATH = "/api/stream/dashboard"
REPO = Path(__file__).resolve().parents[2]
APP = "config.asgi:application"


@pytest.fixture(autouse=True)
def layer_prefix(settings):
    """A channel-layer prefix of this test alone: other test runs sharing the Redis publish
    to the same context groups (`industry:steel` of their own `world`)."""
    prefix = f"{settings.REDIS_PREFIX}-sse-{uuid.uuid4().hex[:12]}"
    layers = copy.deepcopy(settings.CHANNEL_LAYERS)
    layers["default"]["CONFIG"]["prefix"] = f"{prefix}:layer"
    settings.CHANNEL_LAYERS = layers
    return prefix


class Stream:
    """One SSE request on the ASGI application, read event by event."""

    def __init__(self, query: str = "", headers=None, method: str = "GET", path: str = PATH):
        self.communicator = ApplicationCommunicator(
            application,
            {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": method,
                "scheme": "http",
                "path": path,
                "raw_path": path.encode(),
                "root_path": "",
                "query_string": query.encode(),
                "headers": [(b"host", b"testserver"), *(headers or [])],
                "client": ("127.0.0.1", 40000),
                "server": ("testserver", 80),
            },
        )
        self.buffer = b""
        self.raw = b""
        self.ended = False
        self.status = None
        self.headers: dict[bytes, bytes] = {}

    async def start(self, timeout: float = 5) -> "Stream":
        await self.communicator.send_input({"type": "http.request", "body": b""})
        start = await self.communicator.receive_output(timeout)
        assert start["type"] == "http.response.start"
        self.status = start["status"]
        self.headers = {k.lower(): v for k, v in start.get("headers", [])}
        return self

    async def chunk(self, timeout: float = 5) -> bytes:
        message = await self.communicator.receive_output(timeout)
        assert message["type"] == "http.response.body"
        assert not self.ended, "a body chunk after the end"
        self.ended = not message.get("more_body", False)
        self.raw += message["body"]
        return message["body"]

    async def block(self, timeout: float = 5) -> str:
        """The next block of lines ended by a blank line."""
        while b"\n\n" not in self.buffer:
            assert not self.ended, f"the stream ended; left: {self.buffer!r}"
            self.buffer += await self.chunk(timeout)
        block, self.buffer = self.buffer.split(b"\n\n", 1)
        return block.decode()

    async def event(self, timeout: float = 5) -> dict:
        fields: dict = {}
        for line in (await self.block(timeout)).split("\n"):
            name, _, value = line.partition(": ")
            if name == "data":
                fields["data"] = fields.get("data", "") + value
            else:
                assert name not in fields, line
                fields[name] = value
        if "data" in fields:
            fields["message"] = json.loads(fields["data"])
            assert fields["message"]["type"] == fields["event"]
        return fields

    async def until(self, kind: str, timeout: float = 5) -> dict:
        """The next event of `kind`, skipping heartbeats."""
        while True:
            event = await self.event(timeout)
            if event.get("event") == kind:
                return event
            assert event.get("event") == "heartbeat", event

    async def collect(self, quiet: float = 0.6) -> list[dict]:
        """Every event until nothing arrives for `quiet` seconds (heartbeats skipped)."""
        events = []
        while True:
            while b"\n\n" in self.buffer:
                event = await self.event()
                if event.get("event") != "heartbeat":
                    events.append(event)
            if await self.communicator.receive_nothing(timeout=quiet):
                return events
            self.buffer += await self.chunk()

    async def opened(self) -> tuple[dict, dict]:
        """Start, check the stream headers and `retry:`, return hello and subscribed."""
        await self.start()
        assert self.status == 200, self.raw
        assert self.headers[b"content-type"] == b"text/event-stream"
        assert self.headers[b"cache-control"] == b"no-cache"
        assert self.headers[b"x-accel-buffering"] == b"no"
        assert await self.block() == f"retry: {sse.RETRY_MS}"
        hello = await self.event()
        assert hello["event"] == "hello" and "id" not in hello
        subscribed = await self.until("subscribed")
        assert "id" not in subscribed
        return hello["message"], subscribed["message"]

    async def close(self) -> None:
        await self.communicator.send_input({"type": "http.disconnect"})
        await self.communicator.wait(timeout=5)


async def refused(query: str = "", headers=None, method: str = "GET") -> tuple[int, dict, dict]:
    """A request that must be answered by one JSON error, nothing streamed."""
    stream = Stream(query, headers, method)
    await stream.start()
    body = await stream.chunk()
    assert stream.ended, "an error response is one body"
    assert stream.headers[b"content-type"] == b"application/json"
    await stream.communicator.wait(timeout=5)
    return stream.status, json.loads(body), stream.headers


def company(world, name: str) -> str:
    return f"company:{world[name]}"


def seqs(batch: dict) -> list[int]:
    return [item["seq"] for item in batch["changes"]]


# -- pure functions ---------------------------------------------------------------------


def test_cursor_token_round_trip():
    cursors = {"company:5b0c6a62-0d3f-4a7e-9b61-2f1d8a2c1e55": 18231, "industry:steel": 7}
    token = sse_codec.cursor_token("0123456789abcdef0123456789abcdef", cursors)
    assert "\n" not in token and len(token) < 120
    decoded = sse_codec.cursor_token_decode(token)
    assert decoded.epoch_prefix == "01234567" and decoded.cursors == cursors


@pytest.mark.parametrize(
    "token",
    ["", "garbage", "1.", "1.!!!", "2.YWJj", "1." + "A" * 9000, "1.YWJjfGluZHVzdHJ5OnN0ZWVsPXg"],
)
def test_undecodable_tokens(token):
    assert sse_codec.cursor_token_decode(token) is None


# -- the stream -------------------------------------------------------------------------


async def test_event_order_catch_up_then_live(world):
    first = await publish()
    await db(
        "UPDATE emission_records SET scope1_tonnes = 301 WHERE company_id = %s AND year = 2024",
        [world["acme"]],
    )
    await publish()
    acme = company(world, "acme")
    query = (
        f"contexts={acme},{company(world, 'hidden')},company:not-a-uuid,industry:steel"
        f"&since={first.seq_to}&unknown=ignored"
    )
    stream = Stream(query)
    hello, subscribed = await stream.opened()
    state = await database_sync_to_async(change_log_state)()
    assert hello["epoch"] == state.epoch and hello["transport"] == "sse"
    assert hello["policy"]["heartbeat_ms"] == 15_000
    assert subscribed["contexts"] == [acme, "industry:steel"]
    assert subscribed["rejected"] == [
        {"context": company(world, "hidden"), "code": "forbidden_context"},
        {"context": "company:not-a-uuid", "code": "invalid_context"},
    ]

    catch_up = [await stream.until("batch"), await stream.until("batch")]
    assert [e["message"]["context"] for e in catch_up] == [acme, "industry:steel"]
    for event in catch_up:
        assert event["message"]["prev_seq"] == first.seq_to
        assert any(
            item["fields"].get("scope1_tonnes") == 301.0 for item in event["message"]["changes"]
        )
        assert event["id"]

    await db("UPDATE companies SET name = 'Live Acme' WHERE id = %s", [world["acme"]])
    await publish()
    live = await stream.collect()
    assert {e["message"]["context"] for e in live} == {acme, "industry:steel"}
    for event in live:
        assert event["event"] == "batch" and event["id"]
        assert event["message"]["seq_from"] > catch_up[0]["message"]["seq_to"]
        assert any(i["fields"].get("name") == "Live Acme" for i in event["message"]["changes"])
    # The id of the last batch holds both contexts' cursors after it.
    token = sse_codec.cursor_token_decode(live[-1]["id"])
    assert token.cursors == {e["message"]["context"]: e["message"]["seq_to"] for e in live}
    assert token.epoch_prefix == state.epoch[: sse_codec.TOKEN_EPOCH_CHARS]
    await stream.close()


async def test_only_batches_carry_an_id(world):
    await publish()
    stream = Stream(f"contexts={company(world, 'acme')}")
    await stream.opened()
    await db("UPDATE companies SET name = 'Id Co' WHERE id = %s", [world["acme"]])
    await publish()
    events = await stream.collect()
    assert [e["event"] for e in events] == ["batch"]
    text = stream.raw.decode()
    assert text.count("\nid: ") + text.startswith("id: ") == 1
    await stream.close()


async def test_last_event_id_resumes_every_context_and_wins_over_since(world):
    await publish()
    acme = company(world, "acme")
    query = f"contexts={acme},industry:steel"
    stream = Stream(query)
    await stream.opened()
    await db(
        "UPDATE emission_records SET scope1_tonnes = 401 WHERE company_id = %s AND year = 2024",
        [world["acme"]],
    )
    await publish()
    before = await stream.collect()
    assert {e["message"]["context"] for e in before} == {acme, "industry:steel"}
    held = {e["message"]["context"]: e["message"]["seq_to"] for e in before}
    last_id = before[-1]["id"]
    await stream.close()

    await db(
        "UPDATE emission_records SET scope1_tonnes = 402 WHERE company_id = %s AND year = 2024",
        [world["acme"]],
    )
    await publish()
    await db("UPDATE companies SET name = 'Resumed Co' WHERE id = %s", [world["acme"]])
    await publish()

    again = Stream(f"{query}&since=0", headers=[(b"last-event-id", last_id.encode())])
    await again.opened()
    after = await again.collect()
    assert after and all(e["event"] == "batch" for e in after)
    for context in (acme, "industry:steel"):
        batches = [e["message"] for e in after if e["message"]["context"] == context]
        assert batches[0]["prev_seq"] == held[context]
        received = [seq for batch in batches for seq in seqs(batch)]
        assert received == sorted(set(received)), "no duplicates, in order"
        assert all(seq > held[context] for seq in received), "nothing before the id"
        fields = [item["fields"] for batch in batches for item in batch["changes"]]
        assert any(f.get("scope1_tonnes") == 402.0 for f in fields)
        assert any(f.get("name") == "Resumed Co" for f in fields)
        assert not any(f.get("scope1_tonnes") == 401.0 for f in fields)
    await again.close()


async def test_undecodable_last_event_id_resets_every_context(world):
    await publish()
    acme = company(world, "acme")
    stream = Stream(
        f"contexts={acme},industry:steel&since=0", headers=[(b"last-event-id", b"not-ours")]
    )
    await stream.opened()
    state = await database_sync_to_async(change_log_state)()
    resets = [await stream.event(), await stream.event()]
    for event, context in zip(resets, (acme, "industry:steel"), strict=True):
        assert event["event"] == "reset" and "id" not in event
        assert event["message"] == {
            "type": "reset",
            "context": context,
            "reason": "cursor_invalid",
            "epoch": state.epoch,
            "seq": state.head_seq,
        }
    assert await stream.collect() == [], "no catch-up from since=0"
    # It continues from the head.
    await db("UPDATE companies SET name = 'After Reset' WHERE id = %s", [world["acme"]])
    await publish()
    live = await stream.collect()
    assert live and all(e["message"]["prev_seq"] <= state.head_seq for e in live)
    await stream.close()


async def test_last_event_id_of_another_epoch(world):
    await publish()
    token = sse_codec.cursor_token("f" * 32, {"industry:steel": 1})
    stream = Stream("contexts=industry:steel", headers=[(b"last-event-id", token.encode())])
    await stream.opened()
    reset = await stream.event()
    assert reset["message"]["reason"] == "epoch_changed"
    await stream.close()


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("", "invalid_parameter"),
        ("contexts=", "invalid_parameter"),
        ("contexts=,%20,", "invalid_parameter"),
        ("since=3", "invalid_parameter"),
        ("contexts=overview&since=-1", "invalid_parameter"),
        ("contexts=overview&since=abc", "invalid_parameter"),
        ("contexts=overview&since=1.5", "invalid_parameter"),
        ("contexts=overview&since=99999999999999999999", "invalid_parameter"),
        ("contexts=overview&since=1&since=2", "invalid_parameter"),
        ("contexts=%FF%FE", "invalid_parameter"),
        ("contexts=overview&epoch=" + "e" * 200, "invalid_parameter"),
        ("contexts=overview&pad=" + "x" * (9 * 1024), "invalid_parameter"),
        (
            "contexts=" + ",".join(f"industry:i{n}" for n in range(60)),
            "too_many_subscriptions",
        ),
    ],
)
async def test_bad_queries_are_400_before_the_stream(world, query, code):
    status, body, _ = await refused(query)
    assert status == 400
    assert body["error"]["code"] == code and body["error"]["detail"]


async def test_bad_token_is_401(world):
    status, body, headers = await refused(
        "contexts=overview", headers=[(b"authorization", b"Token wrong-key")]
    )
    assert status == 401 and body["error"]["code"] == "authentication_failed"
    assert headers[b"www-authenticate"] == b"Token"


async def test_other_methods_are_405(world):
    status, body, headers = await refused("contexts=overview", method="POST")
    assert status == 405 and body["error"]["code"] == "method_not_allowed"
    assert headers[b"allow"] == b"GET"


async def test_too_many_streams_from_one_address_are_429(world, settings):
    settings.REALTIME_MAX_CONNECTIONS_PER_ADDRESS = 1
    first = Stream("contexts=overview")
    await first.opened()
    status, body, headers = await refused("contexts=overview")
    assert status == 429 and body["error"]["code"] == "rate_limited"
    assert int(headers[b"retry-after"]) > 0
    await first.close()


async def test_anonymous_never_receives_a_hidden_company(world):
    await publish()
    stream = Stream(
        f"contexts={company(world, 'hidden')},industry:steel,companies,overview&since=0"
    )
    _, subscribed = await stream.opened()
    assert company(world, "hidden") not in subscribed["contexts"]
    await db("UPDATE companies SET name = 'Secret Rename' WHERE id = %s", [world["hidden"]])
    await db(
        "UPDATE emission_records SET scope1_tonnes = 5 WHERE company_id = %s", [world["hidden"]]
    )
    await db("UPDATE companies SET name = 'Visible Rename' WHERE id = %s", [world["acme"]])
    await publish()
    await stream.collect()
    text = stream.raw.decode()
    assert "Visible Rename" in text
    for secret in ("Secret Rename", "Hidden Steel", str(world["hidden"])):
        # Only the rejection of the requested context names it.
        assert text.count(secret) == (1 if secret == str(world["hidden"]) else 0), secret
    await stream.close()


async def test_staff_token_receives_a_hidden_company(world):
    def make_token():
        user = get_user_model().objects.create_user("sse-ops", password="x-pass-1", is_staff=True)
        return Token.objects.create(user=user).key

    key = await database_sync_to_async(make_token)()
    await publish()
    hidden = company(world, "hidden")
    stream = Stream(f"contexts={hidden}", headers=[(b"authorization", f"Token {key}".encode())])
    _, subscribed = await stream.opened()
    assert subscribed["contexts"] == [hidden] and subscribed["rejected"] == []
    await db("UPDATE companies SET name = 'Still Hidden' WHERE id = %s", [world["hidden"]])
    await publish()
    batch = await stream.until("batch")
    assert batch["message"]["changes"][0]["fields"]["name"] == "Still Hidden"
    await stream.close()


async def test_heartbeats_when_idle(world, settings):
    settings.REALTIME_SSE_HEARTBEAT_S = 0.2
    stream = Stream("contexts=overview")
    await stream.opened()
    state = await database_sync_to_async(change_log_state)()
    for _ in range(2):
        started = time.monotonic()
        beat = await stream.event(timeout=2)
        assert beat["event"] == "heartbeat" and "id" not in beat
        assert beat["message"]["seq"] == state.head_seq
        assert beat["message"]["server_time"].endswith("Z")
        assert time.monotonic() - started < 1
    await stream.close()


async def test_session_subscribe_group_message_adds_a_context(world):
    await publish()
    stream = Stream("contexts=overview")
    hello, _ = await stream.opened()
    acme = company(world, "acme")
    await get_channel_layer().group_send(
        sse.session_group(hello["session"]),
        {"type": "session.subscribe", "contexts": [acme, company(world, "hidden")], "ref": 3},
    )
    subscribed = (await stream.until("subscribed"))["message"]
    assert subscribed["contexts"] == ["overview", acme] and subscribed["ref"] == 3
    assert subscribed["rejected"] == [
        {"context": company(world, "hidden"), "code": "forbidden_context"}
    ]
    await db("UPDATE companies SET name = 'Grouped Co' WHERE id = %s", [world["acme"]])
    await publish()
    batches = [e["message"] for e in await stream.collect()]
    acme_batch = next(b for b in batches if b["context"] == acme)
    assert acme_batch["changes"][0]["fields"]["name"] == "Grouped Co"
    # Asking again for a context it follows does not move its cursor: no replay.
    await get_channel_layer().group_send(
        sse.session_group(hello["session"]),
        {"type": "session.subscribe", "contexts": [acme], "since": 0},
    )
    again = [e["message"] for e in await stream.collect()]
    assert [m["type"] for m in again] == ["subscribed"]
    assert again[0]["contexts"] == ["overview", acme]
    await stream.close()


async def test_system_messages_arrive_as_their_own_events(world):
    from realtime.broadcast import system_message_send

    stream = Stream("contexts=overview")
    await stream.opened()
    await system_message_send(
        {"type": "maintenance", "active": True, "message": "Upgrade at 22:00", "until": None}
    )
    event = await stream.until("maintenance")
    assert event["message"]["message"] == "Upgrade at 22:00"
    assert "id" not in event
    await stream.close()


async def test_a_context_added_again_after_a_reconnect_resumes_from_the_id(world):
    """The token also covers contexts added by `session.subscribe`; re-adding one after a
    reconnect continues from its cursor there (here with the polyfills' `lastEventId`)."""
    await publish()
    acme = company(world, "acme")
    stream = Stream("contexts=overview")
    hello, _ = await stream.opened()
    group = sse.session_group(hello["session"])
    await get_channel_layer().group_send(group, {"type": "session.subscribe", "contexts": [acme]})
    await stream.until("subscribed")
    await db("UPDATE companies SET name = 'Before Co' WHERE id = %s", [world["acme"]])
    await publish()
    before = [e for e in await stream.collect() if e["message"]["context"] == acme]
    held, last_id = before[-1]["message"]["seq_to"], before[-1]["id"]
    assert sse_codec.cursor_token_decode(last_id).cursors[acme] == held
    await stream.close()

    await db("UPDATE companies SET name = 'Missed Co' WHERE id = %s", [world["acme"]])
    await publish()
    again = Stream(f"contexts=overview&lastEventId={last_id}")
    hello, _ = await again.opened()
    head = (await database_sync_to_async(change_log_state)()).head_seq
    await get_channel_layer().group_send(  # as POST /api/realtime/subscribe sends it
        sse.session_group(hello["session"]),
        {"type": "session.subscribe", "contexts": [acme], "since": head},
    )
    # Until the `subscribed` that adds the company (however slow the machine), then the rest.
    events = []
    while not any(m["type"] == "subscribed" and acme in m["contexts"] for m in events):
        event = await again.event(5)
        if event.get("event") != "heartbeat":
            events.append(event["message"])
    events += [e["message"] for e in await again.collect()]
    subscribed = next(m for m in events if m["type"] == "subscribed" and acme in m["contexts"])
    assert subscribed["contexts"] == ["overview", acme]
    catch_up = next(m for m in events if m.get("context") == acme)
    assert catch_up["type"] == "batch" and catch_up["prev_seq"] == held
    assert [i["fields"].get("name") for i in catch_up["changes"]] == ["Missed Co"]
    await again.close()


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


async def test_trailing_slash_and_other_paths_reach_django(world):
    stream = Stream("contexts=overview", path=PATH + "/")
    await stream.opened()
    await stream.close()
    django = HttpCommunicator(
        application, "GET", "/api/companies/", headers=[(b"host", b"testserver")]
    )
    response = await django.get_response(5)
    assert response["status"] == 200
    assert json.loads(response["body"])


# -- end to end -------------------------------------------------------------------------


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
