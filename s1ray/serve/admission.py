"""Generation admission inside a replica: at most ``ongoing`` generation requests run and at most
``queued`` wait; the rest are refused at once (503 with Retry-After).

Ray Serve's own ``max_ongoing_requests`` counts every request a replica holds, so a replica
full of generations would also queue its stats and health requests. The deployment therefore
gets Serve slots for ``ongoing + queued`` generations plus a few admin slots, and this gate
keeps generation inside its share: admin endpoints never wait behind it.
"""

from __future__ import annotations

import asyncio


class QueueFull(Exception):
    """No generation slot and the queue is full."""


class Admission:
    def __init__(self, ongoing: int, queued: int):
        self.ongoing, self.queued = ongoing, queued
        self._slots = asyncio.Semaphore(ongoing)
        self.waiting = 0
        self.running = 0

    async def acquire(self) -> None:
        """Take a slot, waiting in the queue if need be; :class:`QueueFull` if it is full."""
        if self._slots.locked() and self.waiting >= self.queued:
            raise QueueFull
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1

    def release(self) -> None:
        self.running -= 1
        self._slots.release()
