from __future__ import annotations

import asyncio

import pytest

from streamer.graph.channel import Channel, ChannelClosed, DropPolicy
from streamer.graph.frames import AccessUnit
from streamer.hub import StreamHub


async def test_channel_drops_oldest_and_counts() -> None:
    channel: Channel[int] = Channel("t", 3, DropPolicy.OLDEST)
    for item in range(5):
        channel.put(item)
    assert channel.dropped == 2
    assert [await channel.get() for _ in range(3)] == [2, 3, 4]


async def test_channel_drops_newest() -> None:
    channel: Channel[int] = Channel("t", 2, DropPolicy.NEWEST)
    assert channel.put(1) and channel.put(2) and not channel.put(3)
    assert [await channel.get(), await channel.get()] == [1, 2] and channel.dropped == 1


async def test_channel_close_wakes_reader() -> None:
    channel: Channel[int] = Channel("t", 2)
    reader = asyncio.create_task(channel.get())
    await asyncio.sleep(0)
    channel.close()
    with pytest.raises(ChannelClosed):
        await reader


async def test_channel_put_from_thread() -> None:
    channel: Channel[int] = Channel("t", 10)
    channel.bind(asyncio.get_running_loop())
    await asyncio.to_thread(channel.put_threadsafe, 42)
    assert await asyncio.wait_for(channel.get(), 2) == 42


def unit(seq: int, keyframe: bool) -> AccessUnit:
    return AccessUnit([b"\x65" if keyframe else b"\x41"], seq / 25, 0.0, keyframe, 16, 16, seq, (b"\x67", b"\x68") if keyframe else None)


async def test_hub_reader_starts_on_keyframe_and_slow_reader_drops() -> None:
    hub = StreamHub("x")
    fast = hub.subscribe(100)
    slow = hub.subscribe(4)
    hub.publish(unit(0, False))  # before any keyframe: nobody gets it
    for seq in range(1, 22):
        hub.publish(unit(seq, seq % 5 == 1))
    got = [(await fast.get()).seq for _ in range(21)]  # type: ignore[union-attr]
    assert got == list(range(1, 22))
    assert slow.dropped > 0
    first = await asyncio.wait_for(slow.get(), 2)
    assert first is not None and first.keyframe, "after dropping, a reader resumes on a keyframe"
    slow.close()
    assert slow not in hub.subscriptions and await slow.get() is None


async def test_hub_counts_what_it_delivers_by_protocol_not_by_reader() -> None:
    hub = StreamHub("x")
    readers = [hub.subscribe(10, "rtsp-1"), hub.subscribe(10, "rtsp-2"), hub.subscribe(10, "whep-abc"), hub.subscribe(10)]
    hub.publish(unit(0, True))
    for reader in readers:
        assert (await reader.get()) is not None
    assert hub.delivered_bytes == {"rtsp": 2, "webrtc": 1, "other": 1}  # one 1-byte NAL each
    assert hub.delivered_units == {"rtsp": 2, "webrtc": 1, "other": 1}
    assert hub.end_to_end.count == 1
