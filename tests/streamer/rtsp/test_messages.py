"""RTSP message parsing on its own: what the fuzz found, and the size bounds."""

from __future__ import annotations

import asyncio

import pytest

from streamer.rtsp.messages import (
    MAX_HEAD,
    BadRequest,
    BlankLine,
    InterleavedFrame,
    Request,
    parse_channel_pair,
    parse_port_pair,
    read_message,
)


def parse(data: bytes) -> Request | InterleavedFrame | BlankLine | None:
    async def run() -> Request | InterleavedFrame | BlankLine | None:
        reader = asyncio.StreamReader(limit=8192)
        reader.feed_data(data)
        reader.feed_eof()
        return await read_message(reader)

    return asyncio.run(run())


@pytest.mark.parametrize("length", ["²", "①", "-1", "+5", " 5x", "0x10", "1e3", "99999999999"])
def test_content_length_must_be_ascii_digits(length: str) -> None:
    with pytest.raises(BadRequest) as error:
        parse(f"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nContent-Length: {length}\r\n\r\n".encode())
    assert error.value.status in (400, 413)


@pytest.mark.parametrize("cseq", ["1\rX-Injected: y", "١", "abc", "-1", "", "1234567890"])
def test_a_cseq_that_is_not_a_number_is_never_echoed(cseq: str) -> None:
    request = parse(f"OPTIONS * RTSP/1.0\r\nCSeq: {cseq}\r\n\r\n".encode())
    assert isinstance(request, Request) and request.cseq == ""


def test_request_head_is_bounded_in_total() -> None:
    headers = "".join(f"X-{index}: {'y' * 2000}\r\n" for index in range(MAX_HEAD // 2000 + 1))
    with pytest.raises(BadRequest, match="head too large"):
        parse(f"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n{headers}\r\n".encode())


def test_url_with_control_characters_is_refused() -> None:
    with pytest.raises(BadRequest):
        parse(b"DESCRIBE rtsp://h/live/\x1b[2J RTSP/1.0\r\nCSeq: 1\r\n\r\n")


def test_blank_lines_and_interleaved_frames() -> None:
    assert isinstance(parse(b"\r\n"), BlankLine)
    frame = parse(b"$\x01\x00\x03abc")
    assert isinstance(frame, InterleavedFrame) and frame.channel == 1 and frame.payload == b"abc"
    assert parse(b"") is None


@pytest.mark.parametrize("text", ["+1-2", "١-٢", "1_0-11", "5-", "-5", "a-b", "1-2-3", "999999-1", " "])
def test_port_and_channel_pairs_are_ascii_numbers_in_range(text: str) -> None:
    with pytest.raises(BadRequest) as error:
        parse_port_pair(text)
    assert error.value.status == 461
    with pytest.raises(BadRequest):
        parse_channel_pair(text)


def test_pairs() -> None:
    assert parse_port_pair("5000-5001") == (5000, 5001) and parse_port_pair("5000") == (5000, 5001)
    assert parse_channel_pair("0-1") == (0, 1)
    with pytest.raises(BadRequest):
        parse_channel_pair("255")  # 255-256: the RTCP channel would not fit
