"""Load the deterministic demo data set: industries, companies, emissions, benchmarks."""

import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from emissions.demo import (
    DEMO_LAST_YEAR,
    DEMO_YEARS,
    DemoDataExists,
    demo_data_exists,
    demo_data_load,
)


def _non_negative(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(value)
    return number


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number


class Command(BaseCommand):
    """manage.py seed_demo: fill an empty database with reproducible demo data."""

    help = (
        "Load seeded demo data (industries, companies, yearly emissions, benchmarks). "
        "Refuses when companies exist unless --if-empty or --replace is given."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        """Declare the command's options."""
        parser.add_argument(
            "--companies",
            type=_non_negative,
            default=settings.DEMO_COMPANIES,
            help="Number of companies (default: the DEMO_COMPANIES setting, %(default)s).",
        )
        parser.add_argument(
            "--years",
            type=_positive,
            default=DEMO_YEARS,
            help=f"Reporting years, ending at {DEMO_LAST_YEAR} (default: %(default)s).",
        )
        parser.add_argument("--seed", type=int, default=42, help="Random seed (default: 42).")
        existing = parser.add_mutually_exclusive_group()
        existing.add_argument(
            "--if-empty", action="store_true", help="Do nothing when companies already exist."
        )
        existing.add_argument(
            "--replace",
            action="store_true",
            help="Truncate industries, companies, records and benchmarks (CASCADE) first.",
        )
        parser.add_argument("--no-progress", action="store_true", help="No progress bars.")

    def handle(self, *args: Any, **options: Any) -> None:
        """Load the data and print one summary line."""
        if options["if_empty"] and demo_data_exists():
            self.stdout.write("Companies already exist; nothing loaded (--if-empty).")
            return
        started = time.perf_counter()
        try:
            counts = demo_data_load(
                companies=options["companies"],
                years=options["years"],
                seed=options["seed"],
                replace=options["replace"],
                progress=not options["no_progress"],
            )
        except DemoDataExists as error:
            raise CommandError(
                f"{error} Use --replace to truncate them or --if-empty to skip."
            ) from error
        elapsed = time.perf_counter() - started
        self.stdout.write(
            f"Loaded {counts['industries']:,} industries, {counts['companies']:,} companies, "
            f"{counts['emission_records']:,} emission records, "
            f"{counts['industry_benchmarks']:,} benchmarks in {elapsed:.1f} s "
            f"(seed {options['seed']}; latest totals on "
            f"{counts['companies_with_latest']:,} companies)."
        )
