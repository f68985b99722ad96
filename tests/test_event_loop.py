"""The suite runs its asyncio tests on the loop ``streamer run`` uses."""

from __future__ import annotations

import asyncio

import uvloop


async def test_asyncio_tests_run_on_uvloop_as_the_product_does() -> None:
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
