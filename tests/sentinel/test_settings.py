"""With REDIS_SENTINELS and REDIS_SENTINEL_MASTER set, every Redis user the settings build
goes through Sentinel and reaches the master: the channel layer, the cache, the Celery
broker, the rate limiters, the direct clients and the health check. And the settings'
own parsing: what they build from the environment, and clear errors for bad values."""

import json
import os
import subprocess
import sys

import pytest

from common.redis_connection import RedisTarget, SentinelMasterPool, sentinels_parse
from tests.live.conftest import REPO
from tests.sentinel.sentinel_cluster import MASTER_NAME

pytestmark = [pytest.mark.timeout(60)]


def run_in(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=40,
    )


def test_every_redis_user_reaches_the_master_through_sentinel(sentinel_cluster):
    result = run_in(sentinel_cluster.env, "-m", "tests.sentinel.settings_probe")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    master = sentinel_cluster.master.port

    assert report["redis_url"].startswith("redis+sentinel://")
    [host] = report["channel_layer_hosts"]
    assert host["master_name"] == MASTER_NAME
    assert sorted(port for _, port in host["sentinels"]) == sorted(
        s.port for s in sentinel_cluster.sentinels
    )
    assert report["celery_broker_url"].count("sentinel://") == 3
    assert report["celery_master_name"] == MASTER_NAME
    # Kombu's Sentinel transport, mended to survive a lost broker (config/celery_broker.py).
    assert report["celery"]["scheme"] == "config.celery_broker:SentinelTransport"
    assert report["celery"]["transport"] == "redis"

    users = ("cache", "celery", "rate_limit", "redis_client", "channel_layer")
    users += ("rate_limit_async", "redis_async_client")
    for user in users:
        assert report[user]["pool"] in ("SentinelConnectionPool", "SentinelMasterPool"), user
        assert report[user]["port"] == master, user
    assert report["cache"]["value"] == "through sentinel"
    assert report["channel_layer"]["received"] == {"type": "probe", "n": 1}
    assert report["rate_limit"]["allowed"] and report["rate_limit_async"]["allowed"]
    assert report["health"]["ok"], report["health"]
    # What they wrote is on the master itself: the cache key and the limiter's counters.
    client = sentinel_cluster.master.client()
    try:
        assert client.keys("*:cache:*probe")
        assert client.keys("*:limits*")
    finally:
        client.close()


def test_redis_url_and_sentinels_together_are_refused():
    env = {"REDIS_SENTINELS": "127.0.0.1:26379", "REDIS_SENTINEL_MASTER": "m"}
    result = run_in({**env, "REDIS_URL": "redis://127.0.0.1:6379/0"}, "manage.py", "check")
    assert result.returncode != 0
    assert "Set REDIS_URL or REDIS_SENTINELS, not both." in result.stderr


def test_sentinel_settings_as_each_user_takes_them():
    target = RedisTarget.of_sentinels(
        sentinels="10.0.0.1:26379, 10.0.0.2, [::1]:26380", master="main", password="p@ss;w"
    )
    assert target.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26379), ("::1", 26380))
    assert sentinels_parse("a:1,,b:2") == (("a", 1), ("b", 2))
    assert RedisTarget.parse(target.url) == target
    host = target.channel_layer_host()
    assert host["master_name"] == "main" and host["password"] == "p@ss;w"
    assert host["sentinel_kwargs"]["password"] == "p@ss;w"
    broker, options = target.celery_broker()
    assert broker.split(";") == [
        "sentinel://:p%40ss%3Bw@10.0.0.1:26379",
        "sentinel://:p%40ss%3Bw@10.0.0.2:26379",
        "sentinel://:p%40ss%3Bw@[::1]:26380",
    ]
    assert options["master_name"] == "main"
    cache = target.cache(key_prefix="x")
    assert cache["LOCATION"] == [target.url]
    pool = SentinelMasterPool.from_url(cache["LOCATION"][0])
    assert pool.service_name == "main"
    assert pool.connection_kwargs["password"] == "p@ss;w"


def test_direct_redis_url_is_unchanged():
    target = RedisTarget.parse("redis://127.0.0.1:6379/3")
    assert not target.via_sentinel
    assert target.channel_layer_host() == "redis://127.0.0.1:6379/3"
    assert target.celery_broker() == ("redis://127.0.0.1:6379/3", {})
    assert target.cache(key_prefix="x")["LOCATION"] == "redis://127.0.0.1:6379/3"
    assert "OPTIONS" not in target.cache(key_prefix="x")


@pytest.mark.parametrize(
    ("sentinels", "master", "error"),
    [
        ("", "main", "names no sentinel"),
        ("host:port", "main", "bad port"),
        ("host:70000", "main", "bad port"),
        (":26379", "main", "no host"),
        ("host:26379", "", "REDIS_SENTINEL_MASTER"),
    ],
)
def test_bad_sentinel_settings_say_what_is_wrong(sentinels, master, error):
    with pytest.raises(ValueError, match=error):
        RedisTarget.of_sentinels(sentinels=sentinels, master=master)
