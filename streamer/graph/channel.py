"""Bounded channels between stages: they never block the producer, they drop and count."""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class ChannelClosed(Exception):
    """Raised by ``get`` once a closed channel is empty."""


class DropPolicy(enum.Enum):
    OLDEST = "oldest"  # keep the newest items (live video: latency over completeness)
    NEWEST = "newest"  # refuse the incoming item


class Channel(Generic[T]):
    """A bounded single-consumer queue for one asyncio loop.

    ``put`` never waits: when full, the drop policy discards an item and ``dropped`` counts it.
    ``put_threadsafe`` lets a worker thread hand items to the loop. ``observers`` see every item put
    (before any drop); they run on the loop and must not wait (the frame taps use them).
    """

    def __init__(
        self,
        name: str,
        maxsize: int,
        policy: DropPolicy = DropPolicy.OLDEST,
        on_drop: Callable[[T], None] | None = None,
    ) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.name = name
        self.maxsize = maxsize
        self.policy = policy
        self.dropped = 0
        self.delivered = 0
        self._items: deque[T] = deque()
        self._on_drop = on_drop
        self.observers: list[Callable[[T], None]] = []
        self._waiter: asyncio.Future[None] | None = None
        self._space_waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, item: T) -> bool:
        """Queue ``item``; returns False when something was dropped to keep the bound."""
        if self._closed:
            return False
        for observer in self.observers:
            observer(item)
        accepted = True
        if len(self._items) >= self.maxsize:
            accepted = False
            self.dropped += 1
            if self.policy is DropPolicy.NEWEST:
                self._dropped(item)
                return False
            self._dropped(self._items.popleft())
        self._items.append(item)
        self._wake()
        return accepted

    def put_threadsafe(self, item: T) -> None:
        if self._loop is None:
            raise RuntimeError(f"channel {self.name} is not bound to a loop")
        try:
            self._loop.call_soon_threadsafe(self.put, item)
        except RuntimeError:  # loop closed during shutdown
            pass

    def close(self) -> None:
        self._closed = True
        self._wake()
        self._wake_space()

    async def wait_for_space(self) -> None:
        """Wait until a ``put`` would not drop (or the channel is closed): a producer that can hold its
        items itself uses this to leave the dropping to its own, counted policy."""
        while len(self._items) >= self.maxsize and not self._closed:
            self._space_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._space_waiter
            finally:
                self._space_waiter = None

    def close_threadsafe(self) -> None:
        if self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self.close)
            except RuntimeError:
                pass

    async def get(self) -> T:
        while not self._items:
            if self._closed:
                raise ChannelClosed(self.name)
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._pop()

    def get_nowait(self) -> T | None:
        if not self._items:
            return None
        return self._pop()

    def _pop(self) -> T:
        self.delivered += 1
        item = self._items.popleft()
        self._wake_space()
        return item

    def _dropped(self, item: T) -> None:
        if self._on_drop is not None:
            self._on_drop(item)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _wake_space(self) -> None:
        if self._space_waiter is not None and not self._space_waiter.done():
            self._space_waiter.set_result(None)
