"""The sentinel tests' Redis: master, replica and three sentinels of their own
(tests/sentinel/sentinel_cluster.py); the fault tests' fixtures (fault_stack,
recovery_report) are shared from tests/faults/conftest.py."""

import pytest

from tests.faults.conftest import fault_stack, recovery_report  # noqa: F401
from tests.faults.private_servers import process_alive
from tests.sentinel.sentinel_cluster import SentinelCluster


@pytest.fixture
def sentinel_cluster(tmp_path):
    """A running master, replica and three sentinels; all killed at the end, and checked gone."""
    cluster = SentinelCluster(tmp_path / "redis")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
    started = [node.process.pid for node in cluster.nodes if node.process is not None]
    assert len(started) == 5
    assert [pid for pid in started if process_alive(pid)] == []
