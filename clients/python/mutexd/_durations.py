"""Durations as the API reads them: Go durations ("30s", "1500ms", "1m30s"),
a bare whole number of seconds ("30"), or seconds as a Python number or
datetime.timedelta."""

import datetime
import math
import re

from ._errors import InvalidRequest

_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6,
          "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_WHOLE = re.compile(r"[0-9]+")
_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


def seconds(value, name):
    """seconds returns value as a number of seconds (>= 0), or raises
    InvalidRequest with the code the server would use (invalid_<name>)."""
    def bad(why):
        return InvalidRequest(f"{name} {why}; got {value!r}.", code=f"invalid_{name}")

    if isinstance(value, bool):
        raise bad("must be a duration, not a boolean")
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise bad("must be a finite number of seconds, at least 0")
        return float(value)
    if not isinstance(value, str):
        raise bad("must be seconds or a duration string such as \"30s\" or \"1500ms\"")
    text = value.strip()
    if _WHOLE.fullmatch(text):
        return float(int(text))
    pos, total = 0, 0.0
    while pos < len(text):
        m = _PART.match(text, pos)
        if not m:
            raise bad("must be a duration such as \"30s\", \"1500ms\" or \"2m\"")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos == 0:
        raise bad("must be a duration such as \"30s\", \"1500ms\" or \"2m\"")
    return total


def api(secs):
    """api renders seconds the way the API reads durations: whole
    milliseconds (sub-millisecond parts are dropped, as Go's client does)."""
    return f"{int(secs * 1000)}ms"
