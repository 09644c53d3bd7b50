"""RS-485 bus time per scan, from the Modbus over Serial Line spec (V1.02, §2.5.1.1).

An RS-485 line carries one transaction at a time, so the devices on a bus share its time:
``sensegate check`` prints, for each bus, the time one scan of each device occupies and the
bus utilisation (Σ scan time / interval), and the requests per second. Past 100 % scans
must overrun. A device whose points have their own ``interval`` is counted per interval
group (`gateway.core.plan.interval_groups`): each group's requests at its own interval.

Figures, for Modbus RTU:

* a character is 1 start bit + ``bytesize`` data bits + 1 parity bit (unless parity ``N``)
  + ``stopbits`` stop bits; its time is that many bits / baud rate;
* frames are separated by a silence of 3.5 character times; above 19200 baud the spec
  fixes it at 1.75 ms (so the timer does not depend on fast UARTs);
* a read request (function codes 1-4) is 8 bytes: address, function, start (2),
  quantity (2), CRC (2); the response is 5 + N bytes: address, function, byte count,
  N data bytes, CRC (2), with N = 2 x registers (FC 3/4) or ceil(bits / 8) (FC 1/2);
* one transaction = request frame + silence + device turnaround (``bus.turnaround``, the
  allowance for the device's reply latency) + response frame + silence + ``bus.frame_gap``.

Retries and timeouts are not included: this is the time of a healthy scan. Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from gateway.core.model import BIT_TABLES, BusConfig, DeviceConfig, SerialSettings
from gateway.core.plan import ReadRequest, plan_groups

REQUEST_BYTES = 8  # FC 1-4: address, function, start (2), quantity (2), CRC (2)
RESPONSE_OVERHEAD_BYTES = 5  # address, function, byte count, CRC (2)
FAST_BAUD = 19200  # above this the spec fixes the inter-frame silence
FAST_SILENCE = 0.00175  # seconds, t3.5 above 19200 baud


@dataclass(frozen=True, slots=True)
class BusEstimate:
    """Bus time of one scan of each device on ``bus`` and the share of the bus they use."""

    bus: str
    scan_time: dict[str, float]  # device name -> seconds of bus time per scan (all groups)
    requests: dict[str, int]  # device name -> read requests per scan (all groups)
    utilisation: float  # Σ scan_time / interval; 1.0 = the bus is busy all the time
    requests_per_second: dict[str, float] = field(default_factory=dict)  # per device

    @property
    def rate(self) -> float:
        """Requests per second on the bus at the configured intervals."""
        return sum(self.requests_per_second.values())

    @property
    def overloaded(self) -> bool:
        """True when the devices need more bus time than there is."""
        return self.utilisation > 1.0


def char_time(serial: SerialSettings) -> float:
    """Seconds one character takes on the line."""
    bits = 1 + serial.bytesize + (0 if serial.parity == "N" else 1) + serial.stopbits
    return bits / serial.baudrate


def frame_silence(serial: SerialSettings) -> float:
    """Inter-frame silence t3.5: 3.5 characters, fixed 1.75 ms above 19200 baud."""
    if serial.baudrate > FAST_BAUD:
        return FAST_SILENCE
    return 3.5 * char_time(serial)


def response_bytes(request: ReadRequest) -> int:
    """Bytes of the RTU response to a read request."""
    bits = request.table in BIT_TABLES
    return RESPONSE_OVERHEAD_BYTES + (math.ceil(request.count / 8) if bits else 2 * request.count)


def transaction_time(bus: BusConfig, request: ReadRequest) -> float:
    """Seconds of bus time one read takes, request to the end of the following gap."""
    char = char_time(bus.serial)
    silence = frame_silence(bus.serial)
    return (
        REQUEST_BYTES * char
        + silence
        + bus.turnaround
        + response_bytes(request) * char
        + silence
        + bus.frame_gap
    )


def device_scan_time(bus: BusConfig, device: DeviceConfig) -> float:
    """Seconds of bus time one scan of every interval group of ``device`` takes."""
    return sum(transaction_time(bus, r) for _, plan in plan_groups(device) for r in plan)


def estimate_bus(bus: BusConfig, devices: Iterable[DeviceConfig]) -> BusEstimate:
    """Bus time per scan of the devices on ``bus``; devices on other buses are ignored."""
    scan_time: dict[str, float] = {}
    requests: dict[str, int] = {}
    rates: dict[str, float] = {}
    utilisation = 0.0
    for device in devices:
        if device.driver != "modbus-rtu" or device.bus != bus.name:
            continue
        scan_time[device.name] = 0.0
        requests[device.name] = 0
        rates[device.name] = 0.0
        for interval, plan in plan_groups(device):
            seconds = sum(transaction_time(bus, r) for r in plan)
            scan_time[device.name] += seconds
            requests[device.name] += len(plan)
            if interval > 0:
                utilisation += seconds / interval
                rates[device.name] += len(plan) / interval
            else:
                utilisation = math.inf
    return BusEstimate(bus.name, scan_time, requests, utilisation, rates)
