"""Human units in recipes: token counts like ``20M`` and durations like ``4h``.

Both parsers accept the plain number too, so a value may come from YAML as an int or a string.
"""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import BeforeValidator

_COUNT_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}
_COUNT_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?(?:e[0-9]+)?)\s*([kmbgt]?)\s*$", re.IGNORECASE)

_DURATION_UNITS = {
    "s": 1 / 60,
    "sec": 1 / 60,
    "min": 1,
    "m": 1,
    "h": 60,
    "hr": 60,
    "d": 24 * 60,
    "day": 24 * 60,
}
_DURATION_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?)\s*([a-z]+)\s*$", re.IGNORECASE)
_CLOCK_RE = re.compile(r"^\s*(?:(\d+)-)?(\d+):(\d{2}):(\d{2})\s*$")


def parse_count(value: object) -> object:
    """``"2M"`` → 2_000_000, ``"1.5B"`` → 1_500_000_000; ints pass through; anything else is
    returned unchanged so pydantic reports the type error."""
    if isinstance(value, bool) or not isinstance(value, (str, float)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise ValueError(f"expected a whole number, got {value!r}")
        return int(value)
    match = _COUNT_RE.match(value)
    if not match:
        raise ValueError(
            f"bad count {value!r}: use a number with an optional K/M/B suffix, e.g. 20M"
        )
    number = float(match.group(1)) * _COUNT_SUFFIX[match.group(2).lower()]
    if number != int(number):
        raise ValueError(f"bad count {value!r}: not a whole number")
    return int(number)


def parse_minutes(value: object) -> object:
    """Durations as whole minutes (SLURM's unit): ``"4h"`` → 240, ``"30min"`` → 30,
    ``"1-02:00:00"`` → 1560; a bare int is minutes."""
    if isinstance(value, bool) or not isinstance(value, str):
        return value
    if clock := _CLOCK_RE.match(value):
        days, hours, minutes, seconds = (int(part or 0) for part in clock.groups())
        return max(1, math.ceil(days * 1440 + hours * 60 + minutes + seconds / 60))
    match = _DURATION_RE.match(value)
    if not match or match.group(2).lower() not in _DURATION_UNITS:
        raise ValueError(f"bad duration {value!r}: use e.g. 90s, 30min, 4h, 2d or HH:MM:SS")
    return max(1, math.ceil(float(match.group(1)) * _DURATION_UNITS[match.group(2).lower()]))


Count = Annotated[int, BeforeValidator(parse_count)]
Minutes = Annotated[int, BeforeValidator(parse_minutes)]
