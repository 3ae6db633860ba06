"""Durations and sizes: every spelling the docs promise, and clear refusals."""

from __future__ import annotations

import contextlib
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memguard.policy.units import Percent, format_duration, format_size, parse_duration, parse_size

KIB = 1024
MIB = 1024**2
GIB = 1024**3


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (90, 90.0),
        (1.5, 1.5),
        (0, 0.0),
        ("90", 90.0),
        ("90s", 90.0),
        ("20m", 1200.0),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        ("1.5h", 5400.0),
        ("2d", 172800.0),
        ("500ms", 0.5),
        ("1m30s", 90.0),
        (" 20M ", 1200.0),
        ("2.5", 2.5),
    ],
)
def test_parse_duration_accepts(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("20 minutes", '"20 minutes"'),
        ("", '""'),
        ("m", '"m"'),
        ("20x", '"20x"'),
        ("-5s", "negative"),
        ("-5", "negative"),
        (-1, "negative"),
        (True, "True"),
        (None, "None"),
        ([20], "[20]"),
        (math.inf, "finite"),
        (math.nan, "finite"),
        ("1m1m", '"1m1m"'),
        ("1h30", '"1h30"'),
        ("9" * 400, "too large"),
    ],
)
def test_parse_duration_rejects_with_clear_message(value: object, fragment: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(value)
    message = str(caught.value)
    assert fragment in message
    assert '"20m"' in message and '"1h30m"' in message  # says what is allowed


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (0, 0),
        (2048, 2048),
        (2048.0, 2048),
        ("2048", 2048),
        ("812B", 812),
        ("512MB", 512 * MIB),
        ("512mb", 512 * MIB),
        ("512MiB", 512 * MIB),
        ("512M", 512 * MIB),
        ("1.5GiB", int(1.5 * GIB)),
        ("1.5G", int(1.5 * GIB)),
        ("1.5GB", int(1.5 * GIB)),
        ("300 KB", 300 * KIB),
        ("300K", 300 * KIB),
        ("2TB", 2 * 1024**4),
        ("1TiB", 1024**4),
    ],
)
def test_parse_size_accepts(value: object, size: int) -> None:
    assert parse_size(value) == size


def test_kb_mb_gb_are_powers_of_1024() -> None:
    assert parse_size("1KB") == parse_size("1KiB") == 1024
    assert parse_size("1MB") == parse_size("1MiB") == 1024**2
    assert parse_size("1GB") == parse_size("1GiB") == 1024**3


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("512 megabytes", '"512 megabytes"'),
        ("MB", '"MB"'),
        ("-1MB", "negative"),
        (-1, "negative"),
        (1.5, "whole number"),
        ("1.5B", "whole number"),
        (True, "True"),
        (None, "None"),
        ("80%", "percentage"),
        ("5XB", '"5XB"'),
    ],
)
def test_parse_size_rejects_with_clear_message(value: object, fragment: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_size(value)
    message = str(caught.value)
    assert fragment in message
    assert '"512MB"' in message


def test_percent_only_when_allowed() -> None:
    assert parse_size("80%", allow_percent=True) == Percent(0.8)
    assert parse_size(" 12.5 % ", allow_percent=True) == Percent(0.125)
    assert parse_size("512MB", allow_percent=True) == 512 * MIB
    with pytest.raises(ValueError, match='"80%"'):
        parse_size("80%")
    with pytest.raises(ValueError, match="percentage of the limit"):
        parse_size("lots", allow_percent=True)


def test_percent_resolves_and_prints() -> None:
    assert Percent(0.78).of(1000) == 780
    assert Percent(0.5).of(512 * MIB) == 256 * MIB
    assert str(Percent(0.78)) == "78%"
    assert repr(Percent(0.785)) == "78.5%"
    assert str(Percent(0.07)) == "7%"
    with pytest.raises(ValueError):
        Percent(-0.1)
    with pytest.raises(ValueError):
        Percent(math.nan)


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0B"),
        (812, "812B"),
        (3174, "3.1KB"),
        (int(35.2 * MIB), "35.2MB"),
        (512 * MIB, "512.0MB"),
        (int(1.5 * GIB), "1.5GB"),
        (1023 * MIB + 1000 * KIB, "1.0GB"),
        (-2048, "-2.0KB"),
    ],
)
def test_format_size(n: int, text: str) -> None:
    assert format_size(n) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (1200, "20m"),
        (5400, "1h30m"),
        (90, "90s"),
        (1.5, "1.5s"),
        (0.5, "500ms"),
        (0, "0s"),
        (172800, "2d"),
        (3605, "1h5s"),
        (60, "1m"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.integers(min_value=0, max_value=10**7))
def test_duration_round_trips(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@given(st.integers(min_value=0, max_value=2**50))
def test_size_round_trips_within_a_tenth_of_a_unit(n: int) -> None:
    back = parse_size(format_size(n))
    assert isinstance(back, int)
    assert abs(back - n) <= max(n * 0.05 + 1, 1)


@given(st.one_of(st.text(), st.integers(), st.floats(), st.none(), st.booleans()))
def test_parsers_raise_only_value_error(value: object) -> None:
    for parse in (parse_duration, parse_size, lambda v: parse_size(v, allow_percent=True)):
        with contextlib.suppress(ValueError):
            parse(value)
