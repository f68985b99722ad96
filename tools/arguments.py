"""argparse types shared by the tools."""

from __future__ import annotations

import argparse


def frame_size(text: str) -> tuple[int, int]:
    """'640x360' -> (640, 360); anything else is an argparse error that names the expected form."""
    width, _, height = text.lower().partition("x")
    if not (width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0):
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}")
    return int(width), int(height)
