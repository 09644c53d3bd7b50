"""Signed remote configuration on the gateway (SPEC §7): verify, validate, apply, probation.

A message on ``{prefix}/{id}/config/set`` goes through, in this order, and stops at the
first refusal (each outcome is one result on ``{prefix}/{id}/config/result``):

1. not retained (a retained message may be stale: a gateway offline during a push would
   otherwise apply it on its next connect), a JSON object with ``id``, ``ts``, ``config``,
   ``sig``; the Ed25519 signature over topic and payload (`gateway.runtime.signing`); age
   within ``fleet.max_age``; an id not seen before (ids are kept in ``state_dir/fleet``);
2. the YAML validated exactly as ``sensegate check`` does, from a file written next to the
   running config (so relative profile paths and ``${VARS}`` resolve as they will when
   run); errors carry the LINE:COL of the pushed text;
3. the running config and the new one saved under ``state_dir/fleet/configs`` (the last
   ``fleet.keep``), a journal written, the new file renamed over the running one (atomic),
   then switched to like a SIGHUP reload: the outbox is not touched. Result ``applied``;
4. probation (``fleet.probation``): a watchdog on this gateway, needing no broker, rolls
   back to the previous config if the broker stays unreachable for half the probation,
   or is unreachable when it ends, or more devices fail than before the change. Result
   ``rolled_back`` with the reason, sent once the broker is reachable again.

Crash safety: the config file is only ever replaced by a rename of a complete, fsync'ed
file, so it is always a config that passed validation. The journal says a change is not
yet proven; a gateway that starts with a journal (it died during an apply or a probation)
puts the previous config back before anything else (`recover`) and reports it. Results
wait in ``state_dir/fleet/results.json`` until the broker has acknowledged them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.config.load import load_gateway_config
from gateway.core.errors import ConfigError
from gateway.core.model import GatewayConfig
from gateway.core.payload import config_result_topic, config_set_topic
from gateway.core.signing import Refused, ReplayGuard, check, parse_signed

if TYPE_CHECKING:
    import aiomqtt

    from gateway.edge.daemon import Daemon

log = logging.getLogger("sensegate.fleet")

FLEET_DIR = "fleet"
CHECK_EVERY = 0.5  # seconds between probation checks
MAX_PENDING_RESULTS = 50


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old file or the new one.

    A file replaced keeps its permission bits (a config may be readable by its group only).
    """
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        with contextlib.suppress(OSError):
            os.fchmod(fh.fileno(), os.stat(path).st_mode & 0o7777)
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(directory)


def fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def candidate_path(config_path: str) -> str:
    """Where a pushed config is validated: next to the running one, hidden."""
    directory = os.path.dirname(os.path.abspath(config_path))
    return os.path.join(directory, f".{os.path.basename(config_path)}.pushed")


class FleetFiles:
    """What remote configuration keeps under ``state_dir/fleet``."""

    def __init__(self, state_dir: str, keep: int = 5) -> None:
        self.dir = os.path.join(state_dir, FLEET_DIR)
        self.configs = os.path.join(self.dir, "configs")
        self.journal_path = os.path.join(self.dir, "apply.json")
        self.results_path = os.path.join(self.dir, "results.json")
        self.seen_path = os.path.join(self.dir, "seen.json")
        self.keep = keep

    def _ensure(self) -> None:
        os.makedirs(self.configs, exist_ok=True)

    # -- configs -----------------------------------------------------------------------

    def save_config(self, data: bytes) -> str:
        """Keep ``data`` in the history (once per content); return its path."""
        self._ensure()
        digest = sha256(data)
        for name in os.listdir(self.configs):
            if name.endswith(f"-{digest[:16]}.yaml"):
                path = os.path.join(self.configs, name)
                os.utime(path)  # most recently used: kept longest
                return path
        path = os.path.join(self.configs, f"{time.time_ns()}-{digest[:16]}.yaml")
        write_atomic(path, data)
        self._prune()
        return path

    def history(self) -> list[str]:
        """The kept configs, oldest first."""
        if not os.path.isdir(self.configs):
            return []
        paths = [os.path.join(self.configs, n) for n in os.listdir(self.configs)
                 if n.endswith(".yaml")]
        return sorted(paths, key=os.path.getmtime)

    def _prune(self) -> None:
        for path in self.history()[:-self.keep]:
            with contextlib.suppress(OSError):
                os.remove(path)

    def commit(self, msg_id: str, candidate: str, path: str, old_text: bytes) -> str:
        """Put the validated ``candidate`` in place of the config at ``path``, journalled:
        both kept in the history (``old_text`` is the running config's), the journal
        written, then the atomic rename. Returns the previous config's path in the history."""
        with contextlib.suppress(OSError):
            os.chmod(candidate, os.stat(path).st_mode & 0o7777)
        with open(candidate, "rb") as fh:
            new_text = fh.read()
        previous = self.save_config(old_text)
        self.save_config(new_text)
        self.write_journal({"id": msg_id, "previous": previous,
                            "previous_sha": sha256(old_text), "new_sha": sha256(new_text)})
        os.replace(candidate, path)
        fsync_dir(os.path.dirname(os.path.abspath(path)))
        return previous

    # -- the journal of an apply in progress -------------------------------------------

    def journal(self) -> dict[str, Any] | None:
        try:
            with open(self.journal_path, encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def write_journal(self, entry: dict[str, Any]) -> None:
        self._ensure()
        write_atomic(self.journal_path, json.dumps(entry).encode())

    def clear_journal(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.journal_path)
            fsync_dir(self.dir)

    # -- results waiting for the broker ------------------------------------------------

    def pending_results(self) -> list[dict[str, Any]]:
        """``[{"topic": where to send it (None: the running config's), "result": {...}}]``."""
        try:
            with open(self.results_path, encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, ValueError):
            return []
        if not isinstance(data, list):
            return []
        return [r for r in data if isinstance(r, dict) and isinstance(r.get("result"), dict)]

    def set_pending_results(self, results: list[dict[str, Any]]) -> None:
        self._ensure()
        write_atomic(self.results_path, json.dumps(results[-MAX_PENDING_RESULTS:]).encode())

    # -- replay guard ------------------------------------------------------------------

    def guard(self, max_age: float) -> ReplayGuard:
        try:
            with open(self.seen_path, encoding="utf-8") as fh:
                return ReplayGuard.loads(fh.read(), max_age)
        except OSError:
            return ReplayGuard(max_age)

    def save_guard(self, guard: ReplayGuard) -> None:
        self._ensure()
        write_atomic(self.seen_path, guard.dumps().encode())


def result(msg_id: str | None, status: str, reason: str, **extra: Any) -> dict[str, Any]:
    return {"id": msg_id, "ts": time.time_ns(), "status": status, "reason": reason, **extra}


def recover(config_path: str, state_dir: str) -> dict[str, Any] | None:
    """Before the daemon loads its config: undo an apply that was not proven.

    A journal left behind means the gateway died while applying a pushed config or while
    it was on probation. The previous config (which ran, and passed) is put back in place
    atomically, the journal removed, and a ``rolled_back`` result queued. Idempotent: a
    crash during recovery recovers again on the next start. Returns the result, or None.
    """
    files = FleetFiles(state_dir)
    entry = files.journal()
    if entry is None:
        return None
    try:
        with open(config_path, "rb") as fh:
            running = sha256(fh.read())
    except OSError:
        running = ""
    previous = entry.get("previous")
    outcome: dict[str, Any] | None = None
    if running == entry.get("new_sha") and isinstance(previous, str):
        try:
            with open(previous, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            log.error("cannot roll back to %s: %s; keeping the pushed config", previous, exc)
        else:
            write_atomic(config_path, data)
            log.warning("config %s was not proven when the gateway stopped: rolled back to the "
                        "previous config", entry.get("id"))
            outcome = result(entry.get("id"), "rolled_back",
                             "the gateway restarted before the config passed probation; "
                             "back on the previous config", config_sha256=sha256(data))
    elif running == entry.get("previous_sha"):
        outcome = result(entry.get("id"), "rolled_back",
                         "the gateway restarted during the apply; still on the previous config",
                         config_sha256=running)
    if outcome is not None:
        files.set_pending_results([*files.pending_results(),
                                   {"topic": None, "result": outcome}])
    files.clear_journal()
    return outcome


@dataclass
class _Probation:
    msg_id: str
    previous: GatewayConfig
    previous_text: bytes
    previous_path: str
    failing_before: int
    answer: str  # the result topic
    task: asyncio.Task[None] | None = None


class RemoteConfig:
    """The gateway's side of ``config/set``; one per daemon (see the module docstring)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        config = self._config
        self.files = FleetFiles(config.state_dir, config.fleet.keep)
        self._topic: str | None = None
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._probation: _Probation | None = None
        self._flushing = False
        self._flush_again = False
        # results not yet acknowledged by the broker, oldest first (also in results.json)
        self._pending: list[dict[str, Any]] = self.files.pending_results()
        daemon.publisher.on_connect(self.flush_results)

    @property
    def _config(self) -> GatewayConfig:
        assert self.daemon.config is not None
        return self.daemon.config

    def configure(self) -> None:
        """Subscribe (or stop listening) as the running config says; after every switch."""
        config = self._config
        self.files.keep = config.fleet.keep
        topic = (config_set_topic(config.mqtt.topic_prefix, config.id)
                 if config.fleet.enabled else None)
        if topic == self._topic:
            return
        if self._topic is not None:
            self.daemon.publisher.unsubscribe(self._topic)
        self._topic = topic
        if topic is not None:
            self.daemon.publisher.subscribe(topic, self._on_message)
            log.info("remote configuration on: listening on %s", topic)

    async def close(self) -> None:
        if self._probation is not None and self._probation.task is not None:
            self._probation.task.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- one message -------------------------------------------------------------------

    def _on_message(self, message: aiomqtt.Message) -> None:
        payload = message.payload
        data = payload if isinstance(payload, bytes) else str(payload).encode()
        if not data:
            return  # a retained message being cleared: nothing was sent
        self._spawn(self._process(str(message.topic), data, bool(message.retain)))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _process(self, topic: str, payload: bytes, retained: bool) -> None:
        # Answered where asked: a config that changes the topic prefix still answers there.
        answer = topic.removesuffix("/set") + "/result"
        async with self._lock:
            try:
                outcome = await self._handle(topic, payload, retained, answer)
            except OSError as exc:  # state_dir/fleet cannot be written: act on nothing
                outcome = result(_peek_id(payload), "refused", f"cannot record it under "
                                 f"{self.files.dir}: {(exc.strerror or str(exc)).lower()}")
            except Exception as exc:
                self._fatal("config apply", exc)
                return
        if outcome is not None:
            level = logging.INFO if outcome["status"] == "applied" else logging.WARNING
            log.log(level, "config %s %s: %s", outcome["id"], outcome["status"],
                    outcome["reason"])
            await self.report(outcome, answer)

    async def _handle(self, topic: str, payload: bytes, retained: bool,
                      answer: str) -> dict[str, Any] | None:
        config = self._config
        fleet = config.fleet
        msg_id = _peek_id(payload)
        if fleet.key is None:
            return None  # unsubscribed meanwhile
        try:
            if retained:
                raise Refused("retained: config messages must not be retained (a retained "
                              "one may be stale); publish with retain off")
            message = parse_signed(payload, {"config": str})
            from gateway.runtime.signing import verify  # cryptography: only when used

            verify(fleet.key, message, topic)
            guard = self.files.guard(fleet.max_age)
            check(message, time.time_ns(), fleet.max_age, guard)
            guard.remember(message.id, message.ts, time.time_ns())
            # Kept before acting on it: a replay after a crash is refused too.
            await asyncio.to_thread(self.files.save_guard, guard)
        except Refused as exc:
            return result(msg_id, "refused", str(exc))
        if self._probation is not None:
            return result(message.id, "refused", f"config {self._probation.msg_id} is still on "
                          "probation; push again when it has passed")
        return await self._apply(message.id, message.body["config"].encode("utf-8"), answer)

    async def _apply(self, msg_id: str, text: bytes, answer: str) -> dict[str, Any]:
        daemon = self.daemon
        old = self._config
        path = daemon.config_path
        candidate = candidate_path(path)
        try:
            await asyncio.to_thread(write_atomic, candidate, text)
        except OSError as exc:
            return result(msg_id, "refused", f"cannot write next to {path}: "
                          f"{(exc.strerror or str(exc)).lower()}")
        try:
            new = await asyncio.to_thread(load_gateway_config, candidate)
        except ConfigError as exc:
            with contextlib.suppress(OSError):
                os.remove(candidate)
            errors = [{"line": i.line, "col": i.col, "path": i.path, "message": i.message}
                      for i in exc.issues]
            return result(msg_id, "refused", f"{len(errors)} error(s) in the pushed config",
                          errors=errors)
        from gateway.edge.daemon import reload_refusal

        refusal = reload_refusal(old, new)
        new_sha = sha256(text)
        if refusal is None and new_sha == daemon.config_sha:
            refusal = "unchanged"
        if refusal is not None:
            with contextlib.suppress(OSError):
                os.remove(candidate)
            if refusal == "unchanged":
                return result(msg_id, "applied", "unchanged: this config is already running",
                              config_sha256=new_sha, unchanged=True)
            return result(msg_id, "refused", refusal)
        try:
            previous_path = await asyncio.to_thread(self.files.commit, msg_id, candidate, path,
                                                    daemon.config_text)
        except OSError as exc:
            self.files.clear_journal()
            return result(msg_id, "refused", f"cannot replace {path}: "
                          f"{(exc.strerror or str(exc)).lower()}")
        failing_before = len(daemon.failing_devices())
        probation = _Probation(msg_id, old, daemon.config_text, previous_path, failing_before,
                               answer)
        await daemon.switch(new, text)
        self._probation = probation
        probation.task = asyncio.create_task(self._watch(probation, new), name="probation")
        return result(msg_id, "applied", f"running; on probation for {new.fleet.probation:g}s",
                      config_sha256=new_sha, probation_s=new.fleet.probation)

    # -- probation ---------------------------------------------------------------------

    async def _watch(self, probation: _Probation, new: GatewayConfig) -> None:
        """Roll back when the broker stays unreachable or more devices fail; no broker needed."""
        loop = asyncio.get_running_loop()
        length = new.fleet.probation
        start = loop.time()
        deadline = start + length
        unreachable_limit = max(CHECK_EVERY, length / 2)
        lost_since: float | None = None
        reason: str | None = None
        try:
            while reason is None:
                now = loop.time()
                if now >= deadline:
                    break
                await asyncio.sleep(min(CHECK_EVERY, max(0.0, deadline - now)))
                now = loop.time()
                if self.daemon.publisher.connected:
                    lost_since = None
                else:
                    lost_since = now if lost_since is None else lost_since
                    if now - lost_since >= unreachable_limit:
                        reason = (f"the broker was unreachable for {now - lost_since:.0f}s "
                                  f"with the new config")
                        break
                reason = self._devices_worse(probation, final=False)
            if reason is None and not self.daemon.publisher.connected:
                reason = "the broker was unreachable when the probation ended"
            if reason is None:
                reason = self._devices_worse(probation, final=True)
            if reason is None:
                await asyncio.to_thread(self.files.clear_journal)
                log.info("config %s passed its probation", probation.msg_id)
                return
            try:
                await self._roll_back(probation, reason)
            except (OSError, ConfigError) as exc:
                # The journal stays: the next start puts the previous config back.
                log.error("config %s could not be rolled back (%s): %s; the previous config "
                          "returns at the next start", probation.msg_id, reason, exc)
        except Exception as exc:
            self._fatal("probation", exc)
        finally:
            if self._probation is probation:
                self._probation = None

    def _fatal(self, what: str, exc: BaseException) -> None:
        """A bug half-way through a switch: the running state is not known to be consistent.
        Stop (exit 1) as for a reload that died; the journal makes the next start put the
        previous config back."""
        log.error("%s stopped: %r", what, exc)
        self.daemon.failed = True
        self.daemon.should_exit.set()

    def _devices_worse(self, probation: _Probation, final: bool) -> str | None:
        # During the probation: once every device has been scanned. At its end: with what was
        # seen (a device with a long interval may not have been scanned yet: no evidence).
        if not final and not self.daemon.all_scanned():
            return None
        failing = self.daemon.failing_devices()
        if len(failing) > probation.failing_before:
            names = ", ".join(sorted(failing)[:10])
            return (f"{len(failing)} device(s) failing with the new config, "
                    f"{probation.failing_before} before: {names}")
        return None

    async def _roll_back(self, probation: _Probation, reason: str) -> None:
        daemon = self.daemon
        async with self._lock:
            await asyncio.to_thread(write_atomic, daemon.config_path, probation.previous_text)
            await daemon.switch(probation.previous, probation.previous_text)
            await asyncio.to_thread(self.files.clear_journal)
        outcome = result(probation.msg_id, "rolled_back", reason,
                         config_sha256=sha256(probation.previous_text))
        log.warning("config %s rolled back: %s", probation.msg_id, reason)
        await self.report(outcome, probation.answer)

    # -- results -----------------------------------------------------------------------

    async def report(self, outcome: dict[str, Any], topic: str | None = None) -> None:
        """Keep the result until the broker acknowledged it; try to send it now."""
        self._pending.append({"topic": topic, "result": outcome})
        await self._save_pending()
        self.flush_results()

    async def _save_pending(self) -> None:
        """Best effort: a state_dir that cannot be written keeps results in memory only."""
        try:
            await asyncio.to_thread(self.files.set_pending_results, list(self._pending))
        except OSError as exc:
            log.error("cannot keep config results in %s: %s", self.files.dir, exc)

    def flush_results(self) -> None:
        """Send the pending results, oldest first; called on every connect and new result."""
        self._flush_again = True
        if not self._flushing:
            self._spawn(self._flush())

    async def _flush(self) -> None:
        self._flushing = True
        try:
            while self._flush_again:  # asked again meanwhile (e.g. a new connection)
                self._flush_again = False
                config = self._config
                running = config_result_topic(config.mqtt.topic_prefix, config.id)
                while self._pending:
                    first = self._pending[0]
                    topic = first.get("topic") or running
                    payload = json.dumps(first["result"], separators=(",", ":")).encode()
                    if not await self.daemon.publisher.send(topic, payload):
                        break  # the next connect flushes again
                    self._pending = [r for r in self._pending if r is not first]
                    await self._save_pending()
        finally:
            self._flushing = False


def _peek_id(payload: bytes) -> str | None:
    """The id of a message for its result, even when the message is refused."""
    try:
        obj = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        return None
    value = obj.get("id") if isinstance(obj, dict) else None
    return value if isinstance(value, str) and len(value) <= 128 else None
