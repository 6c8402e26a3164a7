"""Prometheus figures of the live transports, read at scrape time."""

from __future__ import annotations

import logging

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from realtime.models import ActiveConnection, Transport

logger = logging.getLogger(__name__)


class RealtimeCollector(Collector):
    """Connections of this process and of all processes, deliveries, repaired gaps."""

    def describe(self):
        # Without describe() the registry calls collect() at registration, which would
        # query the database while Django is still starting.
        return []

    def collect(self):
        from realtime.hub import _hubs

        hubs = list(_hubs.values())
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


def _counts_by_transport() -> list[tuple[str, int]]:
    from django.db.models import Count

    return list(
        ActiveConnection.objects.values("transport")
        .annotate(n=Count("id"))
        .values_list("transport", "n")
    )
