"""Prometheus figures of the live transports, read at scrape time, and the process's
counters of refusals (error frames by code, rate limits by which limit, connections
refused for maintenance by transport), which the monitor reads too."""

from __future__ import annotations

import logging
import weakref
from collections import Counter
from collections.abc import Callable
from typing import Any

from django.db.models import Count
from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from realtime.models import ActiveConnection, Transport

logger = logging.getLogger(__name__)

# Counters of this process since it started. Plain dicts, not prometheus_client metrics:
# incremented on paths where a lock per increment is not wanted (every error frame), and
# read by both the collector below and the monitor's process figures.
errors: Counter[str] = Counter()
rate_limited: Counter[str] = Counter()
maintenance_refusals: Counter[str] = Counter()
# Sessions the server ended, by why: send_failed, slow_client, error, heartbeat_timeout.
sessions_ended: Counter[str] = Counter()

# The `websockets` state machine of every WebSocket connection this process accepted
# (realtime/wsprotocol.py), held weakly: what is here is open, or ended and not freed yet.
# An ended connection is freed at once by reference counting; a count that keeps rising
# above the open connections is what an ended connection left behind (a reference cycle
# waits for a full garbage collection, which the tuned collector makes rare).
websocket_states: weakref.WeakSet = weakref.WeakSet()

# How late the process's event loop ran a timer due every LOOP_LAG_PROBE_S: what a frame
# ready to deliver at that moment waited for the loop (other connections' work, a garbage
# collection, the database thread holding the GIL). Deliveries' own latency is the
# clients' to measure; this says whether the process is why it grew.
LOOP_LAG_PROBE_S = 0.05
event_loop_lag = Histogram(
    "carbon_event_loop_lag_seconds",
    f"How late this server process's event loop woke a timer due every {LOOP_LAG_PROBE_S} s",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)

# Which limit refused: the label values of carbon_realtime_rate_limited_total.
LIMIT_WS_MESSAGES = "websocket_messages"
LIMIT_WS_CONNECTIONS = "websocket_connections"
LIMIT_SSE_CONNECTIONS = "sse_connections"
LIMIT_POLLS = "polls"
LIMIT_ENGAGEMENT = "engagement"


def error_count(code: str) -> None:
    """One `error` frame (or refused request) with this code."""
    errors[code] += 1


def rate_limited_count(limit: str) -> None:
    """One request, message or connection refused by a rate limit."""
    rate_limited[limit] += 1


def session_ended_count(reason: str) -> None:
    """One session ended on the server's side (LiveSession.end)."""
    sessions_ended[reason] += 1


def maintenance_refusal_count(transport: str) -> None:
    """One new connection (or poll) refused because maintenance mode is on."""
    maintenance_refusals[transport] += 1


class RealtimeCollector(Collector):
    """Connections of this process and of all processes, deliveries, repaired gaps.
    `hubs`: the process's hubs (realtime.hub.running_hubs; the hub imports this module)."""

    def __init__(self, hubs: Callable[[], list[Any]]) -> None:
        self.hubs = hubs

    def describe(self):
        # Without describe() the registry calls collect() at registration, which would
        # query the database while Django is still starting.
        return []

    def collect(self):
        hubs = self.hubs()
        local = GaugeMetricFamily(
            "carbon_realtime_process_connections",
            "Live connections held by this server process",
            labels=["transport"],
        )
        counts = dict.fromkeys(Transport.values, 0)
        for hub in hubs:
            for session in list(hub.sessions):
                counts[session.transport] = counts.get(session.transport, 0) + 1
        for transport, count in counts.items():
            local.add_metric([transport], count)
        yield local
        members = GaugeMetricFamily(
            "carbon_realtime_hub_members",
            "Subscriptions (connection, context) held by this process's hub",
        )
        members.add_metric([], sum(len(m) for hub in hubs for m in list(hub.members.values())))
        yield members
        contexts = GaugeMetricFamily(
            "carbon_realtime_hub_contexts",
            "Channel-layer groups (context, audience) this process's hub has joined",
        )
        contexts.add_metric([], sum(len(hub.members) for hub in hubs))
        yield contexts
        states = GaugeMetricFamily(
            "carbon_realtime_websocket_objects",
            "WebSocket connection objects alive in this server process: its open"
            " connections and any ended one not freed yet",
        )
        states.add_metric([], len(websocket_states))
        yield states

        total = GaugeMetricFamily(
            "carbon_realtime_connections",
            "Live connections over every server process (active_connections)",
            labels=["transport"],
        )
        try:
            rows = dict(_counts_by_transport())
        except Exception:
            logger.exception("could not count connections")
            rows = {}
        for transport in Transport.values:
            total.add_metric([transport], rows.get(transport, 0))
        yield total

        deliveries = CounterMetricFamily(
            "carbon_realtime_deliveries", "Frames handed to connections by this process's hub"
        )
        deliveries.add_metric([], sum(hub.deliveries for hub in hubs))
        yield deliveries
        frames = CounterMetricFamily(
            "carbon_realtime_frames_received", "Published frames this process's hub received"
        )
        frames.add_metric([], sum(hub.frames_received for hub in hubs))
        yield frames
        repairs = CounterMetricFamily(
            "carbon_realtime_gaps_repaired", "Gaps in a context stream read back from the log"
        )
        repairs.add_metric([], sum(f.repairs for hub in hubs for f in hub.followers.values()))
        yield repairs
        followers = [f for hub in hubs for f in list(hub.followers.values())]
        from_memory = CounterMetricFamily(
            "carbon_realtime_catchups_from_memory",
            "Catch-ups answered from the hub's recent frames instead of the log",
        )
        from_memory.add_metric([], sum(f.recent_answers for f in followers))
        yield from_memory
        recent = GaugeMetricFamily(
            "carbon_realtime_recent_frames_bytes",
            "Bytes of recent frames this process keeps for catch-ups from memory",
        )
        recent.add_metric([], sum(f.recent_bytes() for f in followers))
        yield recent
        yield _labelled_counter(
            "carbon_realtime_errors", "Error frames and refused requests, by code", "code", errors
        )
        yield _labelled_counter(
            "carbon_realtime_rate_limited",
            "Messages, connections and requests refused by a rate limit, by limit",
            "limit",
            rate_limited,
        )
        yield _labelled_counter(
            "carbon_realtime_sessions_ended",
            "Sessions ended by the server, by reason",
            "reason",
            sessions_ended,
        )
        yield _labelled_counter(
            "carbon_realtime_maintenance_refusals",
            "New connections and polls refused during maintenance, by transport",
            "transport",
            maintenance_refusals,
        )


def _labelled_counter(name: str, documentation: str, label: str, counts: Counter):
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value, count in sorted(counts.items()):
        family.add_metric([value], count)
    return family


def _counts_by_transport() -> list[tuple[str, int]]:
    return list(
        ActiveConnection.objects.values("transport")
        .annotate(n=Count("id"))
        .values_list("transport", "n")
    )
