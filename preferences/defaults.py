"""The refresh policies a fresh installation starts with (seeded by migration 0002) and
that stand in for a row missing from `refresh_policies`.

Why these values:

- Everyone may have real time, from a minimum interval of 0, and gets it by default. The
  product's promise is that public dashboards stay current by themselves, and the
  benchmarks' commit-to-client targets are measured on anonymous clients. A viewer who
  wants fewer updates chooses an interval (or manual) in their preferences.
- `max_deliveries_per_minute` 6,000 (batches of one context at least 10 ms apart) for
  every viewer: faster than the publisher's own cycle (a 10 ms probe and a 3 ms window),
  so it never holds back a normal stream; it only merges a runaway one (frames back to
  back from a bulk import) when the process has few subscribers of the context, which
  is when merging is cheap. A low cap for the crowd would cost more than it saves:
  forwarding a frame shares one encoded text among every connection, while merging
  decodes and re-encodes per connection.
- No debounce: the publisher already gathers changes for 3 ms before a batch.
- Every transport everywhere: the fallbacks (SSE, then polling) exist for networks that
  block WebSocket; refusing one is an operator's decision for a given deployment.
- Staff get everything (60,000 deliveries per minute, the largest a policy may say):
  operators watch the system itself and must see exactly what happens.
"""

from __future__ import annotations

from preferences.models import Category, Transport, UserType

ALL_TRANSPORTS = [Transport.WEBSOCKET.value, Transport.SSE.value, Transport.POLLING.value]

VIEWER_POLICY = {
    "min_interval_ms": 0,
    "default_interval_ms": 0,
    "max_deliveries_per_minute": 6000,
    "debounce_ms": 0,
    "allowed_transports": ALL_TRANSPORTS,
    "realtime_allowed": True,
}

STAFF_POLICY = {**VIEWER_POLICY, "max_deliveries_per_minute": 60_000}

POLICY_DEFAULTS: dict[tuple[str, str], dict] = {
    (user_type, category): dict(STAFF_POLICY if user_type == UserType.STAFF else VIEWER_POLICY)
    for user_type in UserType.values
    for category in Category.values
}
