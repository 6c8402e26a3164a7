"""The publisher creates notifications for significant changes, in its own transaction,
by the configurable rules (raw SQL writes, the real publisher, PostgreSQL)."""

import json

import pytest
from django.db import IntegrityError, transaction

from changes.publisher import change_batch_publish
from notifications.models import UpdateNotification
from notifications.publishing import batch_notifications
from notifications.services import notifications_prune
from tests.helpers import sql

pytestmark = pytest.mark.django_db


def published(world) -> dict:
    """The world published, and the notifications it made forgotten."""
    change_batch_publish()
    UpdateNotification.objects.all().delete()
    return world


def notifications(**filters) -> list[UpdateNotification]:
    return list(UpdateNotification.objects.filter(**filters).order_by("created_at", "seq"))


def set_total(company, year: int, scope1) -> None:
    sql(
        "UPDATE emission_records SET scope1_tonnes = %s WHERE company_id = %s AND year = %s",
        [scope1, company, year],
    )


def test_a_total_moving_past_the_critical_threshold(world):
    published(world)
    set_total(world["acme"], 2024, 400)  # 222 -> 422 t: +90 %
    result = change_batch_publish()
    [note] = notifications(notification_type="total_move")
    [(change_id, seq, processed_at)] = sql(
        "SELECT id, seq, processed_at FROM data_changes WHERE entity = 'emission_record'"
        " AND processed_at IS NOT NULL ORDER BY seq DESC LIMIT 1"
    )
    assert note.change_id == change_id and note.seq == seq
    # Made in the publisher's transaction, on its clock.
    assert note.created_at == processed_at
    assert note.level == "critical" and note.requires_ack is True
    assert note.context == f"company:{world['acme']}" and note.audience == "public"
    assert note.title == "Acme Steel: 2024 emissions up 90.1%"
    assert note.body == "Total emissions for 2024 moved from 222 t CO2e to 422 t CO2e."
    assert note.payload["year"] == 2024 and note.payload["change_pct"] == 90.1
    assert note.payload["previous_total_tonnes"] == 222 and note.payload["total_tonnes"] == 422
    assert note.delivery_attempts == 0 and note.delivered_at is None
    assert note.expires_at > note.created_at and note.target_sessions == []
    # What the publisher hands on for sending is the same notification, encoded.
    [sent] = batch_notifications(result)
    frame = json.loads(sent["frame"])
    assert frame["id"] == str(note.id) and frame["type"] == "notification"
    assert sent["audience"] == "public" and sent["context"] == note.context


def test_a_move_between_the_thresholds_is_a_warning_without_ack(world):
    published(world)
    set_total(world["acme"], 2024, 290)  # 222 -> 312 t: +40.5 %
    change_batch_publish()
    [note] = notifications(notification_type="total_move")
    assert note.level == "warning" and note.requires_ack is False
    assert note.title == "Acme Steel: 2024 emissions up 40.5%"


def test_a_small_move_notifies_nobody(world):
    published(world)
    set_total(world["acme"], 2024, 210)  # +4.5 %
    assert batch_notifications(change_batch_publish()) == []
    assert notifications() == []


def test_notifications_about_hidden_companies_and_rejected_records_are_for_staff(world):
    published(world)
    sql("UPDATE emission_records SET scope1_tonnes = 2000 WHERE company_id = %s", [world["hidden"]])
    sql(
        "UPDATE emission_records SET verification_status = 'rejected'"
        " WHERE company_id = %s AND year = 2023",
        [world["acme"]],
    )
    change_batch_publish()
    [hidden] = notifications(notification_type="total_move")
    assert hidden.context == f"company:{world['hidden']}" and hidden.audience == "staff"
    [rejected] = notifications(notification_type="verification_change")
    assert rejected.audience == "staff" and rejected.level == "critical"
    assert rejected.title == "Acme Steel: 2023 emissions rejected"

    # A rejected record stays staff news when it moves again.
    UpdateNotification.objects.all().delete()
    sql(
        "UPDATE emission_records SET scope1_tonnes = 900 WHERE company_id = %s AND year = 2023",
        [world["acme"]],
    )
    change_batch_publish()
    assert [n.audience for n in notifications()] == ["staff"]


def test_verification_changes_of_companies_and_records(world):
    published(world)
    sql("UPDATE companies SET verification_status = 'verified' WHERE id = %s", [world["beta"]])
    sql(
        "UPDATE emission_records SET verification_status = 'pending'"
        " WHERE company_id = %s AND year = 2024",
        [world["acme"]],
    )
    change_batch_publish()
    by_company = {n.payload["company_id"]: n for n in notifications()}
    beta = by_company[str(world["beta"])]
    assert (beta.notification_type, beta.level, beta.audience) == (
        "verification_change",
        "info",
        "public",
    )
    assert beta.title == "Beta Soft is now verified"
    assert beta.body == "The company's verification status is now verified (was pending)."
    acme = by_company[str(world["acme"])]
    assert acme.level == "warning" and acme.context == f"company:{world['acme']}"


def test_new_companies_notify_their_industry(world):
    published(world)
    sql(
        "INSERT INTO companies (name, country, industry_id, is_public) VALUES"
        " ('Fresh Steel', 'PL', %s, true), ('Secret Steel', 'PL', %s, false)",
        [world["steel"], world["steel"]],
    )
    change_batch_publish()
    new = {n.payload["name"]: n for n in notifications(notification_type="new_company")}
    assert set(new) == {"Fresh Steel", "Secret Steel"}
    assert new["Fresh Steel"].context == "industry:steel"
    assert new["Fresh Steel"].audience == "public"
    assert new["Fresh Steel"].title == "New company in Steel: Fresh Steel"
    assert new["Secret Steel"].audience == "staff"


def test_data_quality_moves(world):
    published(world)
    sql("UPDATE companies SET data_quality_score = 25 WHERE id = %s", [world["acme"]])
    sql("UPDATE companies SET data_quality_score = 10 WHERE id = %s", [world["beta"]])
    change_batch_publish()
    [note] = notifications(notification_type="data_quality")
    assert note.payload["company_id"] == str(world["acme"])
    assert note.level == "info" and note.title == "Acme Steel: data quality up 25 points"


def test_entering_and_leaving_an_industrys_top_n(world, settings):
    settings.NOTIFY_RULES = {**settings.NOTIFY_RULES, "rank_top_n": 1}
    published(world)
    [(big,)] = sql(
        "INSERT INTO companies (name, country, industry_id) VALUES ('Big Steel', 'IT', %s)"
        " RETURNING id",
        [world["steel"]],
    )
    change_batch_publish()
    UpdateNotification.objects.all().delete()
    # The hidden company's 999 t does not count: the ranking is the public one.
    sql(
        "INSERT INTO emission_records (company_id, year, scope1_tonnes) VALUES (%s, 2024, 500)",
        [big],
    )
    change_batch_publish()
    ranking = {n.payload["movement"]: n for n in notifications(notification_type="ranking_change")}
    assert set(ranking) == {"entered", "left"}
    entered, left = ranking["entered"], ranking["left"]
    assert entered.payload["company_id"] == str(big) and entered.payload["rank"] == 1
    assert entered.title == "Big Steel entered the top 1 in Steel"
    assert entered.context == "industry:steel" and entered.audience == "public"
    assert left.payload["company_id"] == str(world["acme"])
    assert left.title == "Acme Steel left the top 1 in Steel"
    # Both are caused by the new record.
    [(record_change,)] = sql(
        "SELECT id FROM data_changes WHERE entity = 'emission_record' AND change_type = 'insert'"
        " ORDER BY seq DESC LIMIT 1"
    )
    assert entered.change_id == left.change_id == record_change


def test_rules_are_settings(world, settings):
    published(world)
    settings.NOTIFY_RULES = {
        **settings.NOTIFY_RULES,
        "total_move_pct": 0,
        "verification": False,
        "rank_top_n": 0,
    }
    set_total(world["acme"], 2024, 900)
    sql("UPDATE companies SET verification_status = 'rejected' WHERE id = %s", [world["beta"]])
    assert batch_notifications(change_batch_publish()) == []

    settings.NOTIFY_RULES = {**settings.NOTIFY_RULES, "total_move_pct": 5, "ack_levels": []}
    set_total(world["acme"], 2024, 1000)  # 922 -> 1022 t: +10.8 %
    change_batch_publish()
    [note] = notifications()
    assert note.level == "warning" and note.requires_ack is False

    settings.NOTIFY_ENABLED = False
    set_total(world["acme"], 2024, 5000)
    assert batch_notifications(change_batch_publish()) == []


def test_a_bulk_batch_keeps_the_most_severe(world, settings):
    published(world)
    settings.NOTIFY_MAX_PER_BATCH = 1
    set_total(world["acme"], 2024, 290)  # warning
    set_total(world["beta"], 2024, 500)  # critical
    change_batch_publish()
    [note] = notifications()
    assert note.level == "critical" and note.payload["company_id"] == str(world["beta"])


@pytest.mark.parametrize(
    "column, value",
    [
        ("level", "fatal"),
        ("audience", "everyone"),
        ("notification_type", "gossip"),
        ("context", "company:not-a-uuid"),
        ("context", "system"),
        ("title", ""),
        ("change_id", None),
        ("delivery_attempts", -1),
    ],
)
def test_the_database_refuses_malformed_notifications(world, column, value):
    row = {
        "change_id": "5b0c6a62-0d3f-4a7e-9b61-2f1d8a2c1e55",
        "notification_type": "total_move",
        "level": "info",
        "title": "t",
        "context": "overview",
        "audience": "public",
        "delivery_attempts": 0,
    }
    row[column] = value
    columns = ", ".join(row)
    with pytest.raises(IntegrityError), transaction.atomic():
        sql(
            f"INSERT INTO update_notifications ({columns}, target_sessions, payload, body, seq,"
            " requires_ack, expires_at) VALUES"
            f" ({', '.join(['%s'] * len(row))}, '{{}}', '{{}}', '', 0, false,"
            " now() + interval '1 day')",
            list(row.values()),
        )


def test_the_database_refuses_bad_receipts(world):
    [(notification,)] = sql(
        "INSERT INTO update_notifications (notification_type, level, title, audience,"
        " target_sessions, payload, body, seq, requires_ack, expires_at) VALUES"
        " ('announcement', 'info', 't', 'public', '{}', '{}', '', 0, false,"
        " now() + interval '1 day') RETURNING id"
    )
    for key, attempts in (("user:1 OR 1=1", 0), ("nobody", 0), ("user:1", -1)):
        with pytest.raises(IntegrityError), transaction.atomic():
            sql(
                "INSERT INTO notification_receipts (notification_id, client_key, attempts)"
                " VALUES (%s, %s, %s)",
                [notification, key, attempts],
            )


def test_expired_notifications_are_pruned_with_their_receipts(world, settings):
    settings.NOTIFY_RETENTION_DAYS = 1
    rows = sql(
        "INSERT INTO update_notifications (notification_type, level, title, audience,"
        " target_sessions, payload, created_at, expires_at) VALUES"
        " ('announcement', 'info', 'old', 'public', '{}', '{}', now() - interval '3 days',"
        "  now() - interval '2 days'),"
        " ('announcement', 'info', 'recent', 'public', '{}', '{}', now() - interval '1 day',"
        "  now() - interval '1 hour'),"
        " ('announcement', 'info', 'live', 'public', '{}', '{}', now(), now() + interval '1 day')"
        " RETURNING id"
    )
    for (notification,) in rows:
        sql(
            "INSERT INTO notification_receipts (notification_id, client_key, attempts)"
            " VALUES (%s, 'user:1', 1)",
            [notification],
        )
    assert notifications_prune(batch=1) == 1
    assert sorted(n.title for n in UpdateNotification.objects.all()) == ["live", "recent"]
    assert sql("SELECT count(*) FROM notification_receipts") == [(2,)]
