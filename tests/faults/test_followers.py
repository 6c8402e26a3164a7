"""The fault tests' own check (tests/faults/database.py) finds what it must: a lost
change, a duplicate, a gap, disorder and a change the audience may not see, and accepts
coalescing. No processes: batches are fed to a follower by hand."""

import pytest

from tests.faults.database import exactly_once_problems
from tests.faults.followers import Follower

CONTEXT = "company:c1"
# (seq, entity, record id) published to CONTEXT, as routed_changes reads them.
LOG = [(11, "company", "c1"), (12, "emission_record", "r1"), (13, "emission_record", "r1")]


def routes(context, after, through):
    return [row for row in LOG if context == CONTEXT and after < row[0] <= through]


def follower_with(*batches) -> Follower:
    follower = Follower("f", [CONTEXT], start=10, deadline=0)
    for prev_seq, seq_to, items in batches:
        follower.take(
            {
                "type": "batch",
                "context": CONTEXT,
                "prev_seq": prev_seq,
                "seq_to": seq_to,
                "changes": [{"seq": s, "entity": e, "id": i} for s, e, i in items],
            }
        )
    return follower


def test_every_change_once_in_order_passes():
    problems, counts = exactly_once_problems(routes, follower_with((10, 13, LOG)))
    assert problems == []
    assert counts == {"received": 3, "logged": 3, "coalesced": 0}


def test_a_change_coalesced_into_a_later_one_of_the_same_record_passes():
    follower = follower_with((10, 11, LOG[:1]), (11, 13, LOG[2:]))
    problems, counts = exactly_once_problems(routes, follower)
    assert problems == []
    assert counts["coalesced"] == 1


@pytest.mark.parametrize(
    ("batches", "found"),
    [
        # 12 and 13 never arrive, and the second batch follows 12 (a gap).
        ([(10, 11, LOG[:1]), (12, 13, [])], ["gap", "lost seq 12", "lost seq 13"]),
        # 13 arrives in a batch that does not cover 12's record: 12 is lost, not merged.
        ([(10, 11, LOG[:1]), (11, 13, [(13, "company", "c1")])], ["lost seq 12"]),
        ([(10, 12, LOG[:2]), (12, 13, LOG[1:])], ["outside", "twice"]),
        ([(10, 13, [LOG[1], LOG[0], LOG[2]])], ["out of order"]),
        ([(10, 13, [*LOG, (14, "company", "hidden")])], ["outside", "not in the log"]),
    ],
)
def test_losses_duplicates_gaps_and_disorder_are_found(batches, found):
    problems, _ = exactly_once_problems(routes, follower_with(*batches))
    for words in found:
        assert any(words in problem for problem in problems), (words, problems)
