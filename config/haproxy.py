"""The HAProxy configuration for WEB_PROCESSES web processes, rendered from the committed
template config/haproxy/haproxy.cfg.template, and how to start and reload HAProxy.

    python -m config.haproxy render --processes 3 --port 8000 [--host 127.0.0.1]
        [--backend-port 8001] [--run-dir .data/web] [--hard-stop-after 30s] [--output -]
    python -m config.haproxy reload [--run-dir .data/web]

Process i (1..N) listens on 127.0.0.1:(backend port + i - 1); HAProxy on HOST:port.
The template's fields are written `@{name}` (HAProxy itself uses `${NAME}` for its
environment variables and `%` in log formats).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent / "haproxy" / "haproxy.cfg.template"
# The run directory of `make run`: the rendered configuration, HAProxy's pid file and
# its runtime API socket (.data/ holds the embedded servers' data too, and is ignored).
RUN_DIR_DEFAULT = Path(__file__).resolve().parent.parent / ".data" / "web"
# How long an old worker keeps its connections after a reload. Long enough for SSE
# streams and long polls (25 s) to end by themselves; WebSockets are then closed and
# reconnect with their cursors.
HARD_STOP_AFTER_DEFAULT = "30s"
# The web processes listen here only: nothing but HAProxy should reach them directly
# (they trust its X-Forwarded-For).
BACKEND_HOST = "127.0.0.1"
MAX_PROCESSES = 64

_FIELD = re.compile(r"@\{(\w+)\}")
_DURATION = re.compile(r"^[0-9]+(us|ms|s|m|h|d)?\Z")


@dataclass(frozen=True)
class HaproxyLayout:
    """Where HAProxy and the web processes listen, and where HAProxy keeps its files."""

    processes: int
    host: str
    port: int
    backend_port: int
    run_dir: Path
    hard_stop_after: str = HARD_STOP_AFTER_DEFAULT

    def __post_init__(self) -> None:
        if not 1 <= self.processes <= MAX_PROCESSES:
            raise ValueError(f"processes must be 1 to {MAX_PROCESSES}, not {self.processes}")
        last = self.backend_port + self.processes - 1
        if not (0 < self.port < 65536 and self.backend_port > 0 and last < 65536):
            raise ValueError(f"ports out of range: {self.port}, {self.backend_port}-{last}")
        if self.port in self.backend_ports and self.host in (BACKEND_HOST, "0.0.0.0", "::", ""):
            raise ValueError(
                f"the public port {self.port} is among the web processes' ports "
                f"{self.backend_port}-{last}: move WEB_BACKEND_PORT"
            )
        if not _DURATION.match(self.hard_stop_after):
            raise ValueError(f"hard-stop-after {self.hard_stop_after!r} is not an HAProxy time")

    @property
    def backend_ports(self) -> list[int]:
        return [self.backend_port + i for i in range(self.processes)]

    @property
    def config_path(self) -> Path:
        return self.run_dir / "haproxy.cfg"

    @property
    def pid_path(self) -> Path:
        return self.run_dir / "haproxy.pid"

    @property
    def stats_socket(self) -> Path:
        return self.run_dir / "haproxy.sock"


def _bind_address(host: str, port: int) -> str:
    # HAProxy reads a bare IPv6 address's last colon as the port separator, brackets or not;
    # its `ipv6@` prefix says what the address is.
    bare = host.strip("[]")
    return f"ipv6@{bare}:{port}" if ":" in bare else f"{bare}:{port}"


def haproxy_config_render(
    layout: HaproxyLayout, template: str | None = None, servers: str | None = None
) -> str:
    """The configuration text for `layout` (template: the committed one; `servers`: the
    backend's server lines, by default one per web process of the layout)."""
    text = TEMPLATE.read_text() if template is None else template
    if servers is None:
        servers = "\n".join(
            ["    # The web processes, on loopback only (config/web.py)."]
            + [
                f"    server web{n} {BACKEND_HOST}:{port}"
                for n, port in enumerate(layout.backend_ports, start=1)
            ]
        )
    fields = {
        "bind": _bind_address(layout.host, layout.port),
        "servers": servers,
        "stats_socket": str(layout.stats_socket),
        "hard_stop_after": layout.hard_stop_after,
    }

    def fill(match: re.Match) -> str:
        if match[1] not in fields:
            raise ValueError(f"the HAProxy template has an unknown field @{{{match[1]}}}")
        return fields[match[1]]

    return _FIELD.sub(fill, text)


# docker-compose.yml's HAProxy: the same template, the web containers found by the
# service's name through Docker's DNS (up to COMPOSE_WEB_SLOTS replicas, re-resolved as
# they come and go), its runtime socket where the haproxy image's user may write.
COMPOSE_CONFIG = Path(__file__).resolve().parent / "compose" / "haproxy.cfg"
COMPOSE_WEB_SERVICE = "web"
COMPOSE_WEB_PORT = 8000
COMPOSE_WEB_SLOTS = 16
COMPOSE_SERVERS = f"""\
    # The web containers, by the service's name.
    server-template web 1-{COMPOSE_WEB_SLOTS} {COMPOSE_WEB_SERVICE}:{COMPOSE_WEB_PORT} \
resolvers docker init-addr none

# Docker's embedded DNS server: a container that starts or stops changes what `web`
# resolves to, and HAProxy follows within the hold time.
resolvers docker
    nameserver docker 127.0.0.11:53
    hold valid 5s"""


def haproxy_compose_config_render() -> str:
    """config/compose/haproxy.cfg, which docker-compose.yml mounts (tests/compose checks
    the committed file is this)."""
    layout = HaproxyLayout(
        processes=1,
        host="0.0.0.0",
        port=COMPOSE_WEB_PORT,
        backend_port=COMPOSE_WEB_PORT + 1,
        run_dir=Path("/var/lib/haproxy"),
    )
    header = (
        "# Generated by `python -m config.haproxy render-compose` from"
        " config/haproxy/haproxy.cfg.template:\n# edit the template, not this file.\n"
    )
    return header + haproxy_config_render(layout, servers=COMPOSE_SERVERS)


def haproxy_binary() -> str:
    """HAProxy's path; a clear error when it is not installed."""
    found = shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if os.access("/usr/sbin/haproxy", os.X_OK) else None
    )
    if found is None:
        raise FileNotFoundError(
            "haproxy is not installed: `apt-get install haproxy` (Debian's package; "
            "`make run` installs it when WEB_PROCESSES > 1), or run one web process "
            "(WEB_PROCESSES=1)"
        )
    return found


def haproxy_config_write(layout: HaproxyLayout) -> Path:
    """Render the configuration into the run directory and have HAProxy check it
    (`haproxy -c`), so a bad one fails here with HAProxy's own message."""
    layout.run_dir.mkdir(parents=True, exist_ok=True)
    layout.config_path.write_text(haproxy_config_render(layout))
    check = subprocess.run(
        [haproxy_binary(), "-c", "-q", "-f", str(layout.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if check.returncode != 0:
        raise ValueError(
            f"HAProxy refuses {layout.config_path}:\n{check.stdout}{check.stderr}".rstrip()
        )
    return layout.config_path


def haproxy_command(layout: HaproxyLayout) -> list[str]:
    """HAProxy in master-worker mode (-W), in the foreground, its master's pid in the run
    directory (for `reload`)."""
    return [
        haproxy_binary(),
        "-W",
        "-f",
        str(layout.config_path),
        "-p",
        str(layout.pid_path),
    ]


def haproxy_reload(run_dir: Path) -> int:
    """Graceful reload: SIGUSR2 to the master, which starts a new worker on the same
    sockets with the configuration file as it is now; the old worker serves the
    connections it has until they end or hard-stop-after. The master's pid."""
    pid_path = run_dir / "haproxy.pid"
    try:
        pid = int(pid_path.read_text().split()[0])
    except (OSError, ValueError, IndexError) as exc:
        raise ProcessLookupError(f"no HAProxy pid in {pid_path}: is it running?") from exc
    os.kill(pid, signal.SIGUSR2)
    return pid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="HAProxy in front of the web processes.")
    commands = parser.add_subparsers(dest="command", required=True)
    render = commands.add_parser("render", help="print or write the configuration for N")
    render.add_argument("--processes", type=int, required=True)
    render.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    render.add_argument("--port", type=int, default=int(os.environ.get("WEB_PORT", "8000")))
    render.add_argument("--backend-port", type=int, default=None)
    render.add_argument("--run-dir", type=Path, default=RUN_DIR_DEFAULT)
    render.add_argument("--hard-stop-after", default=HARD_STOP_AFTER_DEFAULT)
    render.add_argument("--output", default="-", help="a file, or - for standard output")
    compose = commands.add_parser(
        "render-compose", help="write docker-compose.yml's config/compose/haproxy.cfg"
    )
    compose.add_argument("--output", type=Path, default=COMPOSE_CONFIG)
    reload = commands.add_parser("reload", help="reload the running HAProxy gracefully")
    reload.add_argument("--run-dir", type=Path, default=RUN_DIR_DEFAULT)
    args = parser.parse_args(argv)
    try:
        if args.command == "render-compose":
            args.output.write_text(haproxy_compose_config_render())
            print(f"wrote {args.output}")
            return 0
        if args.command == "reload":
            print(f"HAProxy {haproxy_reload(args.run_dir)} reloading")
            return 0
        layout = HaproxyLayout(
            processes=args.processes,
            host=args.host,
            port=args.port,
            backend_port=args.backend_port or args.port + 1,
            run_dir=args.run_dir,
            hard_stop_after=args.hard_stop_after,
        )
        text = haproxy_config_render(layout)
    except (ValueError, ProcessLookupError) as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
