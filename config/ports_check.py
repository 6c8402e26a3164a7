"""Checks, before `make run` starts its processes, that the ports they listen on are free.

honcho stops every process when one exits, so a taken port would otherwise end the whole
run with the reason buried in the log. Usage::

    python -m config.ports_check HOST web=8000:PORT flower=5555:FLOWER_PORT@127.0.0.1

Each argument is ``process=port:VARIABLE``, with ``@address`` when that process listens on
another address than HOST; the variable is what moves that port. Exits 0 when all are
free; else prints one line per taken port and exits 1.
"""

from __future__ import annotations

import socket
import sys
from typing import NamedTuple


class Listener(NamedTuple):
    process: str
    host: str
    port: int
    variable: str


def listener_parse(argument: str, host: str) -> Listener:
    """``web=8000:PORT`` -> Listener("web", host, 8000, "PORT")."""
    process, _, rest = argument.partition("=")
    rest, _, own_host = rest.partition("@")
    port, _, variable = rest.partition(":")
    if not (process and port.isdigit() and variable):
        raise ValueError(f"expected process=port:VARIABLE[@address], got {argument!r}")
    return Listener(process, own_host or host, int(port), variable)


def port_taken(host: str, port: int) -> str | None:
    """Why a server could not listen on host:port now, or None when it could."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As the servers themselves do: a closed connection's TIME_WAIT does not block.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as error:
            return error.strerror or str(error)
    return None


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        listeners = [listener_parse(argument, host=argv[0]) for argument in argv[1:]]
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    taken = 0
    for listener in listeners:
        reason = port_taken(listener.host, listener.port)
        if reason is not None:
            taken += 1
            print(
                f"port {listener.port} ({listener.process}) on {listener.host} is not free: "
                f"{reason}. "
                f"Stop what holds it, or move it: {listener.variable}=<another port> make run",
                file=sys.stderr,
            )
    return 1 if taken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
