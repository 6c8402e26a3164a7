"""One primary and streaming replica pair per module (tests/replica/servers.py), with the
`world` rows, and the web server and publisher running on them."""

import os
import pwd
from types import SimpleNamespace

import psycopg
import pytest

from tests.faults.private_servers import PrivatePostgres, migrate, pg_bin_dir, world_insert
from tests.live.conftest import stack_env, stack_start
from tests.replica.servers import Standby

# A failed replica is tried again after this long; 1 s keeps the module short (the
# default, 5 s, only spaces the retries out).
RETRY_S = 1.0


@pytest.fixture(scope="module")
def replica_pair(tmp_path_factory):
    """SimpleNamespace(primary, standby, world, stack): a private primary, a hot standby
    cloned from it with pg_basebackup, and the Procfile's web and publisher on both."""
    bin_dir = pg_bin_dir()
    if bin_dir is None or not (bin_dir / "pg_basebackup").exists():
        pytest.skip("no PostgreSQL binaries with pg_basebackup")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root without a `postgres` user to run PostgreSQL as")
    logs = tmp_path_factory.mktemp("replica")
    primary = PrivatePostgres(bin_dir)
    standby = Standby(primary)
    stack = None
    try:
        primary.initdb()
        primary.start()
        with psycopg.connect(primary.url("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {primary.DATABASE}")
        migrate(primary.url(), logs)
        with psycopg.connect(primary.url(), autocommit=True) as conn:
            world = world_insert(conn)
        standby.clone()
        standby.start()
        env = stack_env(
            DATABASE_URL=primary.url(),
            DATABASE_REPLICA_URL=standby.url(),
            DATABASE_REPLICA_RETRY_S=str(RETRY_S),
            REALTIME_MAX_CONNECTIONS_PER_ADDRESS="10000",
        )
        stack = stack_start(("web", "publisher"), env=env, logs=logs)
        yield SimpleNamespace(primary=primary, standby=standby, world=world, stack=stack)
    finally:
        if stack is not None:
            stack.stop_all()
        standby.destroy()
        primary.destroy()
