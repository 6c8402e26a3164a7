"""Settings for live carbon dashboards.

Every value that differs between machines comes from the environment, read in this
package and nowhere else (config/settings/env.py reads it). Production differs from
development only by environment values. This module holds Django's own settings and the
services it talks to (PostgreSQL, Redis, Celery, the REST API); the product's tuning
values are config/settings/tuning.py's, imported here, where Django reads them.
"""

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from common.redis_connection import RedisTarget
from config import embedded
from config.celery_broker import broker_transport
from config.settings.env import env_bool, env_float, env_int, env_list
from config.settings.tuning import *  # noqa: F403
from config.settings.tuning import MAINTENANCE_WINDOW_CHECK_S

BASE_DIR = Path(__file__).resolve().parent.parent.parent


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
PORT = env_int("PORT", 8000)

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
        "min_size": env_int("DB_POOL_MIN", 1),
        "max_size": env_int("DB_POOL_MAX", 10),
        "timeout": env_float("DB_POOL_TIMEOUT", 10),
    }
DATABASES["default"]["TEST"] = {"NAME": os.environ.get("TEST_DATABASE_NAME", "test_carbon")}

# A streaming replica (optional): the read-only snapshots, the directory, catch-up reads
# and the REST lists read it when it is fresh enough (changes/replica.py); everything
# else stays on the primary (config/database_router.py). Unset: everything on "default".
DATABASE_REPLICA_URL = os.environ.get("DATABASE_REPLICA_URL", "")
if DATABASE_REPLICA_URL:
    replica = dj_database_url.parse(DATABASE_REPLICA_URL, conn_max_age=0)
    replica["ENGINE"] = "config.database"
    # A dead replica must cost a request little: libpq's connect_timeout counts whole
    # seconds, at least 2; the pool's wait (psycopg retries in the background while
    # getconn waits) is DATABASE_REPLICA_TIMEOUT_S, after which the primary answers.
    replica["OPTIONS"] = {
        **replica.get("OPTIONS", {}),
        "connect_timeout": max(2, round(DATABASE_REPLICA_TIMEOUT_S)),  # noqa: F405
    }
    if "pool" in DATABASES["default"]["OPTIONS"]:
        replica["OPTIONS"]["pool"] = {
            **DATABASES["default"]["OPTIONS"]["pool"],
            "timeout": DATABASE_REPLICA_TIMEOUT_S,  # noqa: F405
        }
    # The test suite reads its own database through this alias (no second test database).
    replica["TEST"] = {"MIRROR": "default"}
    DATABASES["replica"] = replica
    DATABASE_ROUTERS = ["config.database_router.PrimaryRouter"]

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: channel layer, cache, Celery ---------------------------------------------

# Redis through Sentinel: REDIS_SENTINELS ("host:port,host:port") and the name of the
# master they monitor; REDIS_SENTINEL_PASSWORD, if any, is the sentinels' and the
# servers' password. Every Redis user then asks the sentinels for the current master
# (common/redis_connection.py), and REDIS_URL becomes the redis+sentinel:// URL it reads.
REDIS_SENTINELS = os.environ.get("REDIS_SENTINELS", "")
REDIS_SENTINEL_MASTER = os.environ.get("REDIS_SENTINEL_MASTER", "")
if REDIS_SENTINELS or REDIS_SENTINEL_MASTER:
    if os.environ.get("REDIS_URL"):
        raise ImproperlyConfigured("Set REDIS_URL or REDIS_SENTINELS, not both.")
    try:
        REDIS_TARGET = RedisTarget.of_sentinels(
            sentinels=REDIS_SENTINELS,
            master=REDIS_SENTINEL_MASTER,
            password=os.environ.get("REDIS_SENTINEL_PASSWORD") or None,
        )
    except ValueError as exc:
        raise ImproperlyConfigured(str(exc)) from exc
    REDIS_URL = REDIS_TARGET.url
else:
    REDIS_URL = os.environ.get("REDIS_URL") or embedded.running_redis_url()
    if not REDIS_URL:
        raise ImproperlyConfigured(
            "REDIS_URL is not set and no embedded Redis is running. Set REDIS_URL, "
            "or run through `make` / `python -m config.embedded run -- <command>`."
        )
    REDIS_TARGET = RedisTarget(url=REDIS_URL)

# A short, per-deployment prefix keeps several checkouts (or CI and a developer) apart
# when they share one Redis.
REDIS_PREFIX = os.environ.get("REDIS_PREFIX", "carbon")

CHANNEL_LAYERS = {
    "default": {
        # The pub/sub layer lost nothing under the overload that made RedisChannelLayer
        # silently drop whole messages (DESIGN.md); gaps are repaired from the log anyway.
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {
            "hosts": [REDIS_TARGET.channel_layer_host()],
            "prefix": f"{REDIS_PREFIX}:layer",
        },
    }
}

CACHES = {"default": REDIS_TARGET.cache(key_prefix=f"{REDIS_PREFIX}:cache")}

# The broker is the deployment's Redis unless CELERY_BROKER_URL names another.
CELERY_BROKER_URL, _broker_options = REDIS_TARGET.celery_broker()
if os.environ.get("CELERY_BROKER_URL"):
    CELERY_BROKER_URL, _broker_options = os.environ["CELERY_BROKER_URL"], {}
# Kombu's Redis transports, mended so that a worker survives losing its broker
# (config/celery_broker.py).
CELERY_BROKER_TRANSPORT = broker_transport(CELERY_BROKER_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "global_keyprefix": f"{REDIS_PREFIX}:celery:",
    **_broker_options,
}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = "UTC"
# A Celery worker not heard from for this long counts as missing (health, monitoring
# page): workers record themselves every 5 s, so 30 s is six missed records.
CELERY_WORKER_STALE_S = env_float("CELERY_WORKER_STALE_S", 30)
CELERY_BEAT_SCHEDULE = {
    # The safety net under run_publisher: publishes whatever it missed or while it is down.
    "publish-changes": {"task": "changes.tasks.publish_changes_task", "schedule": 1.0},
    "prune-change-log": {"task": "changes.tasks.change_log_prune_task", "schedule": 3600.0},
    "sweep-connections": {"task": "realtime.tasks.connections_sweep_task", "schedule": 60.0},
    "prune-notifications": {
        "task": "notifications.tasks.notifications_prune_task",
        "schedule": 3600.0,
    },
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

# A CDN in front of /static/ may be named here (`https://cdn.example.com/static/`): pages
# then load their scripts and styles from it, and it fetches them from /static/ here.
STATIC_URL = os.environ.get("STATIC_URL", "static/")
STATICFILES_DIRS = [BASE_DIR / "static"]
# What `collectstatic` writes (make run, make test's session, the Dockerfile) and, with
# DEBUG off, what the web server serves: hashed names and their .gz/.br variants.
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", BASE_DIR / ".data" / "staticfiles"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "config.static_files.HashedStaticFilesStorage"},
}
# Files under their unhashed names (the originals, which collectstatic keeps for anything
# that links them directly) change with a release: a CDN and browsers keep them a minute.
# Hashed names are kept a year, immutable (config/static_files.py).
STATIC_UNHASHED_MAX_AGE_S = env_int("STATIC_UNHASHED_MAX_AGE_S", 60)
# Static files are answered before Django (config/asgi.py, config/static_files.py) by
# ServeStatic's ASGI server, not WhiteNoise, whose middleware is sync-only and under ASGI
# would pin one of the few executor threads per request (a long poll for up to 25 s).

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
    # One schema name for the transport choices, wherever a serializer uses them (the
    # engagement report has two such fields).
    "ENUM_NAME_OVERRIDES": {"TransportEnum": "realtime.models.Transport"},
}

# A directory page of 50 rows fills a screen; clients ask for up to API_MAX_PAGE_SIZE.
API_PAGE_SIZE = env_int("API_PAGE_SIZE", 50)
# Largest page a client may ask for with `page_size`; bigger pages cost the database
# and the client more than a second request does.
API_MAX_PAGE_SIZE = env_int("API_MAX_PAGE_SIZE", 500)
# Most items `GET /api/overview/changes/` returns: a feed panel shows 20; more is a log
# reader's job (the polling endpoint).
RECENT_CHANGES_MAX = env_int("RECENT_CHANGES_MAX", 50)

# Size of the demo data set `make run` loads into an empty database.
DEMO_COMPANIES = env_int("DEMO_COMPANIES", 100000)

# --- Logging ----------------------------------------------------------------------------

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
