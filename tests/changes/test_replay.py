"""The replay test: a snapshot plus the changes published after its seq equals a fresh
snapshot, under concurrent writes (Zulip's verify_action, for this product)."""

import random
import threading
import time

import psycopg
import pytest
from django.contrib.auth import get_user_model
from django.db import connections
from rest_framework.test import APIClient

from changes.publisher import change_batch_publish
from changes.selectors import changes_since
from emissions.models import COMPANY_PROFILE_FIELDS, EMISSION_RECORD_FIELDS
from tests.changes.test_concurrency import conninfo
from tests.helpers import sql

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]


def num(value):
    return (
        round(float(value), 3)
        if isinstance(value, (int, float)) or hasattr(value, "as_tuple")
        else value
    )


def company_view(body: dict) -> dict:
    return {
        # Everything an editor sets on a company, which its changes all carry.
        "profile": {key: num(body[key]) for key in COMPANY_PROFILE_FIELDS},
        "records": {
            # Every figure the API shows of a record, which its changes all carry.
            record["id"]: {key: num(record[key]) for key in EMISSION_RECORD_FIELDS}
            for record in body["emissions"]
        },
    }


def apply_company(view: dict, items: list[dict]) -> dict:
    for item in items:
        if item["entity"] == "company" and item["op"] != "delete":
            for key, value in item["fields"].items():
                if key in COMPANY_PROFILE_FIELDS:
                    view["profile"][key] = num(value)
        elif item["entity"] == "emission_record":
            if item["op"] == "delete":
                view["records"].pop(item["id"], None)
                continue
            record = {} if item["op"] == "insert" else view["records"].setdefault(item["id"], {})
            record.update(
                {k: num(v) for k, v in item["fields"].items() if k in EMISSION_RECORD_FIELDS}
            )
            view["records"][item["id"]] = record
    return view


def overview_view(body: dict) -> dict:
    return {
        "totals": {
            k: num(body["totals"][k])
            for k in ("companies", "reporting_companies", "total_tonnes", "scope1_tonnes")
        },
        "by_industry": {
            row["slug"]: (
                num(row["company_count"]),
                num(row["reporting_companies"]),
                num(row["total_tonnes"]),
            )
            for row in body["by_industry"]
        },
    }


def apply_overview(view: dict, items: list[dict], year: int) -> dict:
    for item in items:
        if item["entity"] != "aggregate":
            continue
        fields = item["fields"]
        if item["id"] == f"platform:{year}":
            view["totals"].update(
                {
                    k: num(fields[k])
                    for k in ("reporting_companies", "total_tonnes", "scope1_tonnes")
                }
            )
        elif item["id"] == "platform":
            view["totals"]["companies"] = num(fields["companies"])
        elif item["id"].startswith("industry:"):
            slug = item["id"].split(":")[1]
            count, reporting, total = view["by_industry"].get(slug, (0, 0, 0))
            if fields["year"] is None:
                count = num(fields["companies"])
            elif fields["year"] == year:
                reporting, total = num(fields["reporting_companies"]), num(fields["total_tonnes"])
            view["by_industry"][slug] = (count, reporting, total)
    return view


def industry_view(body: dict) -> dict:
    return {
        "company_count": body["company_count"],
        "years": {
            row["year"]: (row["reporting_companies"], num(row["total_tonnes"]))
            for row in body["totals_by_year"]
        },
    }


def apply_industry(view: dict, items: list[dict], slug: str) -> dict:
    for item in items:
        if item["entity"] != "aggregate" or not item["id"].startswith(f"industry:{slug}"):
            continue
        fields = item["fields"]
        if fields["year"] is None:
            view["company_count"] = fields["companies"]
        elif fields["reporting_companies"]:
            view["years"][fields["year"]] = (
                fields["reporting_companies"],
                num(fields["total_tonnes"]),
            )
        else:
            view["years"].pop(fields["year"], None)
    return view


def writes(stop: threading.Event, flippable: list, stable: list, seed: int, errors: list):
    rng = random.Random(seed)
    statuses = ["verified", "pending", "rejected"]
    try:
        with psycopg.connect(conninfo(), autocommit=True) as conn:
            while not stop.is_set():
                choice = rng.random()
                company = rng.choice(stable + flippable)
                if choice < 0.4:
                    conn.execute(
                        "UPDATE emission_records SET scope1_tonnes = %s, scope3_tonnes = %s"
                        " WHERE company_id = %s AND year = %s",
                        [
                            rng.randint(0, 5000),
                            rng.randint(0, 500),
                            company,
                            rng.choice([2023, 2024]),
                        ],
                    )
                elif choice < 0.55:
                    conn.execute(
                        "UPDATE emission_records SET verification_status = %s"
                        " WHERE company_id = %s AND year = %s",
                        [rng.choice(statuses), company, rng.choice([2023, 2024])],
                    )
                elif choice < 0.7:
                    conn.execute(
                        "UPDATE companies SET is_public = NOT is_public WHERE id = %s",
                        [rng.choice(flippable)],
                    )
                elif choice < 0.8:
                    conn.execute(
                        "UPDATE companies SET name = %s, data_quality_score = %s WHERE id = %s",
                        [f"Renamed {rng.randint(0, 99)}", rng.randint(0, 100), company],
                    )
                elif choice < 0.9:
                    with conn.transaction():
                        new_id = conn.execute(
                            "INSERT INTO companies (name, country, industry_id)"
                            " SELECT 'New ' || %s, 'SE', industry_id FROM companies WHERE id = %s"
                            " RETURNING id",
                            [rng.randint(0, 10**6), company],
                        ).fetchone()[0]
                        conn.execute(
                            "INSERT INTO emission_records (company_id, year, scope1_tonnes)"
                            " VALUES (%s, 2024, %s)",
                            [new_id, rng.randint(1, 900)],
                        )
                else:
                    conn.execute(
                        "DELETE FROM emission_records WHERE company_id = %s AND year = 2023",
                        [rng.choice(flippable)],
                    )
                    conn.execute(
                        "INSERT INTO emission_records (company_id, year, scope1_tonnes)"
                        " VALUES (%s, 2023, %s) ON CONFLICT DO NOTHING",
                        [rng.choice(flippable), rng.randint(1, 900)],
                    )
                time.sleep(0.002)
    except Exception as exc:
        errors.append(exc)


def publishing(stop: threading.Event, errors: list):
    try:
        while not stop.is_set():
            result = change_batch_publish()
            if not result or not result.changes:
                time.sleep(0.005)
    except Exception as exc:
        errors.append(exc)
    finally:
        connections.close_all()


def snapshot(client: APIClient, companies: list) -> dict:
    overview = client.get("/api/overview/").json()
    views = {
        "seq": overview["seq"],
        "year": overview["year"],
        "overview": overview_view(overview),
        "steel": industry_view(client.get("/api/industries/steel/").json()),
        "companies": {},
    }
    for company in companies:
        body = client.get(f"/api/companies/{company}/").json()
        views["companies"][str(company)] = company_view(body)
    return views


def replay(views: dict, audience: str) -> dict:
    contexts = ["overview", "industry:steel", *(f"company:{c}" for c in views["companies"])]
    items = changes_since(
        cursors=dict.fromkeys(contexts, views["seq"]), audience=audience, limit=1_000_000
    ).items
    by_context = {}
    for item in items:
        by_context.setdefault(item["context"], []).append(item)
    apply_overview(views["overview"], by_context.get("overview", []), views["year"])
    apply_industry(views["steel"], by_context.get("industry:steel", []), "steel")
    for company, view in views["companies"].items():
        apply_company(view, by_context.get(f"company:{company}", []))
    return views


@pytest.mark.parametrize("audience", ["public", "staff"])
def test_snapshot_plus_changes_equals_fresh_snapshot(world, audience):
    sql(
        "INSERT INTO companies (name, country, industry_id, is_public)"
        " SELECT 'Firm ' || n, 'DE', CASE WHEN n %% 2 = 0 THEN %s ELSE %s END, n %% 3 <> 0"
        " FROM generate_series(1, 24) AS n",
        [world["steel"], world["software"]],
    )
    sql(
        "INSERT INTO emission_records (company_id, year, scope1_tonnes, verification_status)"
        " SELECT id, y, 10 * y - 20000, 'verified' FROM companies"
        " CROSS JOIN generate_series(2023, 2024) AS y WHERE name LIKE 'Firm %%'"
    )
    change_batch_publish()
    stable = [world["acme"], world["beta"]]
    flippable = [row[0] for row in sql("SELECT id FROM companies WHERE name LIKE 'Firm %%'")]

    client = APIClient()
    if audience == "staff":
        client.force_authenticate(
            get_user_model().objects.create_user("staff", password="x-password-1", is_staff=True)
        )
    stop, errors = threading.Event(), []
    threads = [threading.Thread(target=publishing, args=(stop, errors))] + [
        threading.Thread(target=writes, args=(stop, flippable, stable, seed, errors))
        for seed in range(3)
    ]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        old = snapshot(client, stable)  # taken while writes and publication go on
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    while (result := change_batch_publish()) and result.changes:
        pass
    assert errors == []

    fresh = snapshot(client, stable)
    assert fresh["seq"] > old["seq"]
    replayed = replay(old, audience)
    assert replayed["overview"] == fresh["overview"]
    assert replayed["steel"] == fresh["steel"]
    assert replayed["companies"] == fresh["companies"]
