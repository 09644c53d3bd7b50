"""sd_notify against a real unix datagram socket bound by the test."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.runtime import systemd


@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    # a short directory: unix socket paths are limited to 107 bytes
    with tempfile.TemporaryDirectory(prefix="sg-") as directory:
        path = os.path.join(directory, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        try:
            yield sock
        finally:
            sock.close()


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        pytest.param(systemd.ready, b"READY=1", id="ready"),
        pytest.param(lambda: systemd.ready("polling 3 devices"),
                     b"READY=1\nSTATUS=polling 3 devices", id="ready with status"),
        pytest.param(lambda: systemd.status("outbox 12 pending\nok"),
                     b"STATUS=outbox 12 pending ok", id="status newline flattened"),
        pytest.param(systemd.watchdog, b"WATCHDOG=1", id="watchdog"),
        pytest.param(systemd.stopping, b"STOPPING=1", id="stopping"),
        pytest.param(lambda: systemd.notify(errno=5, extend_timeout_usec=True),
                     b"ERRNO=5\nEXTEND_TIMEOUT_USEC=1", id="notify fields"),
    ],
)
def test_notify(notify_socket: socket.socket, call: Callable[[], bool], expected: bytes) -> None:
    assert call() is True
    assert notify_socket.recv(4096) == expected


def test_reloading(notify_socket: socket.socket) -> None:
    assert systemd.reloading() is True
    first, second = notify_socket.recv(4096).split(b"\n")
    assert first == b"RELOADING=1"
    assert second.startswith(b"MONOTONIC_USEC=") and int(second.split(b"=")[1]) > 0


def test_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"sensegate-test-{os.getpid()}-{id(monkeypatch)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.ready() is True
        assert sock.recv(4096) == b"READY=1"


@pytest.mark.parametrize(
    "value",
    [pytest.param(None, id="unset"), pytest.param("", id="empty"),
     pytest.param("vsock:2:1234", id="unsupported scheme")],
)
def test_no_op_off_systemd(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    else:
        monkeypatch.setenv("NOTIFY_SOCKET", value)
    assert systemd.ready() is False
    assert systemd.watchdog() is False


def test_missing_socket_is_not_fatal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert systemd.status("x") is False


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        pytest.param(None, None, None, id="no watchdog"),
        pytest.param("10000000", None, 5.0, id="half of 10 s"),
        pytest.param("10000000", "self", 5.0, id="pid is ours"),
        pytest.param("10000000", "1", None, id="pid is another process"),
        pytest.param("0", None, None, id="zero"),
        pytest.param("abc", None, None, id="garbage"),
    ],
)
def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None,
                           expected: float | None) -> None:
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, str(os.getpid()) if value == "self" else value)
    assert systemd.watchdog_interval() == expected
