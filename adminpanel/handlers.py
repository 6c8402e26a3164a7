"""What every server process does when maintenance mode is switched (a process message
sent by adminpanel.maintenance.maintenance_announce)."""

from __future__ import annotations

from adminpanel.selectors import Maintenance, maintenance_cache_set
from realtime.control import process_handler
from realtime.hub import Hub


@process_handler("maintenance")
async def maintenance_changed(hub: Hub, payload: dict) -> None:
    """Refresh this process's cached mode at once (new connections are refused or admitted
    from now on). When maintenance ends, compare every followed context with the published
    heads: what the publisher held back is read from the log and delivered now, in order,
    instead of with the next batch of each context."""
    state = Maintenance.from_dict(payload)
    maintenance_cache_set(state)
    if not state.active:
        await hub.check_heads()
