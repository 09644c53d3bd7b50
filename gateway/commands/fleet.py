"""`sensegate fleet`: the operations centre's tool (SPEC §7).

* ``status``: every gateway's retained health record (``{prefix}/+/status``) as a table or
  JSON, filtered by name pattern, state, failing devices;
* ``push --key KEY GATEWAY FILE``: validate FILE locally as ``check`` does, refuse literal
  secrets, sign (Ed25519 over topic and payload), publish on ``{prefix}/GATEWAY/config/set``
  (QoS 1, never retained), wait for the gateway's result and print it;
* ``keygen KEY``: a new key pair, KEY (private, 0600) and KEY.pub (the line the gateways'
  ``fleet.public_key`` names);
* ``command --key KEY GATEWAY DEVICE POINT=VALUE...``: sign a device command (SPEC §6),
  send it, wait for its result (done with the read-back, refused, failed, expired).

The broker: ``--broker HOST[:PORT]`` (or $SENSEGATE_BROKER), ``--username`` (or
$SENSEGATE_MQTT_USER), the password only from $SENSEGATE_MQTT_PASSWORD (never an option: it
would show in ``ps``), ``--ca-file`` for TLS. Exit 0 done, 1 refused / rolled back / no
answer / broker unreachable, 2 usage (bad file, bad key).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import os
import re
import secrets
import ssl
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

import aiomqtt

from gateway.config.load import load_gateway_config
from gateway.core.errors import ConfigError
from gateway.core.payload import config_result_topic, config_set_topic
from gateway.core.signing import NS, canonical, sign_body
from gateway.core.units import format_duration
from gateway.runtime.exitcodes import ExitCode

DEFAULT_BROKER = "127.0.0.1:1883"
PROBATION_MARGIN = 10.0  # a rollback is reported after the gateway reconnects: wait this long more
QUIET_AFTER = 0.3  # status: stop once retained records stopped arriving for this long
# `password: hunter2` in a pushed file: secrets stay on the gateway, as ${VARS}
_LITERAL_SECRET = re.compile(r"^\s*(?:-\s+)?(password|token)\s*:\s*(?![\"']?\$\{)(\S.*)$")


@dataclass(frozen=True, slots=True)
class Broker:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    prefix: str = "sensegate"

    def client(self, identifier: str) -> aiomqtt.Client:
        tls = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else None
        return aiomqtt.Client(self.host, self.port, identifier=identifier,
                              username=self.username, password=self.password,
                              tls_context=tls, timeout=10)

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


def parse_broker(text: str) -> tuple[str, int]:
    """``HOST`` or ``HOST:PORT``; ValueError on a bad port."""
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, 1883
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r}: bad port")
    return host, int(port)


def _client_id(kind: str) -> str:
    return f"sensegate-fleet-{kind}-{secrets.token_hex(4)}"


# --- status -------------------------------------------------------------------------------


async def collect_status(broker: Broker, wait: float) -> dict[str, dict[str, Any]]:
    """Gateway id -> its retained status record (what the broker holds now)."""
    topic = f"{broker.prefix}/+/status"
    found: dict[str, dict[str, Any]] = {}
    async with broker.client(_client_id("status")) as client:
        await client.subscribe(topic, qos=1)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        messages = aiomqtt_messages(client)
        while True:
            now = loop.time()
            budget = deadline - now if not found else min(deadline - now, QUIET_AFTER)
            if budget <= 0:
                break
            try:
                message = await asyncio.wait_for(anext(messages), budget)
            except TimeoutError:
                break
            gateway = str(message.topic).split("/")[-2]
            with contextlib.suppress(ValueError, AttributeError):
                record = json.loads(bytes(message.payload))
                if isinstance(record, dict):
                    found[gateway] = record
    return found


def aiomqtt_messages(client: aiomqtt.Client) -> Any:
    return client.messages.__aiter__()


def select(records: Mapping[str, dict[str, Any]], patterns: list[str], state: str | None,
           failing: bool) -> dict[str, dict[str, Any]]:
    """The records that pass the filters, sorted by gateway id."""
    out = {}
    for gateway in sorted(records):
        record = records[gateway]
        if patterns and not any(fnmatch.fnmatchcase(gateway, p) for p in patterns):
            continue
        if state is not None and record.get("state") != state:
            continue
        if failing and not _failing(record):
            continue
        out[gateway] = record
    return out


def _failing(record: Mapping[str, Any]) -> list[str]:
    devices = record.get("devices")
    names = devices.get("failing") if isinstance(devices, dict) else None
    return [str(n) for n in names] if isinstance(names, list) else []


def _part(record: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = record.get(key)
    return value if isinstance(value, dict) else {}


def _age(seconds: float) -> str:
    if seconds < 0:
        return "now"
    return f"{format_duration(round(seconds))} ago" if seconds >= 1 else "now"


def table(records: Mapping[str, dict[str, Any]], now_ns: int) -> list[str]:
    """The ``fleet status`` table: one line per gateway."""
    header = ("GATEWAY", "STATE", "VERSION", "CONFIG", "DEVICES", "FAILING", "BACKLOG",
              "LAST SEEN")
    rows = [header]
    for gateway, r in records.items():
        config, devices, outbox = _part(r, "config"), _part(r, "devices"), _part(r, "outbox")
        failing = _failing(r)
        total = devices.get("total")
        backlog = "-"
        if outbox:
            backlog = str(outbox.get("pending", 0))
            if outbox.get("oldest_s"):
                backlog += f" ({format_duration(outbox['oldest_s'])})"
            if outbox.get("dropped"):
                backlog += f", {outbox['dropped']} dropped"
        ts = r.get("ts")
        seen = _age((now_ns - ts) / NS) if isinstance(ts, int) else "-"
        rows.append((
            gateway, str(r.get("state", "?")), str(r.get("version", "-")),
            str(config.get("sha256", "-"))[:12], "-" if total is None else str(total),
            ",".join(failing) if failing else "-", backlog, seen,
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]


def status(broker: Broker, out: TextIO, *, patterns: list[str], state: str | None,
           failing: bool, as_json: bool, wait: float) -> int:
    try:
        records = asyncio.run(collect_status(broker, wait))
    except (aiomqtt.MqttError, OSError, ssl.SSLError) as exc:  # OSError: e.g. the CA file
        print(f"cannot reach the broker at {broker.where}: {exc}", file=sys.stderr)
        return ExitCode.FAILED
    chosen = select(records, patterns, state, failing)
    if as_json:
        out.write(json.dumps([{"gateway": g, **r} for g, r in chosen.items()], indent=2) + "\n")
    else:
        for line in table(chosen, time.time_ns()):
            out.write(line + "\n")
        out.write(f"{len(chosen)} gateway(s)"
                  f"{f' of {len(records)}' if len(chosen) != len(records) else ''}\n")
    return ExitCode.OK


# --- push ---------------------------------------------------------------------------------


class _AnyEnv(Mapping[str, str]):
    """Local validation: ${VARS} resolve on the gateway, so any name is set here (to a
    harmless value) unless this machine has it."""

    def __getitem__(self, key: str) -> str:
        return os.environ.get(key, "1")

    def __contains__(self, key: object) -> bool:
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(os.environ)

    def __len__(self) -> int:
        return len(os.environ)


def literal_secrets(text: str, path: str) -> list[str]:
    """``FILE:LINE:COL: ...`` for every password or token written out instead of ${VAR}."""
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        m = _LITERAL_SECRET.match(line)
        if m and not m.group(2).startswith("#"):
            found.append(f"{path}:{n}:{m.start(2) + 1}: {m.group(1)}: a secret written out; "
                         f"name it as ${{VAR}}, set on the gateway: secrets never travel")
    return found


def prepare(path: str, gateway: str) -> tuple[str, list[str]]:
    """The file's text and the reasons not to push it (empty: go ahead)."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        return "", [f"{path}: cannot read: {exc}"]
    problems = literal_secrets(text, path)
    try:
        config = load_gateway_config(path, env=_AnyEnv())
    except ConfigError as exc:
        return text, problems + [str(i) for i in exc.issues]
    if config.id != gateway:
        problems.append(f"{path}: gateway.id is {config.id!r}, not {gateway!r}: a gateway "
                        "refuses a config for another id")
    return text, problems


def _signed(key: Any, topic: str, kind: str, fields: Mapping[str, Any],
            msg_id: str | None = None, ts: int | None = None) -> tuple[str, bytes]:
    """(id, payload) of a message from the centre to ``topic``: a fresh ``kind-<time>-<hex>``
    id (unless given), ``ts`` now (unless given), ``fields``, signed with ``key``."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    msg_id = msg_id or f"{kind}-{stamp}-{secrets.token_hex(3)}"
    body = {"id": msg_id, "ts": time.time_ns() if ts is None else ts, **fields}
    return msg_id, sign_body(body, key.sign(canonical(topic, body)))


def signed_message(key: Any, topic: str, text: str, msg_id: str | None = None,
                   ts: int | None = None) -> tuple[str, bytes]:
    """(id, payload) of a config/set message signed with ``key`` (a PrivateKey)."""
    return _signed(key, topic, "cfg", {"config": text}, msg_id, ts)


async def send_and_wait(broker: Broker, gateway: str, payload: bytes, msg_id: str,
                        timeout: float, wait_probation: bool,
                        topics: tuple[str, str] | None = None) -> list[dict[str, Any]]:
    """Publish a config/set (or, with ``topics``, any set and its result topic) and collect
    this id's results (the first, and with ``wait_probation`` a rollback during the
    probation that follows)."""
    set_topic, result_topic = topics or (config_set_topic(broker.prefix, gateway),
                                         config_result_topic(broker.prefix, gateway))
    results: list[dict[str, Any]] = []
    async with broker.client(_client_id("push")) as client:
        await client.subscribe(result_topic, qos=1)
        await client.publish(set_topic, payload, qos=1, retain=False)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        messages = aiomqtt_messages(client)
        while loop.time() < deadline:
            try:
                message = await asyncio.wait_for(anext(messages), deadline - loop.time())
            except TimeoutError:
                break
            try:
                result = json.loads(bytes(message.payload))
            except ValueError:
                continue
            if not isinstance(result, dict) or result.get("id") != msg_id:
                continue
            results.append(result)
            probation = result.get("probation_s")
            if (result.get("status") != "applied" or not wait_probation
                    or not isinstance(probation, (int, float))):
                break
            deadline = loop.time() + probation + PROBATION_MARGIN
    return results


def _exchange(broker: Broker, gateway: str, payload: bytes, msg_id: str, timeout: float, *,
              wait_probation: bool = False, topics: tuple[str, str] | None = None,
              target: str, off: str) -> list[dict[str, Any]] | None:
    """`send_and_wait`, saying on stderr why nothing came back (the broker unreachable, or no
    result: ``target`` is offline, has ``off``, or the key may not publish there): None."""
    try:
        results = asyncio.run(send_and_wait(broker, gateway, payload, msg_id, timeout,
                                            wait_probation, topics))
    except (aiomqtt.MqttError, OSError, ssl.SSLError) as exc:  # OSError: e.g. the CA file
        print(f"cannot reach the broker at {broker.where}: {exc}", file=sys.stderr)
        return None
    if not results:
        print(f"{target}: no result for {msg_id} within {format_duration(timeout)}: the "
              f"gateway is offline, has {off}, or this key is not allowed to publish there",
              file=sys.stderr)
        return None
    return results


def describe_result(result: Mapping[str, Any], gateway: str, path: str) -> list[str]:
    lines = [f"{gateway}: {result.get('status')}: {result.get('reason')}"]
    sha = result.get("config_sha256")
    if isinstance(sha, str):
        lines[0] += f" (config {sha[:12]})"
    for error in result.get("errors") or []:
        if isinstance(error, dict):
            where = f"{error.get('path')}: " if error.get("path") else ""
            lines.append(f"{path}:{error.get('line')}:{error.get('col')}: {where}"
                         f"{error.get('message')}")
    return lines


def _private_key(path: str) -> Any | None:
    """The Ed25519 private key at ``path`` (a `PrivateKey`), or None after saying why."""
    from gateway.runtime.signing import PrivateKey

    try:
        return PrivateKey.load(path)
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return None


def push(broker: Broker, out: TextIO, *, key_path: str, gateway: str, path: str,
         timeout: float, wait_probation: bool, as_json: bool = False) -> int:
    key = _private_key(key_path)
    if key is None:
        return ExitCode.USAGE
    text, problems = prepare(path, gateway)
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"{len(problems)} problem(s); nothing pushed", file=sys.stderr)
        return ExitCode.USAGE
    msg_id, payload = signed_message(key, config_set_topic(broker.prefix, gateway), text)
    results = _exchange(broker, gateway, payload, msg_id, timeout,
                        wait_probation=wait_probation, target=gateway,
                        off="remote configuration off")
    if results is None:
        return ExitCode.FAILED
    last = results[-1]
    if as_json:
        out.write(json.dumps(results, indent=2) + "\n")
    else:
        for result in results:
            for line in describe_result(result, gateway, path):
                out.write(line + "\n")
        if wait_probation and last.get("status") == "applied" and "probation_s" in last:
            out.write(f"{gateway}: no rollback reported during the probation\n")
    return ExitCode.OK if last.get("status") == "applied" else ExitCode.FAILED


# --- keygen, command ----------------------------------------------------------------------


def keygen(out: TextIO, path: str) -> int:
    from gateway.runtime.signing import public_line, write_key_pair

    try:
        public = write_key_pair(path)
    except FileExistsError as exc:
        print(f"{exc}: already exists; not overwritten", file=sys.stderr)
        return ExitCode.USAGE
    except OSError as exc:
        print(f"cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
        return ExitCode.USAGE
    out.write(f"private key: {path} (keep it on this machine only; mode 0600)\n"
              f"public key:  {path}.pub\n\n"
              f"on every gateway:\n  fleet:\n    public_key: {public_line(public)}\n")
    return ExitCode.OK


def command(broker: Broker, out: TextIO, *, key_path: str, gateway: str, device: str,
            assignments: list[str], timeout: float, as_json: bool = False) -> int:
    """``fleet command``: sign a device command (SPEC §6) with KEY, send it to GATEWAY's
    DEVICE, wait for its result and print it. Exit 0 done, 1 refused / failed / expired /
    no answer, 2 usage."""
    from gateway.commands.write import parse_assignments
    from gateway.core.command import result_topic, set_topic

    values = parse_assignments(assignments)
    if isinstance(values, str) or not values:
        print(values or "give at least one POINT=VALUE", file=sys.stderr)
        return ExitCode.USAGE
    key = _private_key(key_path)
    if key is None:
        return ExitCode.USAGE
    topic = set_topic(broker.prefix, gateway, device)
    msg_id, payload = _signed(key, topic, "cmd", {"values": values})
    results = _exchange(broker, gateway, payload, msg_id, timeout,
                        topics=(topic, result_topic(broker.prefix, gateway, device)),
                        target=f"{gateway}/{device}", off="commands off")
    if results is None:
        return ExitCode.FAILED
    result = results[-1]
    if as_json:
        out.write(json.dumps(result, indent=2) + "\n")
    else:
        read_back = result.get("values")
        out.write(f"{gateway}/{device}: {result.get('status')}: {result.get('reason') or ''}"
                  + (f" (read back: {json.dumps(read_back)})" if read_back else "") + "\n")
    return ExitCode.OK if result.get("status") == "done" else ExitCode.FAILED
