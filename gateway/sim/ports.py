"""Free TCP ports for the simulators, the demo and the tests, chosen below the ephemeral range.

A port is often chosen before its server starts, or a server stops and starts again on the
same port (the demo's broker outage, a simulated device that goes away). Meanwhile the
kernel hands its ephemeral ports (`ip_local_port_range`, where binding port 0 lands too) to
outgoing connections, including a client's reconnect attempts to that very port, which may
get that port as its own source port and connect to itself (TCP simultaneous open): the
server could then not bind it. Ports below the range are never handed out by the kernel.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOWEST = 10000  # below: the well-known and registered ports services are configured on
_given: set[int] = set()  # handed out by this process: not twice


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at ``host``, outside the ephemeral range when it can."""
    high = max(_ephemeral_low(), LOWEST + 1000)
    for _ in range(200):
        port = random.randrange(LOWEST, high)
        if port in _given:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
        _given.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:  # a crowded range
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
