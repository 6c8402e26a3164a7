"""The reconnect storm: 1,000 WebSocket and 200 SSE clients on company contexts, all
dropped by TCP reset while changes flow and reconnecting from their cursors at once,
then all dropped again. Nothing may stay behind in the server (sessions, hub members,
active_connections rows, health counts) and every client must have every change of its
context once, in order. Five rounds on one server, so a race shows."""

import json
import random
import subprocess
import sys
import threading
import time

import httpx
import psycopg
import pytest

from tests.helpers import sql
from tests.live.conftest import REPO, database_url_of_tests, stack_env, stack_start

pytestmark = [pytest.mark.timeout(900)]

COMPANIES = 100
WEBSOCKET_CLIENTS = 1000
SSE_CLIENTS = 200
ROUNDS = 5
WRITES_PER_S = 50
# PROTOCOL.md's promise to operators: everything released within 5 s of the last close.
RELEASE_S = 5.0


def metric(text: str, name: str) -> float:
    """Sum of every sample of metric `name` in a Prometheus text answer."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def rss_mb(pid: int) -> float:
    """Resident memory of a process, MB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def server_holds(stack) -> dict:
    """What the web process still holds: sessions, hub members and joined contexts (its
    /metrics), its active_connections rows, and the health answer's count."""
    figures = httpx.get(f"{stack.http_url}/metrics", timeout=10).text
    health = httpx.get(f"{stack.http_url}/api/realtime/health", timeout=10).json()
    return {
        "sessions": metric(figures, "carbon_realtime_process_connections"),
        "hub_members": metric(figures, "carbon_realtime_hub_members"),
        "hub_contexts": metric(figures, "carbon_realtime_hub_contexts"),
        "rows": sql("SELECT count(*) FROM active_connections")[0][0],
        "health_total": health["connections"]["total"],
    }


def writer(stop: threading.Event, records: list, errors: list) -> None:
    """Raw SQL updates to random companies' records, WRITES_PER_S a second."""
    try:
        with psycopg.connect(database_url_of_tests(), autocommit=True) as conn:
            while not stop.is_set():
                conn.execute(
                    "UPDATE emission_records SET scope1_tonnes = scope1_tonnes + 1 WHERE id = %s",
                    [random.choice(records)],
                )
                time.sleep(1 / WRITES_PER_S)
    except Exception as exc:
        errors.append(exc)


class StormProcess:
    """tests/faults/storm.py in a process of its own, driven line by line."""

    def __init__(self, stack, plan_path):
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.faults.storm",
                "--ws",
                stack.ws_url,
                "--http",
                stack.http_url,
                "--plan",
                str(plan_path),
            ],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def expect(self, tag: str) -> dict:
        line = self.process.stdout.readline()
        assert line.startswith(tag + " "), f"expected {tag}, got {line[:300]!r}"
        return json.loads(line[len(tag) + 1 :])

    def command(self, line: str, tag: str) -> dict:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self.expect(tag)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def heads(contexts: list[str]) -> dict[str, int]:
    rows = sql(
        "SELECT context, max(seq) FROM change_routes WHERE context = ANY(%s)"
        " AND audiences & 1 <> 0 GROUP BY context",
        [contexts],
    )
    return dict(rows)


def routed(context: str, after: int, through: int) -> list[tuple[int, str, str]]:
    """(seq, entity, record id) of the public changes of `context` in (after, through]."""
    return [
        (seq, entity, str(record))
        for seq, entity, record in sql(
            "SELECT cr.seq, dc.entity, dc.record_id FROM change_routes cr"
            " JOIN data_changes dc ON dc.seq = cr.seq WHERE cr.context = %s"
            " AND cr.seq > %s AND cr.seq <= %s AND cr.audiences & 1 <> 0 ORDER BY cr.seq",
            [context, after, through],
        )
    ]


def check_client(client: dict, head: int) -> list[str]:
    """What is wrong with what one client received (empty: nothing)."""
    problems = []
    if client["gaps"] or client["duplicates"] or client["resets"]:
        problems.append(
            f"gaps {client['gaps']} duplicates {client['duplicates']} resets {client['resets']}"
        )
    if client["cursor"] < head:
        problems.append(f"cursor {client['cursor']} below the head {head}")
    seqs = [item[0] for item in client["items"]]
    if seqs != sorted(seqs) or len(seqs) != len(set(seqs)):
        problems.append("items out of order or repeated")
    # Every routed change arrived, as its own item or merged into a later item of the
    # same record (PROTOCOL.md coalesces repeated changes of a record in one batch).
    latest: dict[tuple[str, str], int] = {}
    for seq, entity, record in client["items"]:
        latest[(entity, record)] = max(seq, latest.get((entity, record), 0))
    for seq, entity, record in routed(client["context"], client["start"], client["cursor"]):
        if latest.get((entity, record), 0) < seq:
            problems.append(f"seq {seq} ({entity} {record}) never arrived")
            break
    return problems


@pytest.fixture
def storm_world(transactional_db):
    [(industry,)] = sql(
        "INSERT INTO industries (slug, name, sector) VALUES ('storm', 'Storm', 'Tests')"
        " RETURNING id"
    )
    companies = [
        row[0]
        for row in sql(
            "INSERT INTO companies (name, country, industry_id, is_public, verification_status)"
            " SELECT 'Storm ' || n, 'DE', %s, true, 'verified' FROM generate_series(1, %s) n"
            " RETURNING id",
            [industry, COMPANIES],
        )
    ]
    records = [
        row[0]
        for row in sql(
            "INSERT INTO emission_records (company_id, year, scope1_tonnes, verification_status)"
            " SELECT id, 2024, 100, 'verified' FROM companies WHERE industry_id = %s"
            " RETURNING id",
            [industry],
        )
    ]
    return {"companies": companies, "records": records}


def test_reconnect_storm_leaves_nothing_behind_and_loses_nothing(storm_world, tmp_path):
    env = stack_env(REALTIME_MAX_CONNECTIONS_PER_ADDRESS="100000", WEB_ACCESS_LOG="0")
    stack = stack_start(("web", "publisher"), env=env, logs=tmp_path)
    contexts = [f"company:{company}" for company in storm_world["companies"]]
    plan = [
        {"transport": "websocket", "context": contexts[i % COMPANIES]}
        for i in range(WEBSOCKET_CLIENTS)
    ] + [{"transport": "sse", "context": contexts[i % COMPANIES]} for i in range(SSE_CLIENTS)]
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(plan))
    figures = []
    try:
        time.sleep(1)  # the publisher publishes the world before the first client
        for round_ in range(ROUNDS):
            storm = StormProcess(stack, plan_path)
            stop, errors = threading.Event(), []
            writing = threading.Thread(
                target=writer, args=(stop, storm_world["records"], errors), daemon=True
            )
            try:
                storm.expect("READY")
                writing.start()
                time.sleep(2)
                stormed = storm.command("storm", "STORMED")
                time.sleep(2)
                stop.set()
                writing.join()
                time.sleep(0.5)  # the publisher publishes the last writes
                assert errors == []
                final = heads(contexts)
                drained = storm.command(f"drain {json.dumps(final)}", "DRAINED")
                assert drained["late"] == [], f"round {round_}: clients behind the head"
                closed = storm.command("close reset", "CLOSED")
                closed_at = time.monotonic()
            finally:
                stop.set()
                storm.stop()

            deadline = closed_at + RELEASE_S
            while True:
                held = server_holds(stack)
                if not any(held.values()) or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            released_s = round(time.monotonic() - closed_at, 2)
            assert not any(held.values()), f"round {round_}: still held {held}"

            problems = {}
            for index, client in enumerate(closed["clients"]):
                found = check_client(client, final.get(client["context"], 0))
                if found:
                    problems[index] = found
            assert problems == {}, f"round {round_}: {dict(list(problems.items())[:5])}"
            changes = sum(len(c["items"]) for c in closed["clients"])
            figures.append(
                {
                    "round": round_,
                    "reconnect_s": stormed["seconds"],
                    "released_s": released_s,
                    "items": changes,
                    "web_rss_mb": rss_mb(stack.processes["web"].pid),
                }
            )
        print(f"storm rounds: {figures}")
        # Memory: what a round leaves behind adds up round after round. A round's zombies
        # would hold about 35 KB each, 40 MB for 1,200. Measured without them: 12 to 15 MB
        # a round (1,800 connections with the flaps), the residual growth per connection
        # that the churn soak also shows (docs/benchmarks.md), so the bound is per round.
        # Most of it was the `websockets` parser cycle of every ended connection, now
        # broken at connection_lost (realtime/wsprotocol.py): one run since measured
        # 6.1, 4.9, 0.5 and 0.1 MB over the four rounds: a bound of 8 MB a round on average
        # catches that cycle coming back.
        growth = figures[-1]["web_rss_mb"] - figures[0]["web_rss_mb"]
        per_round = growth / (ROUNDS - 1)
        assert per_round < 8, f"the web process grew {per_round:.1f} MB a round ({growth:.1f})"
        assert "ERROR" not in stack.log("web"), stack.log("web")[-3000:]
    finally:
        stack.stop_all()
