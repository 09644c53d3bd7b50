"""A real Mosquitto broker on a free loopback port, owned by a test.

`stop()` and `start()` make real outages (the process is terminated, not paused); the
broker keeps persistent sessions in memory across `stop(kill=False)` only when
`persistence` is on, which writes to the broker's own temp dir.
"""

from __future__ import annotations

import os
import shutil

from tests.support.ports import free_port, wait_for_port
from tests.support.server import ServerProcess

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class Mosquitto(ServerProcess):
    log_name = "mosquitto.log"
    close_kills = False  # a terminated broker saves its persistence file

    def __init__(
        self,
        *,
        port: int | None = None,
        extra_conf: str = "",
        persistence: bool = True,
        allow_anonymous: bool = True,
    ) -> None:
        super().__init__("sensegate-mosq-")
        self.port = port or free_port()
        self.conf = self.dir / "mosquitto.conf"
        lines = [
            # As root, Mosquitto drops to user `mosquitto`, which can read neither its own
            # 0700 persistence dir nor a password file the test wrote: persistent sessions
            # would silently vanish across stop()/start(). Stay root instead.
            *(["user root"] if os.geteuid() == 0 else []),
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'true' if allow_anonymous else 'false'}",
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {self.dir}/",
            "autosave_interval 1",
            "max_queued_messages 0",
            "max_inflight_messages 100",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
        ]
        self.conf.write_text("\n".join(lines) + "\n" + extra_conf)

    def command(self) -> list[str]:
        return [MOSQUITTO, "-c", str(self.conf)]

    def wait_ready(self) -> None:
        wait_for_port(self.port)
