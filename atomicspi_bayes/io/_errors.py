"""Turning third-party exception text into part of a one-line error message."""

from __future__ import annotations


def one_line(exc: object, limit: int = 160) -> str:
    """``exc`` as one line of at most ``limit`` characters (whitespace runs collapsed)."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
