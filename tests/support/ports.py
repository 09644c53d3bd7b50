"""Free loopback ports (`gateway.sim.ports.free_port`: below the ephemeral range, see there)
and waiting for a server to listen."""

from __future__ import annotations

import socket
import time

from gateway.sim.ports import free_port

__all__ = ["free_port", "wait_for_port"]


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)
