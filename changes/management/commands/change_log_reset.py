"""Start a new change-log epoch (after a bulk load or restore that bypassed capture)."""

from django.core.management.base import BaseCommand, CommandParser

from changes.services import change_log_reset


class Command(BaseCommand):
    help = (
        "Empty the change log, rebuild the running totals from the tables and start a new "
        "epoch; open dashboards reload. For loads that bypassed capture."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--reason", default="manual reset", help="recorded in the log")

    def handle(self, *args, reason: str, **options) -> None:
        epoch = change_log_reset(reason=reason)
        self.stdout.write(f"new epoch {epoch}")
