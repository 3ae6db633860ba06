"""Durations and sizes as people write them, and back.

Policies, decorator arguments and environment variables all accept human values (`"20m"`,
`"1h30m"`, `"512MB"`, `"80%"`); this module is the one place that turns them into seconds and
bytes, so every surface accepts the same spellings and fails with the same clear message.

Sizes follow Heroku's quotas and DESIGN section 5: `KB`, `MB`, `GB`, `TB` (and `K`, `M`, `G`,
`T`) are powers of 1024, exactly like `KiB`, `MiB`, `GiB`, `TiB`.
"""

from __future__ import annotations

import math
import re
from typing import Union

import attrs

_DURATION_UNITS: dict[str, float] = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
# re.ASCII: digits are 0-9 only (Arabic-Indic or fullwidth digits are refused, not read).
_DURATION_PART = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h|d)",
                            re.IGNORECASE | re.ASCII)
_PLAIN_NUMBER = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*", re.ASCII)
#: What a duration may look like; error messages end with this, then the bad value.
DURATION_HELP = 'expected a duration such as 90, "90s", "20m", "1h30m", "1.5h", "2d", "500ms"'

_SIZE_MULTIPLIERS: dict[str, int] = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tb": 1024**4,
    "tib": 1024**4,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*([a-z]*)\s*", re.IGNORECASE | re.ASCII)
_PERCENT = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*%\s*", re.ASCII)
#: The largest values accepted anywhere: bigger ones are typos, and would overflow the float
#: arithmetic of every later check (a policy accepted at load must never fail at use).
MAX_DURATION = 100 * 365 * 86400.0  # a century, in seconds
MAX_SIZE = 2**60  # one exbibyte
MAX_COUNT = 10**12
#: What a size may look like (and, for thresholds, a percentage).
SIZE_HELP = 'expected a size such as 1048576, "512MB", "1.5GiB", "300 KB"'
PERCENT_HELP = ' or a percentage of the limit such as "80%"'


def show_value(value: object) -> str:
    """The bad value as an error message shows it: strings quoted and escaped onto one line
    (as TOML and JSON write them), others as repr; a huge integer by its size (its repr
    could itself fail, past Python's int-to-text digit limit)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**30:
        digits = int(value.bit_length() * math.log10(2)) + 1
        return f"{'a negative' if value < 0 else 'an'} integer of about {digits} digits"
    if isinstance(value, str) and len(value) > 200:
        return show_value(value[:100]) + f"... ({len(value)} characters)"
    if isinstance(value, str):
        import json  # error messages only: not loaded by ordinary use

        body = json.dumps(value, ensure_ascii=False)[1:-1]  # quotes and backslashes escaped
        return '"' + "".join(char if char.isprintable() else _escape(char) for char in body) + '"'
    return repr(value)


def _escape(char: str) -> str:
    """A character that would break or hide in a line of text, as a TOML/JSON escape."""
    code = ord(char)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def parse_duration(value: object) -> float:
    """Seconds from a number (seconds) or a string such as `"90s"`, `"20m"`, `"1h30m"`.

    Accepted units: `ms`, `s`, `m`, `h`, `d`; parts add up (`"1h30m"`, `"1h 30m"`); a bare
    number, as a number or a string, is seconds. Booleans, negative, infinite or NaN values
    are rejected with a `ValueError` naming the value and what is allowed.
    """
    if isinstance(value, bool):
        raise ValueError(f"{DURATION_HELP}; got {show_value(value)}")
    if isinstance(value, (int, float)):
        if isinstance(value, int) and abs(value) > MAX_DURATION:
            seconds = math.inf if value > 0 else -math.inf  # float() of it could overflow
        else:
            seconds = float(value)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{DURATION_HELP}; got {show_value(value)} (must be finite)")
        if seconds < 0:
            raise ValueError(f"{DURATION_HELP}; got {show_value(value)} (must not be negative)")
        return _bounded_duration(seconds, value)
    if not isinstance(value, str):
        raise ValueError(f"{DURATION_HELP}; got {show_value(value)} ({type(value).__name__})")
    plain = _PLAIN_NUMBER.fullmatch(value)
    total = float(plain.group(1)) if plain else _sum_duration_parts(value)
    return _bounded_duration(total, value)


def _bounded_duration(seconds: float, value: object) -> float:
    if not seconds <= MAX_DURATION:
        raise ValueError(f"{DURATION_HELP}; got {show_value(value)} (too large: at most "
                         "100 years)")
    return seconds


def _sum_duration_parts(value: str) -> float:
    """Seconds in `value`, a run of number-unit parts such as `1h30m`; each unit at most once."""
    text = value.strip()
    if not text:
        raise ValueError(f"{DURATION_HELP}; got {show_value(value)}")
    total = 0.0
    position = 0
    seen: set[str] = set()
    while position < len(text):
        match = _DURATION_PART.match(text, position)
        unit = match.group(2).lower() if match else ""
        if match is None or unit in seen:
            negative = text.startswith("-")
            hint = " (must not be negative)" if negative else ""
            raise ValueError(f"{DURATION_HELP}; got {show_value(value)}{hint}")
        seen.add(unit)
        total += float(match.group(1)) * _DURATION_UNITS[unit]
        position = match.end()
    return total


@attrs.frozen(repr=False)
class Percent:
    """A share of the memory limit, such as `80%` (`fraction=0.8`).

    Kept unresolved until the limit is known: with `limit = "auto"` only the monitor knows the
    container's or machine's limit, at run time.
    """

    fraction: float = attrs.field(converter=float)

    @fraction.validator
    def _check(self, attribute: attrs.Attribute[float], value: float) -> None:
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"a percentage must be finite and not negative; got {value!r}")

    def of(self, limit: int) -> int:
        """This share of `limit` bytes, in whole bytes."""
        return round(limit * self.fraction)

    def __str__(self) -> str:
        return f"{round(self.fraction * 100, 6):g}%"

    def __repr__(self) -> str:
        return str(self)


def parse_size(value: object, *, allow_percent: bool = False) -> Union[int, Percent]:
    """Bytes from an int or a string such as `"512MB"`, `"1.5GiB"`, `"300 KB"`, `"2048"`.

    `K`/`KB`/`KiB`, `M`/`MB`/`MiB`, `G`/`GB`/`GiB`, `T`/`TB`/`TiB` are powers of 1024; `B` or
    no unit is bytes. With `allow_percent`, `"80%"` gives `Percent(0.8)` (a share of the
    limit). Anything else raises `ValueError` naming the value and what is allowed.
    """
    help_text = SIZE_HELP + (PERCENT_HELP if allow_percent else "")
    if isinstance(value, bool):
        raise ValueError(f"{help_text}; got {show_value(value)}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{help_text}; got {show_value(value)} (must not be negative)")
        return _bounded_size(value, value, help_text)
    if isinstance(value, float):
        if not math.isfinite(value) or value < 0 or not value.is_integer():
            raise ValueError(f"{help_text}; got {value!r} (must be a whole number of bytes)")
        return _bounded_size(value, value, help_text)
    if not isinstance(value, str):
        raise ValueError(f"{help_text}; got {show_value(value)} ({type(value).__name__})")
    percent = _PERCENT.fullmatch(value)
    if percent:
        if not allow_percent:
            raise ValueError(
                f"{SIZE_HELP}; got {show_value(value)} (a percentage needs a memory limit and is "
                "allowed only for memory thresholds)"
            )
        return Percent(float(percent.group(1)) / 100)
    match = _SIZE.fullmatch(value)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _SIZE_MULTIPLIERS:
        hint = " (must not be negative)" if value.strip().startswith("-") else ""
        raise ValueError(f"{help_text}; got {show_value(value)}{hint}")
    number = float(match.group(1))
    multiplier = _SIZE_MULTIPLIERS[unit]
    if multiplier == 1 and not number.is_integer():
        raise ValueError(f"{help_text}; got {show_value(value)} (must be a whole number of bytes)")
    return _bounded_size(number * multiplier, value, help_text)


def _bounded_size(size: float, value: object, help_text: str) -> int:
    if not size <= MAX_SIZE:  # NaN and infinity included
        raise ValueError(f"{help_text}; got {show_value(value)} (too large: at most 1 EiB, "
                         f"{MAX_SIZE} bytes)")
    return round(size)


def format_size(n: Union[int, float]) -> str:
    """A byte count for people: `"812B"`, `"3.1KB"`, `"35.2MB"`, `"1.5GB"` (1024-based)."""
    size = float(n)
    sign = "-" if size < 0 else ""
    size = abs(size)
    if size < 1024:
        return f"{sign}{size:.0f}B"
    for unit in ("KB", "MB", "GB", "TB"):
        size /= 1024
        if round(size, 1) < 1024 or unit == "TB":
            return f"{sign}{size:.1f}{unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def format_duration(seconds: float) -> str:
    """Seconds for people, in the spelling `parse_duration` reads back.

    Whole minutes compose (`"20m"`, `"1h30m"`, `"2d"`); other whole seconds under an hour stay
    in seconds (`"90s"`), longer ones compose with seconds (`"1h5s"`);
    fractions show as `"1.5s"` or `"500ms"`.
    """
    if not math.isfinite(seconds):
        return str(seconds)
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if seconds == 0:
        return "0s"
    if seconds < 1:
        millis = round(seconds * 1000, 3)
        return f"{millis:g}ms"
    if not float(seconds).is_integer():
        return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"
    whole = int(seconds)
    if whole % 60 and whole < 3600:
        return f"{whole}s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, whole = divmod(whole, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def positive_duration(value: object) -> float:
    """A duration above zero, in seconds."""
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"{DURATION_HELP}; got {show_value(value)} (must be more than zero)")
    return seconds


def positive_count(value: object) -> int:
    """A whole number above zero (a count of jobs)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(
            f"expected a whole number above zero such as 50; got {show_value(value)} "
            f"({type(value).__name__})"
        )
    if value <= 0:
        raise ValueError(f"expected a whole number above zero such as 50; got {show_value(value)}")
    if value > MAX_COUNT:
        raise ValueError(f"expected a whole number above zero such as 50; got "
                         f"{show_value(value)} (too large: at most {MAX_COUNT})")
    return value


def positive_size(value: object) -> int:
    """A size above zero, in bytes."""
    size = parse_size(value)
    if not isinstance(size, int) or size <= 0:
        raise ValueError(f"{SIZE_HELP}; got {show_value(value)} (must be more than zero)")
    return size
