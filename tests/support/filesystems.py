"""Real small and read-only file systems for the outbox's disk-fault tests.

* `Tmpfs` mounts a tmpfs of a given size on a directory (``mount -t tmpfs -o size=...``)
  and unmounts it at exit.
* `Ext4Image` mounts a small ext4 image through a loop device with ``errors=remount-ro``;
  `go_read_only()` is ``mount -o remount,abort``: the kernel's own reaction to an I/O error,
  the file system turns read-only under the running process (``emergency_ro``). A plain
  ``mount -o remount,ro`` cannot do that: it fails with EBUSY while any file is open for
  writing, which the outbox always is.

Mounting needs root (CAP_SYS_ADMIN) and loop devices: without them the test is skipped,
saying why.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from types import TracebackType

import pytest


class Tmpfs:
    def __init__(self, path: Path, size: str = "2m") -> None:
        self.path = path
        self.size = size

    def __enter__(self) -> Tmpfs:
        self.path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size},mode=0755", "tmpfs",
             str(self.path)],
            capture_output=True, text=True, check=False,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a {self.size} tmpfs (needs root, CAP_SYS_ADMIN): "
                        f"{done.stderr.strip()}")
        return self

    def remount(self, *, read_only: bool) -> None:
        mode = "ro" if read_only else "rw"
        subprocess.run(["mount", "-o", f"remount,{mode}", str(self.path)], check=True)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)


class Ext4Image:
    def __init__(self, path: Path, size_mib: int = 16) -> None:
        self.path = path
        self.image = path.with_name(path.name + ".img")
        self.size_mib = size_mib

    def __enter__(self) -> Ext4Image:
        self.path.mkdir(parents=True, exist_ok=True)
        with self.image.open("wb") as f:
            f.truncate(self.size_mib * 1024 * 1024)
        steps = [
            ["mkfs.ext4", "-q", "-F", str(self.image)],
            ["mount", "-o", "loop,errors=remount-ro", str(self.image), str(self.path)],
        ]
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                pytest.skip(f"cannot {' '.join(step[:2])} an ext4 image (needs root and "
                            f"loop devices): {done.stderr.strip()}")
        return self

    def go_read_only(self) -> None:
        subprocess.run(["mount", "-o", "remount,abort", str(self.path)], check=True)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.image)


def gateway_yaml(*, gateway_id: str, state_dir: Path, mqtt_port: int, metrics_port: int,
                 devices: list[tuple[str, int]], interval: str = "50ms",
                 points: int = 16) -> str:
    """A gateway polling ``points`` uint16 registers per device: readings of a few hundred
    bytes each, so a small disk fills in seconds."""
    lines = [
        f"gateway: {{id: {gateway_id}, state_dir: {state_dir}}}",
        f"mqtt: {{host: 127.0.0.1, port: {mqtt_port}, qos: 1}}",
        "outbox: {commit_interval: 200ms}",
        f"metrics: {{listen: '127.0.0.1:{metrics_port}'}}",
        "devices:",
    ]
    for name, port in devices:
        lines += [
            f"  - name: {name}",
            f"    driver: modbus-tcp\n    host: 127.0.0.1\n    port: {port}\n    unit: 1",
            f"    interval: {interval}\n    timeout: 1s\n    retries: 0",
            "    points:",
            *(f"      - {{name: p{i:02d}, table: holding, address: {i}, type: uint16}}"
              for i in range(points)),
        ]
    return "\n".join(lines) + "\n"
