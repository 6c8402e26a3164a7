"""The hub's recent frames of one context: one unbroken chain, bounded by bytes and age."""

import time

import pytest

from realtime.follower import ContextFollower, OutFrame, RecentFrames, batch_frame


def frame(prev: int, to: int, *, reset: bool = False, routed: int | None = None) -> OutFrame:
    items = [
        {"seq": seq, "entity": "company", "id": seq, "fields": {}}
        for seq in range(prev + 1, to + 1)
    ]
    text = batch_frame("overview", prev, to, items)
    return OutFrame(prev, prev + 1, to, text, reset=reset, routed=routed)


@pytest.fixture
def chain(settings):
    settings.REALTIME_RECENT_FRAMES_S = 60
    settings.REALTIME_RECENT_FRAMES_BYTES = 1 << 20
    return RecentFrames()


def test_a_chain_answers_from_any_cursor_it_reaches(chain):
    for prev, to in ((10, 12), (12, 15), (15, 16)):
        chain.add(frame(prev, to), now=0)
    assert chain.after(9, most=100) is None  # older than the chain
    assert [f.seq_to for f in chain.after(10, most=100)] == [12, 15, 16]
    assert [f.seq_to for f in chain.after(13, most=100)] == [15, 16]
    assert chain.after(16, most=100) == []
    assert chain.after(10, most=5) is None  # possibly more than `most` changes


@pytest.mark.parametrize(
    "breaking",
    [frame(20, 21), frame(15, 16, reset=True), frame(2, 3)],
    ids=["gap", "reset", "log begun anew"],
)
def test_anything_that_breaks_the_chain_starts_it_again(chain, breaking):
    chain.add(frame(10, 12), now=0)
    chain.add(frame(12, 15), now=0)
    chain.add(breaking, now=0)
    kept = [] if breaking.reset else [breaking]
    assert [f for _, f in chain.frames] == kept
    assert chain.size == sum(len(f.text) for f in kept)
    assert chain.after(10, most=100) is None


def test_a_chain_is_bounded_by_bytes_and_age(chain, settings):
    first, second, third = frame(1, 2), frame(2, 3), frame(3, 4)
    settings.REALTIME_RECENT_FRAMES_BYTES = len(second.text) + len(third.text)
    for f in (first, second, third):
        chain.add(f, now=0)
    assert [f for _, f in chain.frames] == [second, third]
    settings.REALTIME_RECENT_FRAMES_S = 10
    chain.add(frame(4, 5), now=30)
    chain.trim(now=30)
    assert [f.seq_to for _, f in chain.frames] == [5]
    chain.trim(now=41)
    assert not chain.frames and chain.size == 0


def test_most_counts_the_changes_routed_to_the_context_not_the_seqs_between(chain):
    # A quiet context: few of the log's seqs are its changes.
    chain.add(frame(1000, 5000, routed=2), now=0)
    chain.add(frame(5000, 9000, routed=3), now=0)
    assert [f.seq_to for f in chain.after(1000, most=5)] == [5000, 9000]
    assert chain.after(1000, most=4) is None
    # A frame that does not say (an older publisher's): its seq range bounds it.
    chain.add(frame(9000, 9010), now=0)
    assert chain.after(5000, most=13) is not None
    assert chain.after(5000, most=12) is None


def test_the_periodic_trim_visits_only_contexts_holding_frames(settings):
    settings.REALTIME_RECENT_FRAMES_S = 60
    settings.REALTIME_RECENT_FRAMES_BYTES = 1 << 20
    follower = ContextFollower(audience="public")
    for n in range(1000):
        follower.follow(f"company:{n}", 0)
    follower.follow("overview", 10)
    follower._passed_on("overview", [frame(10, 12)])
    assert follower.recent_held == {"overview"}
    assert follower.recent_bytes() == len(frame(10, 12).text)
    follower.recent_trim()  # younger than the window: kept
    assert follower.recent_held == {"overview"}
    settings.REALTIME_RECENT_FRAMES_S = 0.001
    time.sleep(0.01)
    follower.recent_trim()
    assert follower.recent_held == set() and follower.recent_bytes() == 0
    follower.unfollow("overview")
    assert "overview" not in follower.recent
