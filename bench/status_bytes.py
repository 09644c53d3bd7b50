"""Bytes a day of the retained health record (SPEC §7), measured on a real gateway.

A real `sensegate run` with no devices talks to a real Mosquitto through a byte-counting TCP
relay; the health record is refreshed every ``--interval`` (short, to measure quickly). The
MQTT bytes both ways (PUBLISH + PUBACK, and the keepalive pings) are counted per record and
scaled to a day at 60 s; TCP/IP headers are added as 2 segments x 52 bytes per record
(IPv4 20 + TCP 20 + timestamps 12: the PUBLISH and the PUBACK, each acknowledged by the
next segment or a delayed ACK, which is at most 2 more).

    python -m bench.status_bytes --seconds 30 --interval 1s
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import tempfile
import time
from pathlib import Path

from bench._harness import Proc
from tests.support.mosquitto import Mosquitto
from tests.support.ports import free_port

TCP_IP_PER_SEGMENT = 52


async def relay(listen_port: int, target_port: int, counts: dict[str, int]) -> asyncio.Server:
    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: str) -> None:
        try:
            while data := await reader.read(65536):
                counts[key] += len(data)
                counts[key + "_reads"] += 1
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(pipe(reader, up_writer, "to_broker"),
                                 pipe(up_reader, writer, "from_broker"))

    return await asyncio.start_server(handle, "127.0.0.1", listen_port)


async def measure(seconds: float, interval: str) -> dict[str, float]:
    counts = {"to_broker": 0, "from_broker": 0, "to_broker_reads": 0, "from_broker_reads": 0}
    with Mosquitto() as broker, tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        server = await relay(port, broker.port, counts)
        config = Path(tmp) / "gateway.yaml"
        config.write_text(
            f"gateway: {{id: xinwu-road-017, state_dir: {tmp}/state, status_interval: "
            f"{interval}}}\nmqtt: {{host: 127.0.0.1, port: {port}, keepalive: 60s}}\n"
            "devices: []\n")
        gateway = Proc("run", config, Path(tmp) / "gateway.log").start()
        try:
            await asyncio.sleep(3.0)  # connected, first record sent
            start = dict(counts)
            began = time.monotonic()
            await asyncio.sleep(seconds)
            elapsed = time.monotonic() - began
            end = dict(counts)
        finally:
            gateway.stop()
            server.close()
    up = end["to_broker"] - start["to_broker"]
    down = end["from_broker"] - start["from_broker"]
    interval_s = float(interval.rstrip("s"))
    records = elapsed / interval_s
    per_record = (up + down) / records
    return {"records": round(records, 1), "mqtt_bytes_per_record": round(per_record, 1),
            "mqtt_bytes_per_day_at_60s": round(per_record * 1440),
            "with_tcp_ip_per_day_at_60s": round((per_record + 2 * TCP_IP_PER_SEGMENT) * 1440)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.status_bytes")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--interval", default="1s")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.seconds, args.interval))))


if __name__ == "__main__":
    main()
