"""One object per running event loop: the process's hub, its notification attempt
recorder, its copy of the notifications awaiting acknowledgement. A server process runs
one loop; tests run a loop per test, and each must get objects of its own (an asyncio
lock or task belongs to the loop that made it)."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class LoopLocal(Generic[T]):
    """The `factory`'s object for the running event loop, made on first use.

    `keep_loops`: hold on to loops that have ended (and their objects), for a registry
    that lists every object made (`values`); otherwise an object goes with its loop."""

    def __init__(self, factory: Callable[[], T], *, keep_loops: bool = False) -> None:
        self.factory = factory
        self.objects: dict[asyncio.AbstractEventLoop, T] | weakref.WeakKeyDictionary = (
            {} if keep_loops else weakref.WeakKeyDictionary()
        )

    def get(self) -> T:
        """The running loop's object (call from inside the loop)."""
        loop = asyncio.get_running_loop()
        found = self.objects.get(loop)
        if found is None:
            found = self.objects[loop] = self.factory()
        return found

    def values(self) -> list[T]:
        """Every object made so far (of the loops still held)."""
        return list(self.objects.values())
