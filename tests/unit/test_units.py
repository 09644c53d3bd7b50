from __future__ import annotations

import pytest

from gateway.core.units import format_duration, format_size, parse_duration, parse_size


@pytest.mark.parametrize(("text", "seconds"), [
    pytest.param("500ms", 0.5, id="milliseconds"),
    pytest.param("10s", 10.0, id="seconds"),
    pytest.param("5m", 300.0, id="minutes"),
    pytest.param("1h", 3600.0, id="hours"),
    pytest.param("1d", 86400.0, id="days"),
    pytest.param("1.5s", 1.5, id="fraction"),
    pytest.param(".25s", 0.25, id="leading-dot"),
    pytest.param(" 2 s ", 2.0, id="spaces"),
    pytest.param("7", 7.0, id="bare-string-is-seconds"),
    pytest.param(3, 3.0, id="int-is-seconds"),
    pytest.param(0.1, 0.1, id="float-is-seconds"),
    pytest.param("0s", 0.0, id="zero"),
])
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", [
    pytest.param("5 minutes", id="word-unit"),
    pytest.param("10x", id="unknown-unit"),
    pytest.param("-1s", id="negative"),
    pytest.param("", id="empty"),
    pytest.param("s", id="unit-only"),
    pytest.param(True, id="bool"),
    pytest.param(-2, id="negative-number"),
    pytest.param(float("nan"), id="nan"),
])
def test_parse_duration_rejects(text: str | float) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(("text", "size"), [
    pytest.param("512KiB", 512 * 1024, id="kibibytes"),
    pytest.param("512MiB", 512 * 1024**2, id="mebibytes"),
    pytest.param("1GiB", 1024**3, id="gibibytes"),
    pytest.param("1kB", 1000, id="kilobytes"),
    pytest.param("2MB", 2_000_000, id="megabytes"),
    pytest.param("1GB", 1_000_000_000, id="gigabytes"),
    pytest.param("1.5GiB", int(1.5 * 1024**3), id="fraction-with-unit"),
    pytest.param("100B", 100, id="bytes-unit"),
    pytest.param("4096", 4096, id="bare-string-is-bytes"),
    pytest.param(4096, 4096, id="int-is-bytes"),
    pytest.param("1mib", 1024**2, id="case-insensitive"),
])
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", [
    pytest.param("12 parsecs", id="unknown-unit"),
    pytest.param("1.5", id="fractional-bytes"),
    pytest.param(1.5, id="float"),
    pytest.param(-1, id="negative"),
    pytest.param("MiB", id="unit-only"),
    pytest.param(False, id="bool"),
])
def test_parse_size_rejects(text: str | int) -> None:
    with pytest.raises(ValueError, match=r"size|bytes"):
        parse_size(text)


@pytest.mark.parametrize(("seconds", "text"), [
    pytest.param(0.5, "500ms", id="ms"),
    pytest.param(1.0, "1s", id="s"),
    pytest.param(1.5, "1.5s", id="fraction"),
    pytest.param(300.0, "5m", id="m"),
    pytest.param(7200.0, "2h", id="h"),
    pytest.param(0.0, "0s", id="zero"),
])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(("size", "text"), [
    pytest.param(512 * 1024**2, "512MiB", id="mib"),
    pytest.param(1024**3, "1GiB", id="gib"),
    pytest.param(256 * 1024, "256KiB", id="kib"),
    pytest.param(1000, "1000B", id="bytes"),
])
def test_format_size(size: int, text: str) -> None:
    assert format_size(size) == text
    assert parse_size(text) == size
