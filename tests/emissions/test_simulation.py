"""The live-update simulator writes realistic, captured changes."""

import random
from collections import Counter
from io import StringIO

import pytest
from django.core.management import call_command

from emissions.simulation import simulation_step
from tests.helpers import sql

pytestmark = pytest.mark.django_db


def test_steps_make_every_kind_of_change_and_all_are_captured(world):
    sql("DELETE FROM data_changes")
    rng = random.Random(7)
    actions = Counter(simulation_step(rng=rng) for _ in range(300))
    assert set(actions) == {
        "metric_revision",
        "verification_change",
        "profile_edit",
        "new_company",
        "visibility_change",
    }
    assert actions["metric_revision"] > actions["new_company"]
    captured = dict(sql("SELECT entity, count(*) FROM data_changes GROUP BY entity"))
    assert captured["emission_record"] > 100
    assert captured["company"] > 10


def test_empty_database_is_reported(db):
    assert simulation_step(rng=random.Random(1)) is None
    err = StringIO()
    call_command("simulate_updates", "--rate", "50", "--duration", "1", stderr=err)
    assert "no companies" in err.getvalue()


def test_command_runs_at_its_rate_for_its_duration(world):
    out = StringIO()
    call_command("simulate_updates", "--rate", "40", "--duration", "0.5", "--seed", "3", stdout=out)
    done = int(out.getvalue().split()[1])
    assert 10 <= done <= 25
