"""One limiter factory (common/ratelimit.py), on the real Redis."""

import asyncio
import uuid

from limits import parse

from common.ratelimit import rate_limiter, rate_limiter_async, storage_uri


def test_redis_urls_as_the_limits_library_names_them():
    assert storage_uri("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert storage_uri("rediss://h:6380/1") == "rediss://h:6380/1"
    # The notifications' limiter used to pass unix:// through, which `limits` refuses.
    assert storage_uri("unix:///run/redis.sock?db=2") == "redis+unix:///run/redis.sock?db=2"
    assert storage_uri("redis://h/0", asynchronous=True) == "async+redis://h/0"
    assert storage_uri("unix:///s.sock", asynchronous=True) == "async+redis+unix:///s.sock"


def test_a_limiter_counts_on_redis_and_refuses_past_the_rate():
    limiter = rate_limiter(timeout_s=0.5)
    assert rate_limiter(timeout_s=0.5) is limiter
    rate, who = parse("2/minute"), uuid.uuid4().hex
    assert [limiter.hit(rate, "test", who) for _ in range(3)] == [True, True, False]
    assert limiter.get_window_stats(rate, "test", who).remaining == 0
    limiter.clear(rate, "test", who)


def test_async_limiters_belong_to_their_event_loop():
    async def hits() -> tuple:
        limiter = rate_limiter_async(timeout_s=0.5)
        assert rate_limiter_async(timeout_s=0.5) is limiter
        rate, who = parse("1/minute"), uuid.uuid4().hex
        outcome = (await limiter.hit(rate, "test", who), await limiter.hit(rate, "test", who))
        await limiter.clear(rate, "test", who)
        return limiter, outcome

    first, outcome = asyncio.run(hits())
    second, _ = asyncio.run(hits())
    assert outcome == (True, False)
    assert first is not second
