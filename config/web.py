"""The Procfile's `web` process: one uvicorn server (config/serve.py), or N of them behind
HAProxy on the same public port.

    python -m config.web --processes ${WEB_PROCESSES:-1} --host HOST --port WEB_PORT

With 1 process this becomes `python -m config.serve` (exec: the same process, signals
and exit status as before). With N > 1 it checks the ports, renders HAProxy's
configuration (config/haproxy.py) into the run directory, and runs as one supervised
group, with honcho's process manager (the one `make run` uses):

- web.1 .. web.N: `python -m config.serve` on 127.0.0.1, ports WEB_BACKEND_PORT (default
  WEB_PORT + 1) to WEB_BACKEND_PORT + N - 1;
- haproxy: master-worker, on HOST:WEB_PORT, balancing over them (reload: `python -m
  config.haproxy reload`).

As everywhere in a Procfile, when one of them exits the others are stopped and the exit
is reported (`web.2 stopped (rc=-9)`); SIGTERM or SIGINT to this process stops them all.
Each child runs in a session of its own, so a terminal's Ctrl-C reaches them only
through this process, in order. Clients lose nothing when a process goes: they resume
from their cursors on any other. Where one process failing must not stop the others
(production), run each web process and HAProxy under a supervisor of their own
(systemd units, container replicas) with the same commands: `web_process_command`,
`haproxy_command`.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from honcho.manager import Manager

from config.haproxy import (
    BACKEND_HOST,
    HARD_STOP_AFTER_DEFAULT,
    RUN_DIR_DEFAULT,
    HaproxyLayout,
    haproxy_command,
    haproxy_config_write,
)
from config.ports_check import port_taken


def serve_command(host: str, port: int) -> list[str]:
    """One web process (config/serve.py) on `host`:`port`: what WEB_PROCESSES=1 becomes,
    and what each container of docker-compose.yml's `web` service runs."""
    return [sys.executable, "-m", "config.serve", "--host", host, "--port", str(port)]


def web_process_command(port: int) -> list[str]:
    """One web process on loopback `port` (behind HAProxy)."""
    return serve_command(BACKEND_HOST, port)


def forwarded_allow_ips(current: str | None) -> str:
    """FORWARDED_ALLOW_IPS with HAProxy's address added: it connects to the web
    processes from 127.0.0.1 and reports the client in X-Forwarded-For, which uvicorn
    believes only from a trusted address. Proxies already trusted (one in front of
    HAProxy) stay trusted."""
    trusted = [ip.strip() for ip in (current or "").split(",") if ip.strip()]
    if "*" in trusted or BACKEND_HOST in trusted:
        return ",".join(trusted)
    return ",".join([*trusted, BACKEND_HOST])


def ports_refusal(layout: HaproxyLayout) -> list[str]:
    """A line for each port of `layout` that something else holds."""
    wanted = [("haproxy", layout.host, layout.port, "PORT")] + [
        (f"web.{n}", BACKEND_HOST, port, "WEB_BACKEND_PORT")
        for n, port in enumerate(layout.backend_ports, start=1)
    ]
    lines = []
    for name, host, port, variable in wanted:
        reason = port_taken(host, port)
        if reason is not None:
            lines.append(
                f"port {port} ({name}) on {host} is not free: {reason}. "
                f"Stop what holds it, or move it: {variable}=<another port>"
            )
    return lines


def cluster_run(layout: HaproxyLayout) -> int:
    """Run the N web processes and HAProxy until one exits or this process is stopped;
    the exit status of the first to exit (or 130/143 for SIGINT/SIGTERM)."""
    refused = ports_refusal(layout)
    if refused:
        print("\n".join(refused), file=sys.stderr)
        return 1
    haproxy_config_write(layout)
    env = {
        **os.environ,
        "FORWARDED_ALLOW_IPS": forwarded_allow_ips(os.environ.get("FORWARDED_ALLOW_IPS")),
    }
    manager = Manager()
    for n, port in enumerate(layout.backend_ports, start=1):
        # `exec`: honcho runs a shell; its signals must reach the server itself.
        manager.add_process(f"web.{n}", "exec " + shlex.join(web_process_command(port)), env=env)
    manager.add_process("haproxy", "exec " + shlex.join(haproxy_command(layout)), env=env)
    print(
        f"{layout.processes} web processes on {BACKEND_HOST}:"
        f"{layout.backend_ports[0]}-{layout.backend_ports[-1]} behind HAProxy on "
        f"{layout.host}:{layout.port} (configuration {layout.config_path}; reload: "
        f"python -m config.haproxy reload --run-dir {layout.run_dir})",
        flush=True,
    )
    manager.loop()
    status = manager.returncode or 0
    # A child killed by a signal reports -signal; a shell says 128 + signal.
    return 128 - status if status < 0 else status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The web processes (and HAProxy when N > 1).")
    parser.add_argument("--processes", type=int, default=int(os.environ.get("WEB_PROCESSES") or 1))
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("WEB_PORT", "8000")))
    parser.add_argument(
        "--backend-port",
        type=int,
        default=int(os.environ["WEB_BACKEND_PORT"]) if os.environ.get("WEB_BACKEND_PORT") else None,
        help="the first web process's port (default: --port + 1)",
    )
    parser.add_argument(
        "--run-dir", type=Path, default=Path(os.environ.get("WEB_RUN_DIR") or RUN_DIR_DEFAULT)
    )
    args = parser.parse_args(argv)
    if args.processes == 1:
        # The same process becomes the server: its pid, signals and exit status.
        os.execv(sys.executable, serve_command(args.host, args.port))
    try:
        layout = HaproxyLayout(
            processes=args.processes,
            host=args.host,
            port=args.port,
            backend_port=args.backend_port or args.port + 1,
            run_dir=args.run_dir,
            hard_stop_after=os.environ.get("HAPROXY_HARD_STOP_AFTER") or HARD_STOP_AFTER_DEFAULT,
        )
        return cluster_run(layout)
    except (ValueError, FileNotFoundError) as exc:
        print(f"web: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
