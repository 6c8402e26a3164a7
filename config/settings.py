"""Settings for live carbon dashboards.

Every value that differs between machines comes from the environment, read here and
nowhere else. Production differs from development only by environment values.
"""

import os
from pathlib import Path

import dj_database_url
import limits
from django.core.exceptions import ImproperlyConfigured

from config import embedded

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    """Read a yes/no environment variable ("1", "true", "yes", "on" are yes)."""
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    """Read a comma-separated environment variable."""
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def env_rate(name: str, default: str) -> str:
    """Read a rate in `limits` notation ("300/minute", "5 per second"), checked at start-up
    so that a typo is a clear error here rather than a failure at the first request."""
    value = os.environ.get(name) or default
    try:
        limits.parse(value)
    except ValueError:
        raise ImproperlyConfigured(
            f"{name}={value!r} is not a rate such as '300/minute' or '5 per second'."
        ) from None
    return value


DEBUG = env_bool("DEBUG", False)

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG and os.environ.get("DJANGO_REQUIRE_SECRET_KEY") == "1":
        raise ImproperlyConfigured("SECRET_KEY must be set in production.")
    # A fixed development key keeps sessions valid across restarts of `make run`;
    # any deployment sets SECRET_KEY (docker-compose.yml does).
    SECRET_KEY = "dev-only-insecure-key-set-SECRET_KEY-in-production"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")
PORT = int(os.environ.get("PORT", "8000"))

INSTALLED_APPS = [
    # daphne first so `runserver` serves ASGI, WebSocket included.
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django.contrib.postgres",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "pgtrigger",
    "django_prometheus",
    "django_celery_beat",
    "emissions",
    "changes",
    "realtime",
    "notifications",
    "preferences",
    "adminpanel",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    # ETag on every GET response and 304 for a matching If-None-Match.
    "django.middleware.http.ConditionalGetMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # After authentication: signed-in users who are not staff get 403 under the admin.
    "adminpanel.middleware.StaffOnlyAdminMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

# Where config/urls.py mounts the Django admin (adminpanel.middleware guards it).
ADMIN_URL_PREFIX = "/admin/"

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "preferences.context_processors.refresh_settings_form",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------

DATABASE_URL = os.environ.get("DATABASE_URL") or embedded.running_database_url()
if not DATABASE_URL:
    raise ImproperlyConfigured(
        "DATABASE_URL is not set and no embedded PostgreSQL is running. Set DATABASE_URL, "
        "or run through `make` / `python -m config.embedded run -- <command>`."
    )

DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=0)}
# django-prometheus's backend, counting queries without a class per connection.
DATABASES["default"]["ENGINE"] = "config.database"
DATABASES["default"].setdefault("OPTIONS", {})
if env_bool("DB_POOL", True):
    # psycopg's pool: connections are reused across requests and across the threads
    # that database_sync_to_async runs in. max_size bounds what one process may hold,
    # so several daphne processes, workers and the publisher fit under PostgreSQL's
    # default max_connections of 100.
    DATABASES["default"]["OPTIONS"]["pool"] = {
        "min_size": int(os.environ.get("DB_POOL_MIN", "1")),
        "max_size": int(os.environ.get("DB_POOL_MAX", "10")),
        "timeout": float(os.environ.get("DB_POOL_TIMEOUT", "10")),
    }
DATABASES["default"]["TEST"] = {"NAME": os.environ.get("TEST_DATABASE_NAME", "test_carbon")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: channel layer, cache, Celery ---------------------------------------------

REDIS_URL = os.environ.get("REDIS_URL") or embedded.running_redis_url()
if not REDIS_URL:
    raise ImproperlyConfigured(
        "REDIS_URL is not set and no embedded Redis is running. Set REDIS_URL, "
        "or run through `make` / `python -m config.embedded run -- <command>`."
    )

# A short, per-deployment prefix keeps several checkouts (or CI and a developer) apart
# when they share one Redis.
REDIS_PREFIX = os.environ.get("REDIS_PREFIX", "carbon")

CHANNEL_LAYERS = {
    "default": {
        # The pub/sub layer lost nothing under the overload that made RedisChannelLayer
        # silently drop whole messages (DESIGN.md); gaps are repaired from the log anyway.
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL], "prefix": f"{REDIS_PREFIX}:layer"},
    }
}

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": f"{REDIS_PREFIX}:cache",
    }
}

# The broker is the deployment's Redis unless CELERY_BROKER_URL names another.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or REDIS_URL
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_TRANSPORT_OPTIONS = {"global_keyprefix": f"{REDIS_PREFIX}:celery:"}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = "UTC"
# A Celery worker not heard from for this long counts as missing (health, monitoring
# page): workers record themselves every 5 s, so 30 s is six missed records.
CELERY_WORKER_STALE_S = float(os.environ.get("CELERY_WORKER_STALE_S", "30"))
CELERY_BEAT_SCHEDULE = {
    # The safety net under run_publisher: publishes whatever it missed or while it is down.
    "publish-changes": {"task": "changes.tasks.publish_changes_task", "schedule": 1.0},
    "prune-change-log": {"task": "changes.tasks.change_log_prune_task", "schedule": 3600.0},
    "sweep-connections": {"task": "realtime.tasks.connections_sweep_task", "schedule": 60.0},
    "prune-notifications": {
        "task": "notifications.tasks.notifications_prune_task",
        "schedule": 3600.0,
    },
}

SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"

# --- Auth, i18n, static ----------------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# `collectstatic` target, for deployments that put a proxy or CDN in front.
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", BASE_DIR / ".data" / "staticfiles"))
# Static files are served by Django's ASGIStaticFilesHandler (config/asgi.py) straight
# from the source folders: no collectstatic step, no build step for the browser client,
# and, unlike WhiteNoise's sync-only middleware, no thread held by every async request
# (a long poll would otherwise pin one of the few executor threads for up to 25 s).

# --- REST API ---------------------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "common.errors.api_exception_handler",
    "DEFAULT_THROTTLE_CLASSES": [
        "rest_framework.throttling.AnonRateThrottle",
        "rest_framework.throttling.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": os.environ.get("API_THROTTLE_ANON", "600/min"),
        "user": os.environ.get("API_THROTTLE_USER", "3000/min"),
    },
    # Anonymous throttles key on REMOTE_ADDR: the address uvicorn took from X-Forwarded-For
    # of a proxy in FORWARDED_ALLOW_IPS, else the peer's. DRF's default (None) would read
    # X-Forwarded-For itself, from anybody, so that any client could name its own key.
    "NUM_PROXIES": 0,
    # Emission figures travel as JSON numbers, as in the change items of PROTOCOL.md.
    "COERCE_DECIMAL_TO_STRING": False,
}
if DEBUG:
    REST_FRAMEWORK["DEFAULT_RENDERER_CLASSES"].append(
        "rest_framework.renderers.BrowsableAPIRenderer"
    )

SPECTACULAR_SETTINGS = {
    "TITLE": "Live carbon dashboards API",
    "DESCRIPTION": "Company emissions, industry benchmarks and the live update protocol.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI and ReDoc from the sidecar package: no CDN at run time.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# A directory page of 50 rows fills a screen; clients ask for up to API_MAX_PAGE_SIZE.
API_PAGE_SIZE = int(os.environ.get("API_PAGE_SIZE", "50"))
# Largest page a client may ask for with `page_size`; bigger pages cost the database
# and the client more than a second request does.
API_MAX_PAGE_SIZE = int(os.environ.get("API_MAX_PAGE_SIZE", "500"))
# Most items `GET /api/overview/changes/` returns: a feed panel shows 20; more is a log
# reader's job (the polling endpoint).
RECENT_CHANGES_MAX = int(os.environ.get("RECENT_CHANGES_MAX", "50"))

# Size of the demo data set `make run` loads into an empty database.
DEMO_COMPANIES = int(os.environ.get("DEMO_COMPANIES", "100000"))

# --- Logging ----------------------------------------------------------------------------

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- Change publication -------------------------------------------------------------------

# Most changes one publisher transaction claims. A 100,000-row bulk update is published
# in a few batches of this size, each a few seconds of work at most, so the lock is
# never held for long and memory stays bounded.
PUBLISHER_CLAIM_LIMIT = int(os.environ.get("PUBLISHER_CLAIM_LIMIT", "20000"))
# Items per group message / WebSocket frame: a burst is delivered in full, split into
# frames a browser parses in a few milliseconds.
PUBLISHER_FRAME_MAX_ITEMS = int(os.environ.get("PUBLISHER_FRAME_MAX_ITEMS", "500"))
# How often the running publisher probes the partial index of unprocessed changes when
# idle. An empty index probe costs microseconds; 10 ms keeps the added latency small
# (5 ms on average) without NOTIFY's commit-time lock (docs/benchmarks.md).
PUBLISHER_POLL_INTERVAL = float(os.environ.get("PUBLISHER_POLL_INTERVAL", "0.01"))
# After waking, wait this long for more changes so that changes arriving together go
# out as one batch ("intelligent batching"). Under load batches grow by themselves
# (changes pile up while one is published), so this window stays short.
PUBLISHER_DEBOUNCE = float(os.environ.get("PUBLISHER_DEBOUNCE", "0.003"))
# Published changes are kept this long for catch-up; older cursors get a reset.
CHANGE_RETENTION_DAYS = float(os.environ.get("CHANGE_RETENTION_DAYS", "7"))
# Rows deleted per pruning statement: short transactions, no long locks on the log.
CHANGE_PRUNE_BATCH = int(os.environ.get("CHANGE_PRUNE_BATCH", "10000"))
# More missed changes than this in one catch-up gets `too_many_changes` (PROTOCOL.md).
CATCHUP_MAX_CHANGES = int(os.environ.get("CATCHUP_MAX_CHANGES", "10000"))
# Benchmarks of an industry are recomputed at most once per this many seconds after its
# emission records change: a burst of revisions costs one recompute, not hundreds.
BENCHMARK_DEBOUNCE_SECONDS = int(os.environ.get("BENCHMARK_DEBOUNCE_SECONDS", "10"))
# Significance rules (changes.significance documents each).
SIGNIFICANCE_RULES = {
    "total_major_pct": float(os.environ.get("SIGNIFICANCE_TOTAL_MAJOR_PCT", "10")),
    "total_critical_pct": float(os.environ.get("SIGNIFICANCE_TOTAL_CRITICAL_PCT", "50")),
    "quality_major_points": float(os.environ.get("SIGNIFICANCE_QUALITY_MAJOR_POINTS", "20")),
    "benchmark_major_pct": float(os.environ.get("SIGNIFICANCE_BENCHMARK_MAJOR_PCT", "5")),
    "top_rank": int(os.environ.get("SIGNIFICANCE_TOP_RANK", "10")),
}

# --- Live transports ----------------------------------------------------------------------

# Heartbeat when idle: under the 55 s at which proxies cut idle connections, with jitter.
REALTIME_HEARTBEAT_S = float(os.environ.get("REALTIME_HEARTBEAT_S", "25"))
# PROTOCOL.md: a heartbeat event at least every 15 s on SSE when idle. Proxies cut idle
# connections at about 60 s; 15 s also lets a browser notice a dead stream quickly.
REALTIME_SSE_HEARTBEAT_S = float(os.environ.get("REALTIME_SSE_HEARTBEAT_S", "15"))
# Server-wide floors under every refresh policy (preferences.selectors): no context of any
# client gets batches closer than min_interval_ms, nor sooner than debounce_ms after its
# changes; 0 means "as fast as published". max_batch is the items per frame.
REALTIME_DEFAULT_POLICY = {
    "min_interval_ms": int(os.environ.get("REALTIME_MIN_INTERVAL_MS", "0")),
    "debounce_ms": int(os.environ.get("REALTIME_DEBOUNCE_MS", "0")),
    "max_batch": PUBLISHER_FRAME_MAX_ITEMS,
    "heartbeat_ms": int(REALTIME_HEARTBEAT_S * 1000),
}
# A dashboard shows a handful of contexts; 50 leaves room without letting one connection
# join thousands of groups.
REALTIME_MAX_SUBSCRIPTIONS = int(os.environ.get("REALTIME_MAX_SUBSCRIPTIONS", "50"))
# Largest client message (PROTOCOL.md: 64 KiB): a WebSocket text frame (larger closes with
# 1009) or the JSON body of a live-protocol HTTP request (larger gets 413).
REALTIME_MAX_FRAME_BYTES = int(os.environ.get("REALTIME_MAX_FRAME_BYTES", str(64 * 1024)))
# Client messages per window per connection; a dashboard sends a few per minute.
REALTIME_MESSAGE_RATE = int(os.environ.get("REALTIME_MESSAGE_RATE", "30"))
REALTIME_MESSAGE_WINDOW_S = int(os.environ.get("REALTIME_MESSAGE_WINDOW_S", "10"))
# `rate_limited` errors before the connection is closed with 4429.
REALTIME_RATE_LIMIT_STRIKES = int(os.environ.get("REALTIME_RATE_LIMIT_STRIKES", "20"))
# How often each server process refreshes last_seen of its connections (one UPDATE for
# all of them) and checks its followed contexts against the published heads.
REALTIME_TOUCH_INTERVAL_S = float(os.environ.get("REALTIME_TOUCH_INTERVAL_S", "15"))
# A connection row nobody refreshed for this long belongs to a dead process: swept.
REALTIME_CONNECTION_STALE_S = float(os.environ.get("REALTIME_CONNECTION_STALE_S", "120"))
# A client that has pinged once and then sends nothing for this long is dead: 4408.
# (Clients that never ping rely on the server's WebSocket-level pings.)
REALTIME_CLIENT_TIMEOUT_S = float(os.environ.get("REALTIME_CLIENT_TIMEOUT_S", "90"))
# Concurrent live connections per client address, over all processes; more get 4429.
REALTIME_MAX_CONNECTIONS_PER_ADDRESS = int(
    os.environ.get("REALTIME_MAX_CONNECTIONS_PER_ADDRESS", "200")
)
# The retry hint given to a client refused for having too many connections: long enough
# that a reconnecting loop does not hammer the server, short enough that a viewer whose
# other tabs closed is back within half a minute.
REALTIME_CONNECTION_RETRY_S = int(os.environ.get("REALTIME_CONNECTION_RETRY_S", "30"))
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
REALTIME_SSE_MAX_QUERY_BYTES = int(os.environ.get("REALTIME_SSE_MAX_QUERY_BYTES", str(8 * 1024)))
# A client that does not read is disconnected once this many bytes wait for it (the
# server's buffer plus its outbox): WebSocket with 4413 `slow_client`, SSE by ending the
# stream; it resumes from its cursors. 1 MiB is minutes of a busy context's frames, and
# bounds what 5,000 stalled clients could hold at 5 GB.
REALTIME_MAX_PENDING_BYTES = int(os.environ.get("REALTIME_MAX_PENDING_BYTES", str(1 << 20)))
# The kernel's send buffer of every accepted socket (it doubles the value), instead of
# autotuning up to 4 MB: with REALTIME_MAX_PENDING_BYTES it bounds what a client that
# stopped reading costs. 256 KiB keeps 512 KB in flight, 40 Mbit/s at 100 ms of round
# trip: far more than a dashboard's frames need. 0 leaves it to the kernel.
REALTIME_SOCKET_SEND_BUFFER_BYTES = int(
    os.environ.get("REALTIME_SOCKET_SEND_BUFFER_BYTES", str(256 * 1024))
)
# At most this many bytes a socket's kernel holds that it has not sent yet
# (TCP_NOTSENT_LOWAT); 0: no bound. A client that stops reading closes its window, and
# without this bound the server kept writing into its socket until the send buffer above
# was full: 512 KB of writes each time a stalled client came back (bench/slow_readers.py).
# Bytes in flight are not "not sent": a fast client on a long link still has the whole
# send buffer.
REALTIME_SOCKET_NOTSENT_BYTES = int(os.environ.get("REALTIME_SOCKET_NOTSENT_BYTES", "16384"))
# A peer that stops acknowledging (gone without a FIN: out of coverage, asleep, a cut
# network) is dropped by the kernel after this long: TCP_USER_TIMEOUT and keepalive on
# every accepted socket. The SSE heartbeat (15 s) writes within one period, so a stream
# to a vanished peer ends within two heartbeat periods.
REALTIME_UNACKED_TIMEOUT_S = float(os.environ.get("REALTIME_UNACKED_TIMEOUT_S", "15"))
# Each server process compares the heads of the contexts its hub follows with the log
# this often (one query per process). A context seen behind twice in a row is read from
# the log, so a frame lost between Redis and the hub is repaired within two periods (1 s)
# even when nothing else is published to its context.
REALTIME_HEAD_CHECK_S = float(os.environ.get("REALTIME_HEAD_CHECK_S", "0.5"))
# Each server process keeps the frames it passed on lately, per context it follows, so a
# client back within that long resumes from memory instead of from the log (a database
# read and a re-encoding of every item): REALTIME_RECENT_FRAMES_S seconds of them, at most
# REALTIME_RECENT_FRAMES_BYTES per context. 0 turns it off.
REALTIME_RECENT_FRAMES_S = float(os.environ.get("REALTIME_RECENT_FRAMES_S", "60"))
REALTIME_RECENT_FRAMES_BYTES = int(os.environ.get("REALTIME_RECENT_FRAMES_BYTES", str(4 << 20)))
# WebSocket-level pings: one every this many seconds, and a connection that does not answer
# one within as long is closed. 20 s keeps idle connections open through proxies that cut
# them at 60 s, and finds a dead peer within 40 s.
WEB_WS_PING_S = float(os.environ.get("WEB_WS_PING_S", "20"))
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
    "total_move_pct": float(os.environ.get("NOTIFY_TOTAL_MOVE_PCT", "25")),
    "total_critical_pct": float(os.environ.get("NOTIFY_TOTAL_CRITICAL_PCT", "50")),
    # Entering or leaving an industry's top N by latest total; 0 turns the rule off.
    "rank_top_n": int(os.environ.get("NOTIFY_RANK_TOP_N", "5")),
    "verification": env_bool("NOTIFY_VERIFICATION", True),
    "new_company": env_bool("NOTIFY_NEW_COMPANY", True),
    "quality_points": float(os.environ.get("NOTIFY_QUALITY_POINTS", "20")),
    # Levels whose notifications are retried on reconnect until acknowledged.
    "ack_levels": env_list("NOTIFY_ACK_LEVELS", "critical"),
}
# At most this many notifications per published batch (the most severe first): a bulk
# statement over 100,000 rows must not become 100,000 toasts.
NOTIFY_MAX_PER_BATCH = int(os.environ.get("NOTIFY_MAX_PER_BATCH", "100"))
# A notification is delivered, retried and offered to polls for this long.
NOTIFY_TTL_HOURS = float(os.environ.get("NOTIFY_TTL_HOURS", "24"))
# Expired notifications (and their receipts) are kept this long for the admin, then pruned.
NOTIFY_RETENTION_DAYS = float(os.environ.get("NOTIFY_RETENTION_DAYS", "30"))
# Staff broadcasts per user (`limits` notation), over every server process.
NOTIFY_BROADCAST_RATE = env_rate("NOTIFY_BROADCAST_RATE", "5/minute")
# Notifications one poll answer carries at most, and how recent one never delivered to a
# polling client must be to be offered (those requiring acknowledgement: until they expire).
NOTIFY_POLL_MAX = int(os.environ.get("NOTIFY_POLL_MAX", "20"))
NOTIFY_POLL_RECENT_S = float(os.environ.get("NOTIFY_POLL_RECENT_S", "300"))
# Unacknowledged notifications a reconnecting session gets again at most (the newest).
NOTIFY_REDELIVERY_MAX = int(os.environ.get("NOTIFY_REDELIVERY_MAX", "20"))
# Unexpired notifications requiring acknowledgement each server process keeps in memory.
NOTIFY_PENDING_MAX = int(os.environ.get("NOTIFY_PENDING_MAX", "200"))
# --- Operators: maintenance mode, monitoring, refresh metrics (adminpanel) -----------------

# Maintenance mode lives in one database row (adminpanel.MaintenanceState). Server
# processes read it through a per-process cache at most this old: every connect checks
# it, and a database read per connect would be one more round trip on the hot path. The
# switch updates every process's cache at once (a message on the system group), so this
# only bounds how long a process that missed that message (Redis away) lags behind.
MAINTENANCE_CACHE_S = float(os.environ.get("MAINTENANCE_CACHE_S", "2"))
# The retry hint (close reason `retry_after=N`, `Retry-After`) of a connection refused
# during maintenance when the switch sets none and `until` is unknown: a minute spreads
# the reconnections of thousands of clients and costs a waiting viewer little.
MAINTENANCE_RETRY_AFTER_S = int(os.environ.get("MAINTENANCE_RETRY_AFTER_S", "60"))
# A hint derived from `until` is capped, so clients look again at least this often (the
# operator may end maintenance early).
MAINTENANCE_RETRY_MAX_S = int(os.environ.get("MAINTENANCE_RETRY_MAX_S", "300"))
# Staff connections are admitted during maintenance: the operators switching it on keep
# the live monitoring page.
MAINTENANCE_ADMIT_STAFF = env_bool("MAINTENANCE_ADMIT_STAFF", True)
# A scheduled window is announced this long before it starts unless it says otherwise.
MAINTENANCE_ANNOUNCE_BEFORE_S = int(os.environ.get("MAINTENANCE_ANNOUNCE_BEFORE_S", "3600"))
# How often beat checks the windows: a window starts and ends at most this late.
MAINTENANCE_WINDOW_CHECK_S = float(os.environ.get("MAINTENANCE_WINDOW_CHECK_S", "10"))
# Every server process publishes its figures (connections, deliveries/s, errors) to Redis
# this often, and the leader among them sends the `monitor` snapshot to its subscribers:
# "every second or two" for the operators, a few Redis commands per process.
MONITOR_INTERVAL_S = float(os.environ.get("MONITOR_INTERVAL_S", "2"))
# The publisher adds its batches to the Redis histograms at most this often (a pipeline
# per batch would be a round trip on its latency path at 100 batches/s).
PUBLISHER_METRICS_FLUSH_S = float(os.environ.get("PUBLISHER_METRICS_FLUSH_S", "1"))
# refresh_metrics rows (one per figure per minute, ~30 a minute) are kept this long;
# engagement events, counted into refresh_metrics every minute, a week.
REFRESH_METRICS_RETENTION_DAYS = float(os.environ.get("REFRESH_METRICS_RETENTION_DAYS", "30"))
ENGAGEMENT_RETENTION_DAYS = float(os.environ.get("ENGAGEMENT_RETENTION_DAYS", "7"))
# Engagement reports per client (user, or browser session, or address): a browser sends
# one when a viewer pauses, refreshes or falls back, a few a minute at most.
ENGAGEMENT_RATE = env_rate("ENGAGEMENT_RATE", "30/minute")
# Events in one report: the client batches what happened while it was offline.
ENGAGEMENT_MAX_EVENTS = int(os.environ.get("ENGAGEMENT_MAX_EVENTS", "20"))

# One schema name for the transport choices, wherever a serializer uses them (the
# engagement report has two such fields).
SPECTACULAR_SETTINGS.setdefault("ENUM_NAME_OVERRIDES", {})["TransportEnum"] = (
    "realtime.models.Transport"
)

CELERY_BEAT_SCHEDULE.update(
    {
        "maintenance-windows": {
            "task": "adminpanel.tasks.maintenance_windows_apply_task",
            "schedule": MAINTENANCE_WINDOW_CHECK_S,
        },
        "refresh-metrics-snapshot": {
            "task": "adminpanel.tasks.refresh_metrics_snapshot_task",
            "schedule": 60.0,
        },
        "refresh-metrics-prune": {
            "task": "adminpanel.tasks.refresh_metrics_prune_task",
            "schedule": 3600.0,
        },
    }
)
