"""Parsing of counts and durations as users type them: `2e12`, `2T`, `500B`, `1.4T`, `48h`."""

from __future__ import annotations

import math
import re

from planners.errors import BadInput

_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12, "p": 1e15}
_COUNT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmbgtp]?)\s*$", re.IGNORECASE)


def parse_count(text: str | float | int, what: str = "count", allow_zero: bool = False) -> float:
    """'2e12', '2T', '500B', '1.4T', '7b', '3000' -> float. Raises BadInput otherwise."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        m = _COUNT.match(str(text).replace("_", "").replace(",", ""))
        if not m:
            raise BadInput(
                f"{what} {text!r} is not a number; use e.g. 2e12, 2T, 500B, 1.4T, 7B or 3000"
            )
        value = float(m.group(1)) * _SUFFIX[m.group(2).lower()]
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise BadInput(f"{what} must be {'>= 0' if allow_zero else '> 0'}, got {text!r}")
    return value


def parse_int_count(text: str | int, what: str = "count", allow_zero: bool = False) -> int:
    value = parse_count(text, what, allow_zero)
    if value != int(value):
        raise BadInput(f"{what} must be a whole number, got {text!r}")
    return int(value)


_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(s|m|min|h|d|w)?\s*$", re.IGNORECASE)
_SECONDS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800, None: 3600}


def parse_duration_s(text: str | float, what: str = "duration") -> float:
    """'48h', '2d', '90m', '30s', plain number = hours -> seconds."""
    m = _DURATION.match(str(text))
    if not m:
        raise BadInput(f"{what} {text!r} is not a duration; use e.g. 30s, 90m, 48h, 2d or 1w")
    unit = m.group(2).lower() if m.group(2) else None
    seconds = float(m.group(1)) * _SECONDS[unit]
    if seconds <= 0:
        raise BadInput(f"{what} must be > 0, got {text!r}")
    return seconds
