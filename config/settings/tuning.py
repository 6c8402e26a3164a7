"""The product's tuning values, each with why it is what it is: change publication
(changes/, emissions/), the live transports (realtime/), notifications and the
operators' side (adminpanel/). Each may be overridden by the environment variable of its
name (or, in a dict, the one it names)."""

import os

from config.settings.env import env_bool, env_float, env_int, env_list, env_rate

# --- Change publication -------------------------------------------------------------------

# Most changes one publisher transaction claims. A 100,000-row bulk update is published
# in a few batches of this size, each a few seconds of work at most, so the lock is
# never held for long and memory stays bounded.
PUBLISHER_CLAIM_LIMIT = env_int("PUBLISHER_CLAIM_LIMIT", 20000)
# Items per group message / WebSocket frame: a burst is delivered in full, split into
# frames a browser parses in a few milliseconds.
PUBLISHER_FRAME_MAX_ITEMS = env_int("PUBLISHER_FRAME_MAX_ITEMS", 500)
# How often the running publisher probes the partial index of unprocessed changes when
# idle. An empty index probe costs microseconds; 10 ms keeps the added latency small
# (5 ms on average) without NOTIFY's commit-time lock (docs/benchmarks.md).
PUBLISHER_POLL_INTERVAL = env_float("PUBLISHER_POLL_INTERVAL", 0.01)
# After waking, wait this long for more changes so that changes arriving together go
# out as one batch ("intelligent batching"). Under load batches grow by themselves
# (changes pile up while one is published), so this window stays short.
PUBLISHER_DEBOUNCE = env_float("PUBLISHER_DEBOUNCE", 0.003)
# Published changes are kept this long for catch-up; older cursors get a reset.
CHANGE_RETENTION_DAYS = env_float("CHANGE_RETENTION_DAYS", 7)
# Rows deleted per pruning statement: short transactions, no long locks on the log.
CHANGE_PRUNE_BATCH = env_int("CHANGE_PRUNE_BATCH", 10000)
# More missed changes than this in one catch-up gets `too_many_changes` (PROTOCOL.md).
CATCHUP_MAX_CHANGES = env_int("CATCHUP_MAX_CHANGES", 10000)
# Benchmarks of an industry are recomputed at most once per this many seconds after its
# emission records change: a burst of revisions costs one recompute, not hundreds.
BENCHMARK_DEBOUNCE_SECONDS = env_int("BENCHMARK_DEBOUNCE_SECONDS", 10)
# Significance rules (changes.significance documents each).
SIGNIFICANCE_RULES = {
    "total_major_pct": env_float("SIGNIFICANCE_TOTAL_MAJOR_PCT", 10),
    "total_critical_pct": env_float("SIGNIFICANCE_TOTAL_CRITICAL_PCT", 50),
    "quality_major_points": env_float("SIGNIFICANCE_QUALITY_MAJOR_POINTS", 20),
    "benchmark_major_pct": env_float("SIGNIFICANCE_BENCHMARK_MAJOR_PCT", 5),
    "top_rank": env_int("SIGNIFICANCE_TOP_RANK", 10),
}

# --- Live transports ----------------------------------------------------------------------

# Heartbeat when idle: under the 55 s at which proxies cut idle connections, with jitter.
REALTIME_HEARTBEAT_S = env_float("REALTIME_HEARTBEAT_S", 25)
# PROTOCOL.md: a heartbeat event at least every 15 s on SSE when idle. Proxies cut idle
# connections at about 60 s; 15 s also lets a browser notice a dead stream quickly.
REALTIME_SSE_HEARTBEAT_S = env_float("REALTIME_SSE_HEARTBEAT_S", 15)
# Server-wide floors under every refresh policy (preferences.selectors): no context of any
# client gets batches closer than min_interval_ms, nor sooner than debounce_ms after its
# changes; 0 means "as fast as published". max_batch is the items per frame.
REALTIME_DEFAULT_POLICY = {
    "min_interval_ms": env_int("REALTIME_MIN_INTERVAL_MS", 0),
    "debounce_ms": env_int("REALTIME_DEBOUNCE_MS", 0),
    "max_batch": PUBLISHER_FRAME_MAX_ITEMS,
    "heartbeat_ms": int(REALTIME_HEARTBEAT_S * 1000),
}
# A dashboard shows a handful of contexts; 50 leaves room without letting one connection
# join thousands of groups.
REALTIME_MAX_SUBSCRIPTIONS = env_int("REALTIME_MAX_SUBSCRIPTIONS", 50)
# Largest client message (PROTOCOL.md: 64 KiB): a WebSocket text frame (larger closes with
# 1009) or the JSON body of a live-protocol HTTP request (larger gets 413).
REALTIME_MAX_FRAME_BYTES = env_int("REALTIME_MAX_FRAME_BYTES", 64 * 1024)
# Client messages per window per connection; a dashboard sends a few per minute.
REALTIME_MESSAGE_RATE = env_int("REALTIME_MESSAGE_RATE", 30)
REALTIME_MESSAGE_WINDOW_S = env_int("REALTIME_MESSAGE_WINDOW_S", 10)
# `rate_limited` errors before the connection is closed with 4429.
REALTIME_RATE_LIMIT_STRIKES = env_int("REALTIME_RATE_LIMIT_STRIKES", 20)
# How often each server process refreshes last_seen of its connections (one UPDATE for
# all of them) and checks its followed contexts against the published heads.
REALTIME_TOUCH_INTERVAL_S = env_float("REALTIME_TOUCH_INTERVAL_S", 15)
# A connection row nobody refreshed for this long belongs to a dead process: swept.
REALTIME_CONNECTION_STALE_S = env_float("REALTIME_CONNECTION_STALE_S", 120)
# A client that has pinged once and then sends nothing for this long is dead: 4408.
# (Clients that never ping rely on the server's WebSocket-level pings.)
REALTIME_CLIENT_TIMEOUT_S = env_float("REALTIME_CLIENT_TIMEOUT_S", 90)
# Concurrent live connections per client address, over all processes; more get 4429.
REALTIME_MAX_CONNECTIONS_PER_ADDRESS = env_int("REALTIME_MAX_CONNECTIONS_PER_ADDRESS", 200)
# The retry hint given to a client refused for having too many connections: long enough
# that a reconnecting loop does not hammer the server, short enough that a viewer whose
# other tabs closed is back within half a minute.
REALTIME_CONNECTION_RETRY_S = env_int("REALTIME_CONNECTION_RETRY_S", 30)
# Polls per client address (`limits` notation), over all server processes. An idle
# long-polling tab (wait=25) makes 2 or 3 a minute, a busy one (answered at once on every
# change) or a tab polling without `wait` up to 60; one office behind one NAT address may
# hold many of them (the connection cap lets 200 WebSocket or SSE clients share an
# address). 1200 (20 a second) serves 200 idle long-pollers with room to spare, or twenty
# busy ones, and holds a flood from one address to a fifth of what one server process
# answers (about a hundred polls a second, docs/benchmarks.md). The old 300 refused five
# people behind one NAT polling once a second.
REALTIME_POLL_RATE = env_rate("REALTIME_POLL_RATE", "1200/minute")
# Longest query string of an SSE request, and longest `Last-Event-ID`: both grow with the
# contexts of a stream (fifty encode to under 4 KiB), so raise this with
# REALTIME_MAX_SUBSCRIPTIONS; longer ones are refused (400) or not ours (`cursor_invalid`).
REALTIME_SSE_MAX_QUERY_BYTES = env_int("REALTIME_SSE_MAX_QUERY_BYTES", 8 * 1024)
# A client that does not read is disconnected once this many bytes wait for it (the
# server's buffer plus its outbox): WebSocket with 4413 `slow_client`, SSE by ending the
# stream; it resumes from its cursors. 1 MiB is minutes of a busy context's frames, and
# bounds what 5,000 stalled clients could hold at 5 GB.
REALTIME_MAX_PENDING_BYTES = env_int("REALTIME_MAX_PENDING_BYTES", 1 << 20)
# The kernel's send buffer of every accepted socket (it doubles the value), instead of
# autotuning up to 4 MB: with REALTIME_MAX_PENDING_BYTES it bounds what a client that
# stopped reading costs. 256 KiB keeps 512 KB in flight, 40 Mbit/s at 100 ms of round
# trip: far more than a dashboard's frames need. 0 leaves it to the kernel.
REALTIME_SOCKET_SEND_BUFFER_BYTES = env_int("REALTIME_SOCKET_SEND_BUFFER_BYTES", 256 * 1024)
# At most this many bytes a socket's kernel holds that it has not sent yet
# (TCP_NOTSENT_LOWAT); 0: no bound. A client that stops reading closes its window, and
# without this bound the server kept writing into its socket until the send buffer above
# was full: 512 KB of writes each time a stalled client came back (bench/slow_readers.py).
# Bytes in flight are not "not sent": a fast client on a long link still has the whole
# send buffer.
REALTIME_SOCKET_NOTSENT_BYTES = env_int("REALTIME_SOCKET_NOTSENT_BYTES", 16384)
# A peer that stops acknowledging (gone without a FIN: out of coverage, asleep, a cut
# network) is dropped by the kernel after this long: TCP_USER_TIMEOUT and keepalive on
# every accepted socket. The SSE heartbeat (15 s) writes within one period, so a stream
# to a vanished peer ends within two heartbeat periods.
REALTIME_UNACKED_TIMEOUT_S = env_float("REALTIME_UNACKED_TIMEOUT_S", 15)
# Each server process compares the heads of the contexts its hub follows with the log
# this often (one query per process). A context seen behind twice in a row is read from
# the log, so a frame lost between Redis and the hub is repaired within two periods (1 s)
# even when nothing else is published to its context.
REALTIME_HEAD_CHECK_S = env_float("REALTIME_HEAD_CHECK_S", 0.5)
# Each server process keeps the frames it passed on lately, per context it follows, so a
# client back within that long resumes from memory instead of from the log (a database
# read and a re-encoding of every item): REALTIME_RECENT_FRAMES_S seconds of them, at most
# REALTIME_RECENT_FRAMES_BYTES per context. 0 turns it off.
REALTIME_RECENT_FRAMES_S = env_float("REALTIME_RECENT_FRAMES_S", 60)
REALTIME_RECENT_FRAMES_BYTES = env_int("REALTIME_RECENT_FRAMES_BYTES", 4 << 20)
# WebSocket-level pings: one every this many seconds, and a connection that does not answer
# one within as long is closed. 20 s keeps idle connections open through proxies that cut
# them at 60 s, and finds a dead peer within 40 s.
WEB_WS_PING_S = env_float("WEB_WS_PING_S", 20)
# Peers whose X-Forwarded-For is believed (comma-separated addresses or networks; `*` is
# everyone, empty is nobody): uvicorn then takes the client address every per-address limit
# keys on from the header (realtime/client_address.py). Only the proxy in front of the
# web server belongs here: anything that connects from a listed address can name any
# client address it likes. The default trusts a proxy on the same machine, and with it
# every other local process.
FORWARDED_ALLOW_IPS = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
# Server processes freeze what start-up loaded out of the garbage collector's sight and
# collect young objects less often (realtime/server.py says why); 0 keeps Python's way.
REALTIME_GC_TUNE = os.environ.get("REALTIME_GC_TUNE", "1") == "1"
REALTIME_GC_THRESHOLDS = tuple(
    int(n) for n in os.environ.get("REALTIME_GC_THRESHOLDS", "10000,20,50").split(",")
)

# --- Notifications ------------------------------------------------------------------------

# Notifications for significant changes (notifications.rules documents each rule); 0 turns
# the publisher's part off (announcements still work).
NOTIFY_ENABLED = env_bool("NOTIFY_ENABLED", True)
NOTIFY_RULES = {
    # A company's yearly total moving by this many percent: a toast, not every revision.
    "total_move_pct": env_float("NOTIFY_TOTAL_MOVE_PCT", 25),
    "total_critical_pct": env_float("NOTIFY_TOTAL_CRITICAL_PCT", 50),
    # Entering or leaving an industry's top N by latest total; 0 turns the rule off.
    "rank_top_n": env_int("NOTIFY_RANK_TOP_N", 5),
    "verification": env_bool("NOTIFY_VERIFICATION", True),
    "new_company": env_bool("NOTIFY_NEW_COMPANY", True),
    "quality_points": env_float("NOTIFY_QUALITY_POINTS", 20),
    # Levels whose notifications are retried on reconnect until acknowledged.
    "ack_levels": env_list("NOTIFY_ACK_LEVELS", "critical"),
}
# At most this many notifications per published batch (the most severe first): a bulk
# statement over 100,000 rows must not become 100,000 toasts.
NOTIFY_MAX_PER_BATCH = env_int("NOTIFY_MAX_PER_BATCH", 100)
# A notification is delivered, retried and offered to polls for this long.
NOTIFY_TTL_HOURS = env_float("NOTIFY_TTL_HOURS", 24)
# Expired notifications (and their receipts) are kept this long for the admin, then pruned.
NOTIFY_RETENTION_DAYS = env_float("NOTIFY_RETENTION_DAYS", 30)
# Staff broadcasts per user (`limits` notation), over every server process.
NOTIFY_BROADCAST_RATE = env_rate("NOTIFY_BROADCAST_RATE", "5/minute")
# Notifications one poll answer carries at most, and how recent one never delivered to a
# polling client must be to be offered (those requiring acknowledgement: until they expire).
NOTIFY_POLL_MAX = env_int("NOTIFY_POLL_MAX", 20)
NOTIFY_POLL_RECENT_S = env_float("NOTIFY_POLL_RECENT_S", 300)
# Unacknowledged notifications a reconnecting session gets again at most (the newest).
NOTIFY_REDELIVERY_MAX = env_int("NOTIFY_REDELIVERY_MAX", 20)
# Unexpired notifications requiring acknowledgement each server process keeps in memory.
NOTIFY_PENDING_MAX = env_int("NOTIFY_PENDING_MAX", 200)

# --- Operators: maintenance mode, monitoring, refresh metrics (adminpanel) ----------------

# Maintenance mode lives in one database row (adminpanel.MaintenanceState). Server
# processes read it through a per-process cache at most this old: every connect checks
# it, and a database read per connect would be one more round trip on the hot path. The
# switch updates every process's cache at once (a message on the system group), so this
# only bounds how long a process that missed that message (Redis away) lags behind.
MAINTENANCE_CACHE_S = env_float("MAINTENANCE_CACHE_S", 2)
# The retry hint (close reason `retry_after=N`, `Retry-After`) of a connection refused
# during maintenance when the switch sets none and `until` is unknown: a minute spreads
# the reconnections of thousands of clients and costs a waiting viewer little.
MAINTENANCE_RETRY_AFTER_S = env_int("MAINTENANCE_RETRY_AFTER_S", 60)
# A hint derived from `until` is capped, so clients look again at least this often (the
# operator may end maintenance early).
MAINTENANCE_RETRY_MAX_S = env_int("MAINTENANCE_RETRY_MAX_S", 300)
# Staff connections are admitted during maintenance: the operators switching it on keep
# the live monitoring page.
MAINTENANCE_ADMIT_STAFF = env_bool("MAINTENANCE_ADMIT_STAFF", True)
# A scheduled window is announced this long before it starts unless it says otherwise.
MAINTENANCE_ANNOUNCE_BEFORE_S = env_int("MAINTENANCE_ANNOUNCE_BEFORE_S", 3600)
# How often beat checks the windows: a window starts and ends at most this late.
MAINTENANCE_WINDOW_CHECK_S = env_float("MAINTENANCE_WINDOW_CHECK_S", 10)
# Every server process publishes its figures (connections, deliveries/s, errors) to Redis
# this often, and the leader among them sends the `monitor` snapshot to its subscribers:
# "every second or two" for the operators, a few Redis commands per process.
MONITOR_INTERVAL_S = env_float("MONITOR_INTERVAL_S", 2)
# The publisher adds its batches to the Redis histograms at most this often (a pipeline
# per batch would be a round trip on its latency path at 100 batches/s).
PUBLISHER_METRICS_FLUSH_S = env_float("PUBLISHER_METRICS_FLUSH_S", 1)
# refresh_metrics rows (one per figure per minute, ~30 a minute) are kept this long;
# engagement events, counted into refresh_metrics every minute, a week.
REFRESH_METRICS_RETENTION_DAYS = env_float("REFRESH_METRICS_RETENTION_DAYS", 30)
ENGAGEMENT_RETENTION_DAYS = env_float("ENGAGEMENT_RETENTION_DAYS", 7)
# Engagement reports per client (user, or browser session, or address): a browser sends
# one when a viewer pauses, refreshes or falls back, a few a minute at most.
ENGAGEMENT_RATE = env_rate("ENGAGEMENT_RATE", "30/minute")
# Events in one report: the client batches what happened while it was offline.
ENGAGEMENT_MAX_EVENTS = env_int("ENGAGEMENT_MAX_EVENTS", 20)

# --- Read replica (DATABASE_REPLICA_URL; changes/replica.py) -----------------------------

# How long a snapshot or catch-up waits for a replica whose replayed head is behind the
# client's cursor before the primary answers: streaming replay on a healthy standby is a
# few milliseconds behind, and the wait holds one of the process's database threads.
DATABASE_REPLICA_WAIT_MS = env_float("DATABASE_REPLICA_WAIT_MS", 20)
# The most a read waits for a connection to the replica (the pool's wait) before the
# primary answers; libpq's connect_timeout is this rounded, at least 2 s.
DATABASE_REPLICA_TIMEOUT_S = env_float("DATABASE_REPLICA_TIMEOUT_S", 1)
# After a replica failure every read of this process goes to the primary for this long,
# then one read tries the replica again: a dead replica costs one slow read a period.
DATABASE_REPLICA_RETRY_S = env_float("DATABASE_REPLICA_RETRY_S", 5)
