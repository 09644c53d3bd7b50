"""A real RabbitMQ cluster (3.10, Debian `rabbitmq-server`) on free loopback ports, owned by a test.

Every node has its own name (`sgN@localhost`), AMQP, MQTT and Erlang distribution ports,
data and log dirs under one temp dir; the cluster has its own Erlang cookie (a temp HOME
with `.erlang.cookie`) and its own `epmd` on a free port (`ERL_EPMD_PORT`), so nothing is
shared with another RabbitMQ on the machine and no well-known port is used. The
distribution listens on 127.0.0.1 only (`inet_dist_use_interface`). `rabbitmq_mqtt` is
enabled offline through `RABBITMQ_ENABLED_PLUGINS_FILE`; nodes 2.. join node 1 with
`rabbitmqctl join_cluster`.

    with RabbitCluster(3) as cluster:
        cluster.nodes[0].mqtt_port, cluster.amqp_urls()
        cluster.kill(1); cluster.restart(1)        # kill -9 and start again, data kept
        cluster.queue_leader("sensegate")          # the node index of a quorum queue's leader

    with RabbitCluster(1, tls=make_pki(dir)) as one:   # also an AMQPS listener per node
        one.nodes[0].amqps_port                          # server cert of the test CA
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from tests.support.certs import Pki
from tests.support.ports import free_port, wait_for_port

SBIN = Path("/usr/lib/rabbitmq/bin")
SERVER = str(SBIN / "rabbitmq-server")
CTL = str(SBIN / "rabbitmqctl")
QUEUES = str(SBIN / "rabbitmq-queues")
EPMD = shutil.which("epmd") or "/usr/bin/epmd"
START_TIMEOUT = 120.0


def available() -> bool:
    return Path(SERVER).exists() and Path(EPMD).exists()


@dataclass
class Node:
    index: int
    name: str
    amqp_port: int
    mqtt_port: int
    dist_port: int
    dir: Path
    amqps_port: int = 0  # with tls: the AMQP-over-TLS listener
    proc: subprocess.Popen[bytes] | None = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class RabbitCluster:
    def __init__(self, size: int = 3, *, tls: Pki | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="sensegate-rabbit-"))
        self.home = self.dir / "home"
        self.home.mkdir()
        cookie = self.home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16))
        cookie.chmod(0o400)
        self.epmd_port = free_port()
        self.epmd: subprocess.Popen[bytes] | None = None
        self.plugins = self.dir / "enabled_plugins"
        self.plugins.write_text("[rabbitmq_mqtt].\n")
        tag = secrets.token_hex(3)
        self.nodes = [
            Node(i, f"sg{tag}{i}@localhost", free_port(), free_port(), free_port(),
                 self.dir / f"node{i}")
            for i in range(size)
        ]
        for node in self.nodes:
            node.dir.mkdir()
            ssl: list[str] = []
            if tls is not None:
                node.amqps_port = free_port()
                ssl = [
                    f"listeners.ssl.default = 127.0.0.1:{node.amqps_port}",
                    f"ssl_options.cacertfile = {tls.ca_cert}",
                    f"ssl_options.certfile = {tls.server_cert}",
                    f"ssl_options.keyfile = {tls.server_key}",
                    "ssl_options.verify = verify_none",
                    "ssl_options.fail_if_no_peer_cert = false",
                ]
            (node.dir / "rabbitmq.conf").write_text("\n".join([*ssl,
                f"listeners.tcp.default = 127.0.0.1:{node.amqp_port}",
                f"mqtt.listeners.tcp.default = 127.0.0.1:{node.mqtt_port}",
                "mqtt.allow_anonymous = true",
                "mqtt.durable_queue_type = quorum",
                "log.console = false",
                "log.file.level = warning",
                "cluster_partition_handling = pause_minority",
                "vm_memory_high_watermark.relative = 0.2",
                "disk_free_limit.absolute = 50MB",
                "",
            ]))

    # -- processes ---------------------------------------------------------------------

    def env(self, node: Node | None = None) -> dict[str, str]:
        env = {
            **os.environ,
            "HOME": str(self.home),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.plugins),
        }
        if node is not None:
            env.update({
                "RABBITMQ_NODENAME": node.name,
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                "RABBITMQ_NODE_PORT": str(node.amqp_port),
                "RABBITMQ_DIST_PORT": str(node.dist_port),
                "RABBITMQ_CONFIG_FILE": str(node.dir / "rabbitmq.conf"),
                "RABBITMQ_MNESIA_BASE": str(node.dir / "mnesia"),
                "RABBITMQ_LOG_BASE": str(node.dir / "log"),
                "RABBITMQ_PID_FILE": str(node.dir / "pid"),
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS":
                    "-kernel inet_dist_use_interface {127,0,0,1}",
            })
        return env

    def ctl(self, node: Node, *args: str, tool: str = CTL, timeout: float = 60.0) -> str:
        done = subprocess.run(
            [tool, "-n", node.name, *args], env=self.env(), capture_output=True,
            timeout=timeout, check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} on {node.name}: "
                               f"{done.stdout.decode()[-1000:]}{done.stderr.decode()[-1000:]}")
        return done.stdout.decode()

    def _spawn(self, node: Node) -> None:
        with (node.dir / "console.log").open("ab") as log:
            node.proc = subprocess.Popen(
                [SERVER], env=self.env(node), stdout=log, stderr=log,
                stdin=subprocess.DEVNULL, cwd=node.dir, start_new_session=True,
            )

    def _wait(self, node: Node) -> None:
        assert node.proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        for port in (node.amqp_port, node.mqtt_port, node.amqps_port):
            if not port:
                continue
            while True:
                if node.proc.poll() is not None:
                    log = (node.dir / "console.log").read_text(errors="replace")
                    raise RuntimeError(f"{node.name} exited: {log[-3000:]}")
                try:
                    wait_for_port(port, timeout=1.0)
                    break
                except TimeoutError:
                    if time.monotonic() > deadline:
                        raise
        self.ctl(node, "await_startup", timeout=START_TIMEOUT)

    def start(self) -> Self:
        self.epmd = subprocess.Popen(
            [EPMD, "-port", str(self.epmd_port), "-address", "127.0.0.1"],
            env=self.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.epmd_port)
        for node in self.nodes:
            self._spawn(node)
        for node in self.nodes:
            self._wait(node)
        first = self.nodes[0]
        for node in self.nodes[1:]:
            self.ctl(node, "stop_app")
            self.ctl(node, "join_cluster", first.name)
            self.ctl(node, "start_app")
        for node in self.nodes[1:]:
            self._wait(node)
        return self

    def kill(self, index: int) -> None:
        """kill -9 one node (its whole process group: the Erlang VM and its helpers)."""
        node = self.nodes[index]
        if node.proc is None or node.proc.poll() is not None:
            return
        os.killpg(node.proc.pid, 9)
        node.proc.wait()

    def restart(self, index: int) -> None:
        node = self.nodes[index]
        if node.alive:
            return
        self._spawn(node)
        self._wait(node)

    def close(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                os.killpg(node.proc.pid, 9)
                node.proc.wait()
        if self.epmd is not None and self.epmd.poll() is None:
            self.epmd.kill()
            self.epmd.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- views -------------------------------------------------------------------------

    def amqp_urls(self) -> list[str]:
        return [f"amqp://guest:guest@127.0.0.1:{n.amqp_port}/" for n in self.nodes]

    def any_alive(self) -> Node:
        return next(n for n in self.nodes if n.alive)

    def _queue_column(self, queue: str, column: str) -> str:
        """One column of `rabbitmqctl list_queues` for `queue` (LookupError: no such queue)."""
        out = self.ctl(self.any_alive(), "list_queues", "-q", "--no-table-headers",
                       "name", column)
        for line in out.splitlines():
            parts = line.split(None, 1)
            if len(parts) == 2 and parts[0] == queue:
                return parts[1].strip()
        raise LookupError(f"no queue {queue!r}: {out!r}")

    def queue_leader(self, queue: str) -> int:
        """The index of the node that leads quorum queue `queue`."""
        leader = self._queue_column(queue, "leader")
        return next(n.index for n in self.nodes if n.name == leader)

    def queue_members(self, queue: str) -> list[str]:
        members = self._queue_column(queue, "members")
        return [m.strip("[]\"', ") for m in members.split(",")]

    def queue_messages(self, queue: str) -> int:
        """Messages in a queue, ready and unacknowledged."""
        return int(self._queue_column(queue, "messages"))

    def purge(self, queue: str) -> None:
        self.ctl(self.any_alive(), "purge_queue", queue)

    def unacked_of(self, connection_name: str) -> int:
        """Deliveries not yet acknowledged on the channels of the connection whose client
        named itself `connection_name` (a bridge: `sensegate-bridge HOST pid PID`)."""
        node = self.any_alive()
        conns = self.ctl(node, "list_connections", "-q", "--no-table-headers",
                         "name", "client_properties")
        named = re.compile(re.escape(connection_name) + r"(?!\d)")  # pid 12 is not pid 123
        names = {line.split("\t", 1)[0] for line in conns.splitlines() if named.search(line)}
        chans = self.ctl(node, "list_channels", "-q", "--no-table-headers",
                         "name", "messages_unacknowledged")
        total = 0
        for line in chans.splitlines():
            name, _, count = line.rpartition("\t")
            if name.rpartition(" (")[0] in names:
                total += int(count)
        return total
