"""The publisher: seqs, contexts, redaction, significance, aggregates, heads."""

import itertools
import json
from decimal import Decimal

import pytest

from changes.items import ChangeItem
from changes.publisher import change_batch_publish
from changes.selectors import aggregates_current, change_log_state
from changes.services import change_log_reset
from tests.helpers import change_rows, sql

pytestmark = pytest.mark.django_db


def frames_by_key(result) -> dict[tuple[str, str], list[ChangeItem]]:
    out: dict[tuple[str, str], list[ChangeItem]] = {}
    for frame in result.frames:
        out.setdefault((frame.context, frame.audience), []).extend(frame.message["changes"])
    return out


def test_publish_assigns_increasing_seqs_in_capture_order(world):
    result = change_batch_publish()
    rows = change_rows()
    seqs = [row["seq"] for row in rows]
    assert None not in seqs
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert result.changes == len(rows) == 7  # 3 companies + 4 records
    assert change_log_state().head_seq == result.seq_to
    assert sql("SELECT count(*) FROM data_changes WHERE processed_at IS NULL") == [(0,)]
    assert change_batch_publish().changes == 0


def test_contexts_follow_the_protocol(world):
    change_batch_publish()
    by_record = {(row["entity"], row["record_id"]): row for row in change_rows()}
    acme = by_record[("company", str(world["acme"]))]
    assert acme["contexts"] == [
        f"company:{world['acme']}",
        "industry:steel",
        "companies",
        "overview",
    ]
    for record in change_rows(entity="emission_record"):
        company, industry = record["routing"]["company_id"], record["routing"]["industry_id"]
        slug = "steel" if industry == str(world["steel"]) else "software"
        assert record["contexts"][:2] == [f"company:{company}", f"industry:{slug}"]
        assert "companies" not in record["contexts"]


def test_anonymous_audience_never_hears_of_a_hidden_company(world):
    result = change_batch_publish()
    frames = frames_by_key(result)
    hidden = str(world["hidden"])
    for (context, audience), items in frames.items():
        if audience == "public":
            assert hidden not in context
            assert all(hidden not in json.dumps(item, default=str) for item in items)
    staff_ids = {item["id"] for item in frames[("industry:steel", "staff")]}
    assert hidden in staff_ids
    # Public totals leave the hidden company's 999 t out; staff totals do not.
    public = aggregates_current(audience="public")["industry:steel:2024"]
    staff = aggregates_current(audience="staff")["industry:steel:2024"]
    assert public["total_tonnes"] == Decimal("222.000")
    assert staff["total_tonnes"] == Decimal("1221.000")


def test_visibility_transitions_arrive_as_delete_and_insert(world):
    change_batch_publish()
    sql("UPDATE companies SET is_public = false WHERE id = %s", [world["acme"]])
    sql("UPDATE companies SET is_public = true WHERE id = %s", [world["hidden"]])
    frames = frames_by_key(change_batch_publish())
    public_steel = {item["id"]: item for item in frames[("industry:steel", "public")]}
    assert public_steel[str(world["acme"])]["op"] == "delete"
    inserted = public_steel[str(world["hidden"])]
    assert inserted["op"] == "insert"
    assert inserted["fields"]["name"] == "Hidden Steel"
    assert inserted["fields"]["industry"] == "steel"
    staff_steel = {item["id"]: item for item in frames[("industry:steel", "staff")]}
    assert staff_steel[str(world["acme"])]["op"] == "update"
    public_totals = aggregates_current(audience="public")["industry:steel:2024"]
    assert public_totals["total_tonnes"] == Decimal("999.000")


def test_rejected_record_is_deleted_for_the_public(world):
    change_batch_publish()
    sql(
        "UPDATE emission_records SET verification_status = 'rejected'"
        " WHERE company_id = %s AND year = 2024",
        [world["acme"]],
    )
    result = change_batch_publish()
    frames = frames_by_key(result)
    [public_item] = [
        i
        for i in frames[(f"company:{world['acme']}", "public")]
        if i["entity"] == "emission_record"
    ]
    [staff_item] = [
        i for i in frames[(f"company:{world['acme']}", "staff")] if i["entity"] == "emission_record"
    ]
    assert public_item["op"] == "delete"
    assert staff_item["op"] == "update"
    assert staff_item["significance"] == "critical"
    assert staff_item["fields"]["verification_status"] == "rejected"
    assert staff_item["fields"]["company_id"] == str(world["acme"])


def test_item_shape(world):
    change_batch_publish()
    sql(
        "UPDATE emission_records SET scope1_tonnes = 210 WHERE year = 2024 AND company_id = %s",
        [world["acme"]],
    )
    result = change_batch_publish()
    frame = next(
        f for f in result.frames if f.context == "industry:steel" and f.audience == "public"
    )
    message = frame.message
    assert message["type"] == "batch"
    assert message["seq_from"] <= message["seq_to"]
    assert message["prev_seq"] > 0
    item = next(i for i in message["changes"] if i["entity"] == "emission_record")
    assert set(item) == {
        "seq",
        "context",
        "entity",
        "id",
        "op",
        "fields",
        "previous",
        "changed",
        "at",
        "significance",
    }
    assert item["fields"] == {
        "company_id": str(world["acme"]),
        "year": 2024,
        "scope1_tonnes": Decimal("210.000"),
        "total_tonnes": Decimal("232.000"),
    }
    assert item["previous"] == {
        "scope1_tonnes": Decimal("200.000"),
        "total_tonnes": Decimal("222.000"),
    }
    assert item["changed"] == ["scope1_tonnes", "total_tonnes"]
    assert item["at"].endswith("Z") and len(item["at"]) == 24
    assert item["significance"] == "minor"
    aggregate = next(i for i in message["changes"] if i["entity"] == "aggregate")
    assert aggregate["id"] == "industry:steel:2024"
    assert aggregate["fields"]["total_tonnes"] == Decimal("232.000")
    assert aggregate["previous"]["total_tonnes"] == Decimal("222.000")
    assert aggregate["seq"] > item["seq"]


def test_prev_seq_chains_batches_per_context_and_audience(world):
    first = change_batch_publish()
    sql("UPDATE emission_records SET scope1_tonnes = 1 WHERE company_id = %s", [world["beta"]])
    second = change_batch_publish()
    last = {}
    for frame in first.frames:
        last[(frame.context, frame.audience)] = frame.seq_to
    for frame in second.frames:
        assert frame.prev_seq == last.get((frame.context, frame.audience), 0)


def test_significance_rules(world, settings):
    change_batch_publish()
    sql(
        "UPDATE emission_records SET scope1_tonnes = scope1_tonnes * 1.05 WHERE company_id = %s",
        [world["beta"]],
    )
    sql(
        "UPDATE emission_records SET scope1_tonnes = scope1_tonnes * 1.3"
        " WHERE company_id = %s AND year = 2023",
        [world["acme"]],
    )
    sql(
        "UPDATE emission_records SET scope1_tonnes = scope1_tonnes * 3"
        " WHERE company_id = %s AND year = 2024",
        [world["acme"]],
    )
    settings.SIGNIFICANCE_RULES = {"top_rank": 1000}
    change_batch_publish()
    rows = {(r["routing"]["company_id"], r["routing"]["year"]): r for r in change_rows()[-3:]}
    assert rows[(str(world["beta"]), 2024)]["significance"] == "minor"
    assert rows[(str(world["acme"]), 2023)]["significance"] == "major"
    assert rows[(str(world["acme"]), 2024)]["significance"] == "critical"
    assert "overview" in rows[(str(world["acme"]), 2024)]["contexts"]
    assert "overview" not in rows[(str(world["beta"]), 2024)]["contexts"]


def test_large_batches_are_split_into_chained_frames(world, settings):
    settings.PUBLISHER_FRAME_MAX_ITEMS = 2
    sql("UPDATE emission_records SET scope2_tonnes = scope2_tonnes + 1")
    result = change_batch_publish()
    frames = [f for f in result.frames if f.context == "industry:steel" and f.audience == "staff"]
    assert len(frames) > 1
    for earlier, later in itertools.pairwise(frames):
        assert later.prev_seq == earlier.seq_to


def test_claim_limit_leaves_the_rest_for_the_next_run(world):
    result = change_batch_publish(limit=3)
    assert result.changes == 3 and result.has_more
    second = change_batch_publish(limit=100)
    assert second.changes == 4 and not second.has_more
    assert second.seq_from > result.seq_to


def test_running_totals_match_a_rebuild_after_many_changes(world):
    """The incremental totals equal totals computed from scratch from the tables."""
    change_batch_publish()
    sql("UPDATE emission_records SET scope1_tonnes = scope1_tonnes + 5 WHERE year = 2024")
    sql("UPDATE emission_records SET verification_status = 'rejected' WHERE scope1_tonnes > 900")
    sql("UPDATE companies SET is_public = true WHERE id = %s", [world["hidden"]])
    sql("UPDATE companies SET industry_id = %s WHERE id = %s", [world["software"], world["acme"]])
    sql(
        "INSERT INTO emission_records (company_id, year, scope1_tonnes) VALUES (%s, 2022, 3)",
        [world["beta"]],
    )
    sql("DELETE FROM emission_records WHERE company_id = %s AND year = 2023", [world["acme"]])
    sql("UPDATE emission_records SET verification_status = 'verified'")
    sql("UPDATE companies SET is_public = false WHERE id = %s", [world["beta"]])
    change_batch_publish()
    incremental = {a: aggregates_current(audience=a) for a in ("public", "staff")}
    change_log_reset(reason="test")
    rebuilt = {a: aggregates_current(audience=a) for a in ("public", "staff")}

    def nonzero(totals):
        return {
            key: value
            for key, value in totals.items()
            if any(v for k, v in value.items() if k not in ("scope", "year"))
        }

    assert nonzero(incremental["public"]) == nonzero(rebuilt["public"])
    assert nonzero(incremental["staff"]) == nonzero(rebuilt["staff"])
