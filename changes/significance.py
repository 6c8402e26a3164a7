"""Significance: how much a person should notice a change (`minor`, `major`, `critical`).

The rules are settings (`SIGNIFICANCE_RULES`), documented in docs/protocol.md:

- an emission record whose total moves by `total_major_pct` percent or more is major, by
  `total_critical_pct` or more critical; a new record or a deleted one is major when it
  enters or leaves the year's top `top_rank` emitters, else minor;
- a record or company whose verification status changes is major (critical when it
  becomes `rejected`);
- a company that appears, disappears or changes visibility is major; a data-quality
  score moving by `quality_major_points` or more is major;
- a benchmark whose median moves by `benchmark_major_pct` percent or more is major;
- a record that enters or leaves the year's top `top_rank` emitters (a ranking change)
  is at least major.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django.conf import settings

from changes.items import SIGNIFICANCE_ORDER, CapturedChange

DEFAULT_RULES: dict[str, Any] = {
    "total_major_pct": 10,
    "total_critical_pct": 50,
    "quality_major_points": 20,
    "benchmark_major_pct": 5,
    "top_rank": 10,
}


def significance_rules() -> dict[str, Any]:
    """The configured rules over the defaults."""
    return {**DEFAULT_RULES, **getattr(settings, "SIGNIFICANCE_RULES", {})}


def _max(*levels: str) -> str:
    return max(levels, key=SIGNIFICANCE_ORDER.__getitem__)


def _pct_move(old: Any, new: Any) -> float:
    old, new = Decimal(str(old or 0)), Decimal(str(new or 0))
    if old == new:
        return 0.0
    if old == 0:
        return float("inf")
    return float(abs(new - old) / abs(old) * 100)


def change_significance(
    change: CapturedChange,
    *,
    rules: dict[str, Any],
    top_threshold: Callable[[int], Decimal | None],
) -> str:
    """Score one change. `top_threshold(year)` is the year's rank-`top_rank` total."""
    old = change.change_data.get("old", {})
    new = change.change_data.get("new", {})
    level = "minor"
    if change.entity == "emission_record":
        routing = change.routing
        if change.change_type == "update":
            move = _pct_move(old.get("total_tonnes"), new.get("total_tonnes"))
            if "total_tonnes" in new:
                if move >= rules["total_critical_pct"]:
                    level = _max(level, "critical")
                elif move >= rules["total_major_pct"]:
                    level = _max(level, "major")
            if "verification_status" in new:
                status = new["verification_status"]
                level = _max(level, "critical" if status == "rejected" else "major")
        threshold = top_threshold(routing.get("year")) if routing.get("year") else None
        if threshold is not None:
            values = []
            if change.change_type != "insert":
                values.append(old.get("total_tonnes", routing.get("total_tonnes")))
            if change.change_type != "delete":
                values.append(routing.get("total_tonnes"))
            if any(v is not None and Decimal(str(v)) >= threshold for v in values):
                level = _max(level, "major")
    elif change.entity == "company":
        if change.change_type in ("insert", "delete"):
            level = "major"
        else:
            if "verification_status" in new:
                status = new["verification_status"]
                level = _max(level, "critical" if status == "rejected" else "major")
            if "is_public" in new or "industry_id" in new:
                level = _max(level, "major")
            if "data_quality_score" in new:
                points = abs(
                    Decimal(str(new["data_quality_score"] or 0))
                    - Decimal(str(old.get("data_quality_score") or 0))
                )
                if points >= rules["quality_major_points"]:
                    level = _max(level, "major")
    elif change.entity == "industry_benchmark" and change.change_type == "update":
        median_move = _pct_move(old.get("median"), new.get("median", old.get("median")))
        if median_move >= rules["benchmark_major_pct"]:
            level = "major"
    return level
