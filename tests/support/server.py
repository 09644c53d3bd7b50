"""A server process owned by a test: its temp dir, its log, start, stop (a real outage) and close.

Subclasses say how to start (`command`) and how to tell it is ready (`wait_ready`); the
data dir is kept across `stop()`/`start()`, so what was stored before an outage is still
there after it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Self


class ServerProcess:
    log_name = "server.log"
    close_kills = True  # close() with SIGKILL (fast) or SIGTERM (lets the server save state)
    start_timeout = 30.0

    def __init__(self, prefix: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=prefix))
        self.log = self.dir / self.log_name
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def wait_ready(self) -> None:
        raise NotImplementedError

    def after_start(self) -> None:
        """Runs after every start, once the server is ready."""

    def start(self) -> Self:
        if self.proc is not None and self.proc.poll() is None:
            return self
        with self.log.open("ab") as logf:
            self.proc = subprocess.Popen(
                self.command(), stdout=logf, stderr=logf, stdin=subprocess.DEVNULL
            )
        self.wait_ready()
        self.after_start()
        return self

    def stop(self, *, kill: bool = False) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        self.stop(kill=self.close_kills)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_http(self, url: str, status: int) -> None:
        """Poll `url` until it answers `status`; fail early if the process died."""
        assert self.proc is not None
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == status:
                        return
            except (OSError, urllib.error.URLError):
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.command()[0]} exited: {self.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer {status}")
            time.sleep(0.05)
