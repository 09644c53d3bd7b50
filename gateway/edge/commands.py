"""Commands from the centre and from `sensegate write` (SPEC §6, docs/commands.md).

`Commander.handle` takes one request (topic + payload, or a local write) and answers with
its result; the order is fixed:

1. signature (when ``commands.public_key`` is set), then age (``max_age``): refused or
   expired, and counted;
2. the id: a command id is executed at most once. `CommandStore` (SQLite, synchronous
   FULL, under ``state_dir/commands``) records *started* before the first byte goes to the
   device and the result after; a redelivery or a replay gets the stored result, and an id
   found *started* after a restart (killed between write and result) is answered
   ``failed`` without writing again;
3. the values (`gateway.core.command.plan`), then the writes, each read back.

Every command and result is appended to `AuditLog` (JSON lines, fsynced, rotated, bounded)
and counted in metrics. `CommandListener` is the MQTT side: its own aiomqtt session
(client id ``<mqtt.client_id>-commands``), subscribed to ``{prefix}/{id}/+/set`` at QoS 1,
answering on ``.../set/result`` and on the MQTT 5 response topic with its correlation data.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.core import command as core
from gateway.core.model import GatewayConfig, Value
from gateway.core.signing import Refused, age_refusal, parse_signed

log = logging.getLogger("sensegate.commands")

KEEP_IDS_NS = 30 * 24 * 3600 * 10**9  # finished ids kept 30 days (far beyond any max_age)
AUDIT_MAX_BYTES = 1024 * 1024
AUDIT_FILES = 5  # audit.log and audit.log.1 .. .4: at most 5 MiB


@dataclass(frozen=True, slots=True)
class Outcome:
    id: str
    status: core.Status
    reason: str | None = None
    values: dict[str, Value] | None = None
    duplicate: bool = False  # answered from the store

    def payload(self, ts: int | None = None) -> bytes:
        return core.result_payload(self.id, ts or time.time_ns(), self.status, self.reason,
                                   self.values)


class CommandStore:
    """Command ids and their results, durable before anything is written."""

    def __init__(self, state_dir: str) -> None:
        root = os.path.join(state_dir, "commands")
        os.makedirs(root, exist_ok=True)
        # used from worker threads, one command at a time (`Commander` holds a lock)
        self.db = sqlite3.connect(os.path.join(root, "commands.db"), isolation_level=None,
                                  check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS commands (id TEXT PRIMARY KEY, "
                        "device TEXT, received INTEGER, result TEXT)")
        self.db.execute("DELETE FROM commands WHERE result IS NOT NULL AND received < ?",
                        (time.time_ns() - KEEP_IDS_NS,))

    def get(self, key: str) -> tuple[bool, Outcome | None]:
        """(known, its result: None while started and not finished)."""
        row = self.db.execute("SELECT result FROM commands WHERE id = ?", (key,)).fetchone()
        if row is None:
            return False, None
        if row[0] is None:
            return True, None
        data = json.loads(row[0])
        return True, Outcome(data["id"], data["status"], data.get("reason"),
                             data.get("values"), duplicate=True)

    def start(self, key: str, device: str) -> None:
        self.db.execute("INSERT INTO commands (id, device, received) VALUES (?, ?, ?)",
                        (key, device, time.time_ns()))

    def finish(self, key: str, device: str, outcome: Outcome) -> None:
        result = json.dumps({"id": outcome.id, "status": outcome.status,
                             "reason": outcome.reason, "values": outcome.values})
        self.db.execute("INSERT INTO commands (id, device, received, result) VALUES "
                        "(?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET result = excluded.result",
                        (key, device, time.time_ns(), result))

    def close(self) -> None:
        self.db.close()


class AuditLog:
    """Append-only JSON lines under ``state_dir/commands``, fsynced, rotated, bounded."""

    def __init__(self, state_dir: str, max_bytes: int = AUDIT_MAX_BYTES,
                 files: int = AUDIT_FILES) -> None:
        self.path = os.path.join(state_dir, "commands", "audit.log")
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self.max_bytes = max_bytes
        self.files = files

    def append(self, **entry: Any) -> None:
        line = json.dumps({"ts": time.time_ns(), **entry}, separators=(",", ":"),
                          ensure_ascii=False, default=str) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        if size >= self.max_bytes:
            self._rotate()

    def _rotate(self) -> None:
        """audit.log -> audit.log.1 -> ... ; the oldest beyond ``files`` is overwritten."""
        for n in range(self.files - 1, 0, -1):
            src = f"{self.path}.{n - 1}" if n > 1 else self.path
            if os.path.exists(src):
                os.replace(src, f"{self.path}.{n}")


Writer = Callable[[str], Any]  # device name -> object with async write(point, write), close()


@dataclass
class Commander:
    """Checks and executes commands for ``config`` (one per daemon or `sensegate write`)."""

    config: GatewayConfig
    open_writer: Writer
    metrics: Any = None
    store: CommandStore | None = None
    audit: AuditLog | None = None
    rates: core.RateLimiter = field(default_factory=core.RateLimiter)
    public_key: bytes | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        if self.store is None:
            self.store = CommandStore(self.config.state_dir)
        if self.audit is None:
            self.audit = AuditLog(self.config.state_dir)
        commands = self.config.commands
        if commands is not None and self.public_key is None:
            # (b"" from `sensegate write`: a local write needs no signature)
            self.public_key = commands.key

    @property
    def max_age(self) -> float:
        return self.config.commands.max_age if self.config.commands is not None else 30.0

    async def handle_message(self, topic: str, payload: bytes) -> tuple[str, Outcome]:
        """A request from MQTT: (device named by the topic, outcome)."""
        config = self.config
        device = core.device_of(topic, config.mqtt.topic_prefix, config.id) or "?"
        try:
            if len(payload) > core.MAX_PAYLOAD:
                raise Refused(f"{len(payload)} bytes: a command is at most "
                              f"{core.MAX_PAYLOAD} bytes")
            if self.public_key:
                from gateway.runtime.signing import verify

                signed = parse_signed(payload, {"values": dict})
                verify(self.public_key, signed, topic)
                request = core.request_of(signed.body)
            else:
                request = core.parse_request(payload)
        except (Refused, RecursionError) as exc:  # RecursionError: JSON nested too deep
            if isinstance(exc, RecursionError):
                exc = Refused("not a JSON object (nested too deep)")
            msg_id = _id_of(payload) if len(payload) <= core.MAX_PAYLOAD else ""
            self._count(device, "refused")
            self._audit(device, msg_id, "received", source="mqtt", topic=topic[:256])
            outcome = Outcome(msg_id, "refused", str(exc))
            log.warning("command %r on %s refused: %s", msg_id[:64], topic[:256], exc)
            self._audit(device, msg_id, "refused", reason=str(exc))
            return device, outcome
        return device, await self.execute(device, request, source="mqtt")

    async def execute(self, device_name: str, request: core.Request, *, source: str,
                      check_age: bool = True) -> Outcome:
        async with self._lock:  # one command at a time: ids and rates stay consistent
            return await self._execute(device_name, request, source, check_age)

    async def _execute(self, device_name: str, request: core.Request, source: str,
                       check_age: bool) -> Outcome:
        store = self.store
        assert store is not None
        key = f"{device_name}\x00{request.id}" if source == "local" else request.id
        self._audit(device_name, request.id, "received", source=source,
                    values=request.values)
        known, stored = await asyncio.to_thread(store.get, key)
        if known:
            if stored is None:  # started, never finished: killed between write and result
                stored = Outcome(request.id, "failed", "interrupted by a restart while "
                                 "executing; not repeated (read the point to see its value)")
                await asyncio.to_thread(store.finish, key, device_name, stored)
                self._audit(device_name, request.id, "failed", reason=stored.reason)
            self._count(device_name, "duplicate")
            reason = (f"duplicate id, not executed again: {stored.reason}" if stored.reason
                      else "duplicate id, not executed again: the stored result")
            return Outcome(stored.id, stored.status, reason, stored.values, True)
        outcome = await self._run(device_name, request, key, check_age)
        level = logging.INFO if outcome.status == "done" else logging.WARNING
        log.log(level, "command %r (%s) on %s: %s%s", request.id[:64], source,
                device_name[:64], outcome.status,
                f": {outcome.reason}" if outcome.reason else f" {outcome.values}")
        await asyncio.to_thread(store.finish, key, device_name, outcome)
        self._count(device_name, outcome.status)
        self._audit(device_name, request.id, outcome.status, reason=outcome.reason,
                    values=outcome.values)
        return outcome

    async def _run(self, device_name: str, request: core.Request, key: str,
                   check_age: bool) -> Outcome:
        if check_age:
            reason = age_refusal(request.ts, time.time_ns(), self.max_age)
            if reason is not None:
                status: core.Status = "expired" if reason.startswith("expired") else "refused"
                return Outcome(request.id, status, reason)
        device = next((d for d in self.config.devices if d.name == device_name), None)
        now = time.monotonic()
        try:
            writes = core.plan(device, device_name, request.values, self.rates, now)
        except Refused as exc:
            return Outcome(request.id, "refused", str(exc))
        assert self.store is not None
        await asyncio.to_thread(self.store.start, key, device_name)  # durable before writing
        from drivers.modbus import WriteFailed

        done: dict[str, Value] = {}
        try:
            writer = self.open_writer(device_name)
        except Exception as exc:  # e.g. a device removed by a reload meanwhile
            return Outcome(request.id, "failed", f"cannot open {device_name}: {exc}")
        try:
            for point, write in writes:
                self.rates.record(device_name, point, now)
                try:
                    done[point.name] = await writer.write(point, write)
                except WriteFailed as exc:
                    status = "refused" if exc.status == "refused" else "failed"
                    return Outcome(request.id, status, f"{point.name}: {exc}",
                                   done or None)
        except Exception as exc:  # a bug must not stop the listener, nor go unanswered
            log.exception("command %r on %s", request.id, device_name)
            return Outcome(request.id, "failed", f"internal error: {exc!r}", done or None)
        finally:
            await writer.close()
        return Outcome(request.id, "done", None, done)

    def _count(self, device: str, status: str) -> None:
        counter = getattr(self.metrics, "commands_total", None)
        if counter is not None:
            counter.labels(device=device[:64], status=status).inc()

    def _audit(self, device: str, msg_id: str, event: str, **more: Any) -> None:
        assert self.audit is not None
        try:
            self.audit.append(device=device[:64], id=msg_id[:128], event=event, **more)
        except OSError as exc:
            log.error("audit log %s: %s", self.audit.path, exc)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def _id_of(payload: bytes) -> str:
    try:
        obj = json.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return ""
    value = obj.get("id") if isinstance(obj, dict) else None
    return value[:128] if isinstance(value, str) else ""


class CommandListener:
    """The MQTT side: its own session, subscribed to this gateway's ``+/set`` topics."""

    def __init__(self, config: GatewayConfig, commander: Commander) -> None:
        self.config = config
        self.commander = commander

    async def run(self) -> None:
        import aiomqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        from gateway.runtime.tls import build_tls_context

        m = self.config.mqtt
        topic = f"{m.topic_prefix}/{self.config.id}/+/set"
        while True:
            try:
                async with aiomqtt.Client(
                    m.host, m.port, identifier=f"{m.client_id}-commands",
                    username=m.username,
                    password=m.password.reveal() if m.password is not None else None,
                    protocol=aiomqtt.ProtocolVersion.V5, clean_start=False,
                    keepalive=int(m.keepalive),
                    tls_context=build_tls_context(m.tls) if m.tls is not None else None,
                    properties=_session_properties(Properties, PacketTypes),
                ) as client:
                    await client.subscribe(topic, qos=1)
                    log.info("commands: listening on %s", topic)
                    async for message in client.messages:
                        await self._answer(client, message, Properties, PacketTypes)
            except aiomqtt.MqttError as exc:
                log.warning("commands: broker connection: %s; retrying in 2s", exc)
                await asyncio.sleep(2.0)

    async def _answer(self, client: Any, message: Any, properties: Any,
                      packet_types: Any) -> None:
        m = self.config.mqtt
        if str(message.topic) == f"{m.topic_prefix}/{self.config.id}/config/set":
            return  # signed remote configuration (SPEC §7): gateway.edge.fleet answers it
        payload = message.payload if isinstance(message.payload, bytes) else b""
        device, outcome = await self.commander.handle_message(str(message.topic), payload)
        body = outcome.payload()
        if core.device_of(str(message.topic), m.topic_prefix, self.config.id) is not None:
            await client.publish(core.result_topic(m.topic_prefix, self.config.id, device),
                                 body, qos=1)
        props = message.properties
        response = getattr(props, "ResponseTopic", None) if props is not None else None
        if response and "+" not in response and "#" not in response:
            out = properties(packet_types.PUBLISH)
            data = getattr(props, "CorrelationData", None)
            if data is not None:
                out.CorrelationData = data
            await client.publish(response, body, qos=1, properties=out)


def _session_properties(properties: Any, packet_types: Any) -> Any:
    props = properties(packet_types.CONNECT)
    props.SessionExpiryInterval = 24 * 3600  # commands sent while away are still answered
    return props
