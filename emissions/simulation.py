"""Realistic live changes for a running demo: revisions, verifications, new companies."""

from __future__ import annotations

import random
import uuid
from decimal import Decimal

from django.db import connection, transaction

# What a day of a real platform looks like, as weights: mostly metric revisions.
ACTIONS = (
    ("metric_revision", 70),
    ("verification_change", 12),
    ("profile_edit", 10),
    ("new_company", 5),
    ("visibility_change", 3),
)
COUNTRIES = ("DE", "FR", "US", "GB", "JP", "CN", "IN", "BR", "NL", "SE", "IT", "ES", "CA")


def _random_company(cursor, rng: random.Random, *, public: bool | None = None):
    """A roughly uniform company: the first id at or after a random UUID."""
    pivot = uuid.UUID(int=rng.getrandbits(128))
    condition = "" if public is None else f" AND is_public = {'true' if public else 'false'}"
    for bound in (pivot, uuid.UUID(int=0)):
        cursor.execute(
            f"SELECT id, industry_id FROM companies WHERE id >= %s{condition} ORDER BY id LIMIT 1",
            [bound],
        )
        row = cursor.fetchone()
        if row:
            return row
    return None


@transaction.atomic
def simulation_step(*, rng: random.Random) -> str | None:
    """Make one realistic change; returns what it did (None on an empty database)."""
    names = [name for name, _ in ACTIONS]
    action = rng.choices(names, weights=[weight for _, weight in ACTIONS])[0]
    with connection.cursor() as cursor:
        company = _random_company(cursor, rng)
        if company is None:
            return None
        company_id, industry_id = company
        if action == "metric_revision":
            factor = Decimal(str(round(rng.lognormvariate(0, 0.08), 4)))
            scope = rng.choice(["scope1_tonnes", "scope2_tonnes", "scope3_tonnes"])
            cursor.execute(
                f"UPDATE emission_records SET {scope} = round({scope} * %s, 3),"
                " updated_at = now() WHERE id = (SELECT id FROM emission_records"
                " WHERE company_id = %s ORDER BY year DESC LIMIT 1)",
                [factor, company_id],
            )
        elif action == "verification_change":
            status = rng.choices(["verified", "pending", "rejected"], weights=[70, 25, 5])[0]
            cursor.execute(
                "UPDATE emission_records SET verification_status = %s, updated_at = now()"
                " WHERE id = (SELECT id FROM emission_records WHERE company_id = %s"
                " ORDER BY random() LIMIT 1)",
                [status, company_id],
            )
        elif action == "profile_edit":
            cursor.execute(
                "UPDATE companies SET data_quality_score = least(100, greatest(0,"
                " data_quality_score + %s)), updated_at = now() WHERE id = %s",
                [rng.randint(-8, 8), company_id],
            )
        elif action == "visibility_change":
            cursor.execute(
                "UPDATE companies SET is_public = NOT is_public, updated_at = now() WHERE id = %s",
                [company_id],
            )
        else:
            size = Decimal(str(round(rng.lognormvariate(9, 1.5), 3)))
            cursor.execute(
                "INSERT INTO companies (name, country, industry_id, verification_status,"
                " data_quality_score) VALUES (%s, %s, %s, 'pending', %s) RETURNING id",
                [
                    f"{rng.choice(['Nova', 'Apex', 'Terra', 'Blue', 'Vertex'])}"
                    f" {rng.choice(['Holdings', 'Industries', 'Group', 'Works'])}"
                    f" {rng.randint(100, 999)}",
                    rng.choice(COUNTRIES),
                    industry_id,
                    rng.randint(20, 90),
                ],
            )
            new_id = cursor.fetchone()[0]
            cursor.execute(
                "INSERT INTO emission_records (company_id, year, scope1_tonnes, scope2_tonnes,"
                " scope3_tonnes, source) VALUES (%s, 2024, %s, %s, %s, 'Self-reported')",
                [new_id, size, round(size / 3, 3), round(size * 2, 3)],
            )
    return action
