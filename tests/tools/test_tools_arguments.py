"""Shared argparse types."""

from __future__ import annotations

import argparse

import pytest

from tools.arguments import frame_size


def test_frame_size_reads_width_by_height_and_names_the_form_it_wants() -> None:
    assert frame_size("640x360") == (640, 360)
    assert frame_size("1280X720") == (1280, 720)
    for text in ("640", "640x", "x360", "640x360x2", "-640x360", "0x360", "640 x 360"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected WIDTHxHEIGHT"):
            frame_size(text)
