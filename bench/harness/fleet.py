"""The load generator processes (bench.loadgen and bench.loadgen_http with --control)
and the commands a scenario sends them."""

from __future__ import annotations

import contextlib
import json
import math
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from bench.common import REPO
from bench.harness.processes import child_preexec

CLIENTS_PER_LOADGEN = 1250


class Fleet:
    """Load generator processes (bench.loadgen --control); clients are added in groups,
    each group shared out over new processes."""

    module = "bench.loadgen"
    name = "loadgen"

    def __init__(self, url: str, database_url: str, workdir: Path, timeout: float):
        self.url = url
        self.database_url = database_url
        self.workdir = workdir
        self.timeout = timeout
        self.processes: list[subprocess.Popen] = []
        self.lines: list[queue.Queue] = []
        self.clients = 0

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def loadgen_args(self, index: int) -> list[str]:
        """Arguments of the index-th load generator beyond the common ones."""
        return []

    def add(self, plan: list[list[str]], processes: int, ready_timeout: float) -> dict:
        """Connect `plan`'s clients in `processes` new load generators; READY figures."""
        first = len(self.processes)
        for part in (plan[i::processes] for i in range(processes)):
            index = len(self.processes)
            path = self.workdir / f"plan-{os.getpid()}-{self.name}-{index}.json"
            path.write_text(json.dumps(part))
            command = [
                sys.executable,
                "-m",
                self.module,
                "--url",
                self.url,
                "--plan",
                str(path),
                "--database-url",
                self.database_url,
                "--control",
                "--timeout",
                str(self.timeout),
                *self.loadgen_args(index),
            ]
            process = subprocess.Popen(
                command,
                cwd=REPO,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=open(self.workdir / f"{self.name}-{index}.log", "a"),  # noqa: SIM115
                text=True,
                bufsize=1,
                preexec_fn=child_preexec,
            )
            lines: queue.Queue = queue.Queue()
            threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True).start()
            self.processes.append(process)
            self.lines.append(lines)
        ready = self._collect("READY", ready_timeout, start=first)
        self.clients += len(plan)
        summed = answers_summed(ready, ("clients", "connected", "failed", "rejected_contexts"))
        return {**summed, "connect_s": max(r["connect_s"] for r in ready)}

    def connect(self, plan: list[list[str]]) -> dict:
        """Connect `plan`'s clients in as many new load generators as they need (the
        first group in two at least), allowing 60 s plus one per 15 clients; READY
        figures."""
        processes = loadgens_more(len(plan)) if self.processes else loadgens_for(len(plan))
        return self.add(plan, processes, ready_timeout=60 + len(plan) / 15)

    def _collect(self, tag: str, timeout: float, start: int = 0) -> list[dict]:
        deadline = time.monotonic() + timeout
        out = []
        for process, lines in zip(self.processes[start:], self.lines[start:], strict=True):
            while True:
                left = deadline - time.monotonic()
                try:
                    line = lines.get(timeout=max(left, 0.01))
                except queue.Empty as exc:
                    raise TimeoutError(f"loadgen {process.pid}: no {tag} in {timeout} s") from exc
                if line is None:
                    raise RuntimeError(f"loadgen {process.pid} exited (see {self.workdir})")
                if line.startswith(tag + " "):
                    out.append(json.loads(line[len(tag) + 1 :]))
                    break
        return out

    def _send(self, line: str) -> None:
        for process in self.processes:
            process.stdin.write(line + "\n")
            process.stdin.flush()

    def drain(self, timeout: float, seq: int | None = None) -> dict:
        """Wait until every client's cursors reached their contexts' heads (or, with
        `seq`, each context's last change at or below it: the writer may go on)."""
        self._send(f"drain {timeout}" + (f" {seq}" if seq is not None else ""))
        answers = self._collect("DRAINED", timeout + 30)
        return {"s": max(a["s"] for a in answers), "behind": sum(a["behind"] for a in answers)}

    def report(self, window: dict, timeout: float = 120) -> list[dict]:
        self._send("report " + json.dumps(window))
        return self._collect("REPORT", timeout)

    def churn(self, share: float, seed: int, timeout: float = 120) -> dict:
        """Every load generator aborts `share` of its open clients (no close frame) and
        reconnects them, resuming from their cursors; the summed CHURNED figures."""
        self._send("churn " + json.dumps({"share": share, "seed": seed}))
        answers = self._collect("CHURNED", timeout)
        summed = answers_summed(answers, ("aborted", "reconnected", "failed"))
        return {**summed, "s": max(a["s"] for a in answers)}

    def state(self, timeout: float = 30) -> list[dict]:
        """Every load generator's answer to `state`."""
        self._send("state")
        return self._collect("STATE", timeout)

    def stop(self) -> None:
        for process in self.processes:
            with contextlib.suppress(Exception):
                process.stdin.write("stop\n")
                process.stdin.close()
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


def _pump(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


def answers_summed(answers: list[dict], keys: Iterable[str]) -> dict[str, int]:
    """The processes' answers to one command added up, key by key."""
    return {key: sum(answer[key] for answer in answers) for key in keys}


def loadgens_for(clients: int) -> int:

    return max(2, math.ceil(clients / CLIENTS_PER_LOADGEN))


def loadgens_more(clients: int) -> int:
    return max(1, math.ceil(clients / CLIENTS_PER_LOADGEN))
