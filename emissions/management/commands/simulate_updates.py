"""Keep a demo alive: write realistic changes at a steady rate."""

import random
import signal
import time

from django.core.management.base import BaseCommand, CommandParser

from emissions.simulation import simulation_step


class Command(BaseCommand):
    help = "Write realistic changes (revisions, verifications, new companies) at --rate per s."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rate", type=float, default=2.0, help="changes per second")
        parser.add_argument("--duration", type=float, default=0, help="seconds; 0 = forever")
        parser.add_argument("--seed", type=int, default=None)

    def handle(self, *args, rate: float, duration: float, seed: int | None, **options) -> None:
        if rate <= 0:
            self.stdout.write("rate is 0: not simulating")
            return
        rng = random.Random(seed)
        stopping = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stopping.append(True))
        interval = 1.0 / rate
        started = next_at = time.monotonic()
        done = 0
        while not stopping and (not duration or time.monotonic() - started < duration):
            if simulation_step(rng=rng) is None:
                self.stderr.write("no companies to change; load demo data first")
                return
            done += 1
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_at = time.monotonic()  # fell behind: do not burst to catch up
        self.stdout.write(f"simulated {done} changes")
