"""RS-485 bus time against figures worked out by hand from the serial line spec."""

from __future__ import annotations

import pytest

from gateway.core.bustime import (
    char_time,
    device_scan_time,
    estimate_bus,
    frame_silence,
    response_bytes,
    transaction_time,
)
from gateway.core.model import BusConfig, DeviceConfig, PointConfig, SerialSettings
from gateway.core.plan import ReadRequest


def serial(baud: int, parity: str = "N", stopbits: int = 1, bytesize: int = 8) -> SerialSettings:
    return SerialSettings(port="/dev/null", baudrate=baud, parity=parity,  # type: ignore[arg-type]
                          stopbits=stopbits, bytesize=bytesize)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        pytest.param(serial(9600), 10 / 9600, id="9600 8N1: 10 bits = 1.0417 ms"),
        pytest.param(serial(9600, "E"), 11 / 9600, id="9600 8E1: 11 bits"),
        pytest.param(serial(19200, "N", 2), 11 / 19200, id="19200 8N2: 11 bits"),
        pytest.param(serial(4800, "O", 1, 7), 10 / 4800, id="4800 7O1: 10 bits"),
    ],
)
def test_char_time(settings: SerialSettings, expected: float) -> None:
    assert char_time(settings) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        pytest.param(serial(9600), 3.5 * 10 / 9600, id="9600: 3.5 chars = 3.6458 ms"),
        pytest.param(serial(19200), 3.5 * 10 / 19200, id="19200: still 3.5 chars = 1.8229 ms"),
        pytest.param(serial(38400), 0.00175, id="38400: fixed 1.75 ms"),
        pytest.param(serial(115200), 0.00175, id="115200: fixed 1.75 ms"),
    ],
)
def test_frame_silence(settings: SerialSettings, expected: float) -> None:
    assert frame_silence(settings) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        pytest.param(ReadRequest("holding", 0, 10, ()), 25, id="10 registers: 5 + 20"),
        pytest.param(ReadRequest("input", 0, 125, ()), 255, id="125 registers: 5 + 250"),
        pytest.param(ReadRequest("coil", 0, 1, ()), 6, id="1 coil: 5 + 1"),
        pytest.param(ReadRequest("discrete", 0, 9, ()), 7, id="9 bits: 5 + 2"),
        pytest.param(ReadRequest("coil", 0, 2000, ()), 255, id="2000 bits: 5 + 250"),
    ],
)
def test_response_bytes(request_: ReadRequest, expected: int) -> None:
    assert response_bytes(request_) == expected


@pytest.mark.parametrize(
    ("bus", "request_", "expected"),
    [
        # 9600 8N1, 10 holding registers: 8 + 25 bytes = 33 chars, 2 silences = 7 chars,
        # 40 chars x 1.0417 ms = 41.667 ms, + 10 ms turnaround = 51.667 ms
        pytest.param(BusConfig("a", serial(9600)), ReadRequest("holding", 0, 10, ()),
                     40 * 10 / 9600 + 0.010, id="9600 8N1 10 registers"),
        # 38400 8E1, 2 coils: 8 + 6 bytes x 11 bits / 38400 = 4.0104 ms, 2 x 1.75 ms,
        # 20 ms turnaround, 5 ms frame gap: 32.510 ms
        pytest.param(BusConfig("a", serial(38400, "E"), frame_gap=0.005, turnaround=0.02),
                     ReadRequest("coil", 0, 2, ()),
                     14 * 11 / 38400 + 2 * 0.00175 + 0.02 + 0.005, id="38400 8E1 2 coils"),
    ],
)
def test_transaction_time(bus: BusConfig, request_: ReadRequest, expected: float) -> None:
    assert transaction_time(bus, request_) == pytest.approx(expected)


def rtu(name: str, points: tuple[PointConfig, ...], interval: float = 1.0,
        bus: str = "a") -> DeviceConfig:
    return DeviceConfig(name=name, driver="modbus-rtu", bus=bus, points=points, interval=interval)


HOLDING_0_9 = (PointConfig("a", "uint16", "holding", 0), PointConfig("b", "float32", "holding", 8))
TWO_REQUESTS = (PointConfig("a", "uint16", "holding", 0), PointConfig("c", "bool", "coil", 0))


def test_device_scan_time() -> None:
    bus = BusConfig("a", serial(9600))
    # one request of 10 registers (0..9): 51.667 ms as above
    assert device_scan_time(bus, rtu("d", HOLDING_0_9)) == pytest.approx(0.051667, abs=1e-6)
    # 1 register (8 + 7 bytes) and 1 coil (8 + 6 bytes): 29 chars + 4 silences (14 chars)
    # = 43 chars = 44.792 ms, + 2 x 10 ms turnaround = 64.792 ms
    assert device_scan_time(bus, rtu("d", TWO_REQUESTS)) == pytest.approx(43 * 10 / 9600 + 0.02)


def test_estimate_bus() -> None:
    bus = BusConfig("a", serial(9600))
    devices = [
        rtu("one", HOLDING_0_9, interval=1.0),
        rtu("two", TWO_REQUESTS, interval=0.5),
        rtu("elsewhere", HOLDING_0_9, bus="b"),
        DeviceConfig(name="tcp", driver="modbus-tcp", host="h", points=HOLDING_0_9),
    ]
    estimate = estimate_bus(bus, devices)
    assert estimate.bus == "a"
    assert sorted(estimate.scan_time) == ["one", "two"]
    assert estimate.requests == {"one": 1, "two": 2}
    # 51.667 ms / 1 s + 64.792 ms / 0.5 s = 0.051667 + 0.129583 = 0.18125
    assert estimate.utilisation == pytest.approx(0.18125, abs=1e-6)
    assert not estimate.overloaded


def test_estimate_bus_overloaded() -> None:
    bus = BusConfig("a", serial(1200))
    # 1200 8N1: 40 chars x 8.333 ms = 333 ms + 10 ms per scan, every 0.2 s
    estimate = estimate_bus(bus, [rtu("slow", HOLDING_0_9, interval=0.2)])
    assert estimate.utilisation == pytest.approx((40 * 10 / 1200 + 0.01) / 0.2)
    assert estimate.overloaded


def test_estimate_bus_counts_interval_groups() -> None:
    bus = BusConfig("a", serial(9600))
    # 'a' every 10 s, 'c' (a coil, so its own request) every 1 s: each group at its own rate
    points = (PointConfig("a", "uint16", "holding", 0),
              PointConfig("c", "bool", "coil", 0, interval=1.0))
    estimate = estimate_bus(bus, [rtu("mixed", points, interval=10.0)])
    register = (8 + 7 + 7) * 10 / 9600 + 0.01  # request, response, 2 silences, turnaround
    coil = (8 + 6 + 7) * 10 / 9600 + 0.01
    assert estimate.requests == {"mixed": 2}
    assert estimate.scan_time["mixed"] == pytest.approx(register + coil)
    assert estimate.utilisation == pytest.approx(register / 10 + coil / 1)
    assert estimate.rate == pytest.approx(1 / 10 + 1 / 1)
    # the same points all at 1 s cost more: both requests every second
    assert estimate_bus(bus, [rtu("fast", (*points[:1], PointConfig("c", "bool", "coil", 0)),
                                  interval=1.0)]).rate == pytest.approx(2.0)
