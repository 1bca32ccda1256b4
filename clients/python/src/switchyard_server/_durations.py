"""Durations as the server writes them (``"30s"``, ``"500ms"``, ``"24h"``, ``"7d"``)
and as Python programs hold them (seconds as numbers, ``timedelta``)."""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta
from typing import Union

#: What every ``ttl``, ``history_ttl``, ``after``... argument takes.
Duration = Union[int, float, timedelta, str]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")


def to_seconds(value: Duration, *, what: str = "duration") -> float:
    """Seconds in ``value``: a number of seconds, a ``timedelta`` or a string of
    ``<number><unit>`` parts (``ms s m h d``, e.g. ``"1h30m"``)."""
    if isinstance(value, bool):
        raise TypeError(f"{what} must be seconds, a timedelta or a string like '30s'")
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        pos, seconds = 0, 0.0
        for m in _PART.finditer(text):
            if text[pos : m.start()].strip():
                break
            seconds += float(m.group(1)) * _UNITS[m.group(2)]
            pos = m.end()
        if pos == 0 or text[pos:].strip():
            raise ValueError(f"{what}: cannot read {value!r} (use e.g. '30s', '500ms', '24h')")
    else:
        raise TypeError(f"{what} must be seconds, a timedelta or a string like '30s'")
    if seconds < 0 or math.isnan(seconds) or math.isinf(seconds):
        raise ValueError(f"{what} must be a finite duration >= 0")
    return seconds


def whole_seconds(value: Duration, *, what: str = "duration") -> int:
    """Whole seconds, rounded up (a TTL never ends earlier than asked)."""
    return int(math.ceil(to_seconds(value, what=what)))


def to_duration_string(value: Duration, *, what: str = "duration") -> str:
    """The server's notation: strings pass through (checked), numbers become
    ``"<n>s"`` or ``"<n>ms"``."""
    if isinstance(value, str):
        to_seconds(value, what=what)
        return value.strip()
    seconds = to_seconds(value, what=what)
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{int(math.ceil(seconds * 1000))}ms"


def unix_seconds(value: int | float | datetime | None) -> int | None:
    """Unix seconds from a number or a datetime (naive datetimes are local time)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return int(value.timestamp())
    return int(value)
