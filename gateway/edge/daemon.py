"""`sensegate run`: the gateway daemon.

Acquisition (edge.scheduler) → report by exception and aggregation (core.report) → durable
outbox (edge.outbox) → MQTT (edge.publish). The report state is saved at a clean stop after
the last outbox commit and taken back at start (edge.reportstate).
The lifecycle follows uvicorn's server: `startup()`, `main_loop()`, `shutdown()`. Signal
handlers only set events; the main loop acts on them. Shutdown stops polling, commits what
was polled, lets the publisher finish what is in flight within `drain_timeout`, then cancels
whatever is left and says how many tasks that was.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from gateway import __version__
from gateway.config.load import load_gateway_config
from gateway.core.errors import ConfigError, StorageError
from gateway.core.model import GatewayConfig, Reading
from gateway.core.payload import Health, health_payload, status_topic
from gateway.runtime import systemd
from gateway.runtime.exitcodes import ExitCode
from gateway.runtime.lifecycle import run_phases, signal_handlers

log = logging.getLogger("sensegate.daemon")

STATUS_EVERY = 5.0  # seconds between STATUS= updates to systemd
HEALTH_CHECK_EVERY = 1.0  # seconds between looks for a change worth a new health record
HEALTH_MIN_GAP = 5.0  # at most one record this often: a flapping device must not flood a SIM


@dataclass(frozen=True, slots=True)
class Envelope:
    """What a reading needs besides its values to become a message: measurement and tags."""

    measurement: str
    tags: dict[str, str]


def envelopes(config: GatewayConfig) -> dict[str, Envelope]:
    """Device name → measurement and merged tags (gateway tags, then the device's own)."""
    return {
        d.name: Envelope(d.measurement or d.name, {**config.tags, **d.tags})
        for d in config.devices
    }


def reload_refusal(old: GatewayConfig, new: GatewayConfig) -> str | None:
    """Why a new config cannot be applied without a restart, or None when it can."""
    if new.id != old.id:
        return f"gateway.id changed from {old.id!r} to {new.id!r}; restart to apply"
    if new.state_dir != old.state_dir:
        return "gateway.state_dir changed; restart to apply"
    return None


@dataclass
class Daemon:
    config_path: str
    drain_timeout: float = 10.0
    install_signals: bool = True  # False when embedded (the demo owns the signals)
    # keyword options of `gateway.edge.publish.Publisher`, e.g. {"reconnect_max": 2.0}
    publisher_options: dict[str, Any] = field(default_factory=dict)
    config: GatewayConfig | None = None
    started: bool = False
    should_exit: asyncio.Event = field(default_factory=asyncio.Event)
    reload_requested: asyncio.Event = field(default_factory=asyncio.Event)
    force_exit: bool = False
    failed: bool = False  # a component died of a bug: stop, and exit 1
    _envelopes: dict[str, Envelope] = field(default_factory=dict)
    _tasks: list[asyncio.Task[object]] = field(default_factory=list)
    _reloading: asyncio.Task[None] | None = None  # the reload in progress, if any
    started_at: float = field(default_factory=time.time)
    _page_facts: tuple[GatewayConfig, Any] | None = None  # (config, page ConfigFacts)
    commander: Any = None  # gateway.edge.commands.Commander with commands.enabled
    _commands_task: asyncio.Task[object] | None = None  # its MQTT listener
    config_text: bytes = b""  # the running config file's bytes, as loaded
    config_sha: str = ""  # their sha256 (the health record's config hash)
    config_applied_ts: int = 0  # ns: when the running config was switched to
    _started: float = field(default_factory=time.monotonic)
    _switch_lock: asyncio.Lock | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def run(self) -> int:
        signals = (
            signal_handlers(self._on_exit_signal, self.reload_requested.set)
            if self.install_signals else contextlib.nullcontext()
        )
        with signals:
            return await run_phases(self, "gateway")

    async def startup(self) -> None:
        # The config first: loading it allocates many times the file's size in short-lived
        # objects, and the modules imported next fill the memory they leave (loading after
        # the imports adds 3 MiB to the peak RSS with 100 devices x 20 points; bench/rss.py).
        config, text = self._load()
        # Imported here so `check`, `schema` and friends never pay for these imports.
        from gateway.core.report import Reporter
        from gateway.edge import reportstate
        from gateway.edge.fleet import RemoteConfig, recover
        from gateway.edge.outbox import Outbox
        from gateway.edge.page import ScanJournal
        from gateway.edge.publish import Publisher
        from gateway.edge.scheduler import Poller
        from gateway.edge.statedir import lock_state_dir
        from gateway.runtime.metrics import GatewayMetrics

        self.started_at = time.time()
        self.journal = ScanJournal()
        # One gateway per state_dir: a second one would publish this one's readings.
        self._lock = lock_state_dir(config.state_dir)
        # A pushed config that never passed its probation is undone before it runs again.
        if recover(self.config_path, config.state_dir) is not None:
            config, text = self._load()  # the previous config, put back in place

        self.config = config
        self.config_text = text
        self.config_sha = hashlib.sha256(text).hexdigest()
        self.config_applied_ts = time.time_ns()
        self._envelopes = envelopes(config)
        self.metrics = GatewayMetrics()
        self.outbox = Outbox.open(
            config.state_dir, config.outbox, config.id, metrics=self.metrics
        )
        self.publisher = Publisher(
            config, self.outbox, metrics=self.metrics, status=self.health,
            **self.publisher_options,
        )
        self.reporter = Reporter(config.devices)
        saved = reportstate.take(config.state_dir)
        if saved is not None:
            log.info("report state: %d points continue from before the restart",
                     self.reporter.restore(saved))
        self.poller = Poller(config, self._sink, metrics=self.metrics,
                             on_scan=self._on_scan)
        self.remote = RemoteConfig(self)
        self.remote.configure()
        self._spawn(self._health_loop(), "health")
        # The committer runs until shutdown cancels it; close() then commits what is left.
        self._committer = self._spawn(self.outbox.run_committer(), "outbox-committer")
        self._spawn(self.publisher.run(), "publisher")
        await self.poller.start()
        self.commander = self._start_commands(config)
        self.metrics_server = None
        if config.listener is not None:
            self.metrics_server = await self._serve_http(config)
        self.started = True
        log.info(
            "started gateway %r: %d devices, %d buses, outbox in %s",
            config.id, len(config.devices), len(config.buses), config.state_dir,
        )
        systemd.ready()
        systemd.status(self.status_line())

    async def main_loop(self) -> None:
        watchdog_every = systemd.watchdog_interval()
        tick = min(STATUS_EVERY, watchdog_every or STATUS_EVERY)
        last_status = time.monotonic()
        while not self.should_exit.is_set():
            exit_wait = asyncio.ensure_future(self.should_exit.wait())
            # While a reload runs, wake when it ends; a request made meanwhile stays pending.
            other: asyncio.Future[Any] = (
                self._reloading if self._reloading is not None
                else asyncio.ensure_future(self.reload_requested.wait())
            )
            await asyncio.wait(
                [other, exit_wait], timeout=tick, return_when=asyncio.FIRST_COMPLETED
            )
            if other is not self._reloading:
                other.cancel()
            exit_wait.cancel()
            if watchdog_every:
                systemd.watchdog()
            self._step_reload()
            if time.monotonic() - last_status >= STATUS_EVERY:
                last_status = time.monotonic()
                systemd.status(self.status_line())
            for task in self._tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    # A component died of a bug: that is fatal, but shut down cleanly.
                    log.error("%s stopped: %r", task.get_name(), task.exception())
                    self.failed = True
                    self.should_exit.set()
        if self._reloading is not None:  # stopping: a reload half-read is dropped
            self._reloading.cancel()
            await asyncio.gather(self._reloading, return_exceptions=True)
            self._reloading = None

    async def shutdown(self) -> None:
        systemd.stopping()
        log.info("stopping: draining within %.0fs", self.drain_timeout)
        deadline = time.monotonic() + self.drain_timeout
        if hasattr(self, "remote"):
            await self.remote.close()
        if self.commander is not None and self._commands_task is not None:
            # No new command; one in flight stops here (its id stays *started*: a redelivery
            # after the restart is answered "interrupted", never written twice).
            self._commands_task.cancel()
            await asyncio.gather(self._commands_task, return_exceptions=True)
            self.commander.close()
        if hasattr(self, "poller"):
            with contextlib.suppress(Exception):
                budget = max(0.1, deadline - time.monotonic())
                await asyncio.wait_for(self.poller.stop(), timeout=budget)
        if hasattr(self, "outbox"):
            try:
                self.outbox.flush()
            except StorageError as exc:
                log.error("final outbox commit failed: %s", exc)
            else:
                self._save_report_state()
        if hasattr(self, "publisher") and not self.force_exit:
            remaining = max(0.1, deadline - time.monotonic())
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.publisher.stop(remaining), timeout=remaining + 1.0)
        metrics_server = getattr(self, "metrics_server", None)
        if metrics_server is not None:
            metrics_server.close()
        if getattr(self, "warning_log", None) is not None:
            logging.getLogger("sensegate").removeHandler(self.warning_log)
        if hasattr(self, "_committer"):
            self._committer.cancel()
            await asyncio.gather(self._committer, return_exceptions=True)
        pending = [t for t in self._tasks if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            names = ", ".join(t.get_name() for t in pending)
            log.warning("cancelled %d task(s) still running at shutdown: %s", len(pending), names)
            await asyncio.gather(*pending, return_exceptions=True)
        if hasattr(self, "outbox"):
            at_stop = 0
            try:
                at_stop = self.outbox.close()
            except Exception as exc:  # never skip the exit status for it
                log.error("closing the outbox failed: %r", exc)
            thrown = self.outbox.thrown_away()
            if thrown:
                # Readings polled and neither stored nor published: not a clean stop.
                log.error(
                    "stopped having thrown away %d readings (%d of them at stop) that the "
                    "disk refused to store and could not be published", thrown, at_stop,
                )
                self.failed = True
        if hasattr(self, "_lock"):
            self._lock.release()
        log.info("stopped")

    # -- reload ------------------------------------------------------------------------

    def _step_reload(self) -> None:
        """Coalesce reload requests: at most one reload running and one pending.

        A SIGHUP only sets `reload_requested`; any number of them while a reload runs
        leave one request pending, served by one more reload when the running one ends
        (so the file read last is the one applied).
        """
        if self._reloading is not None and self._reloading.done():
            task, self._reloading = self._reloading, None
            if not task.cancelled() and task.exception() is not None:
                # A bug half-way through applying: the running state is not known to be
                # consistent. Stop (exit 1) as for any component that died of a bug.
                log.error("reload stopped: %r", task.exception())
                self.failed = True
                self.should_exit.set()
                return
        if (self._reloading is None and self.reload_requested.is_set()
                and not self.should_exit.is_set()):
            self.reload_requested.clear()
            self._reloading = asyncio.create_task(self.reload(), name="reload")

    async def reload(self) -> None:
        """Read and check the config in a worker thread, then switch to it in one step.

        Parsing and validating 1,000 devices takes seconds of CPU: on the loop it would stop
        polling for that long, so it runs in a thread (the loop keeps its turns). Nothing
        of the running state changes until the new config is complete and accepted; then
        envelopes, config, publisher and poller switch without the loop running anything
        else in between, and only after that are removed or changed devices waited for.
        """
        assert self.config is not None
        log.info("reloading %s", self.config_path)
        try:
            new, new_envelopes, text = await asyncio.to_thread(self._read_config)
        except ConfigError as exc:
            for issue in exc.issues:
                log.error("reload refused: %s", issue)
            log.error("reload refused: %d error(s); keeping the running config", len(exc.issues))
            return
        refusal = reload_refusal(self.config, new)
        if refusal is not None:
            log.error("reload refused: %s", refusal)
            return
        if (new.listener, new.http) != (self.config.listener, self.config.http):
            log.warning("http settings changed: the listener keeps its address and token "
                        "until a restart")
        old_commands = self.config.commands
        if (new.commands and (new.commands.enabled, new.commands.public_key)) != (
                old_commands and (old_commands.enabled, old_commands.public_key)):
            log.warning("commands.enabled and commands.public_key take effect at the next "
                        "restart (max_age and the points' write limits apply now)")
        await self.switch(new, text, new_envelopes)

    async def switch(self, new: GatewayConfig, text: bytes,
                     new_envelopes: dict[str, Envelope] | None = None) -> None:
        """Run ``new`` from now on: a SIGHUP reload's last step, and a remote config's.

        No await that can yield between taking the lock and poller.apply having taken the
        new config. The outbox is not touched.
        """
        if self._switch_lock is None:
            self._switch_lock = asyncio.Lock()
        async with self._switch_lock:
            # Keep envelopes of removed devices: scans already in flight still need them.
            self._envelopes = {**self._envelopes, **(new_envelopes or envelopes(new))}
            self.config = new
            if self.commander is not None:
                self.commander.config = new
            self.reporter.apply(new.devices)
            self.config_text = text
            self.config_sha = hashlib.sha256(text).hexdigest()
            self.config_applied_ts = time.time_ns()
            self.journal.keep_only({d.name for d in new.devices})
            await self.publisher.apply(new)
            await self.poller.apply(new)
            self.remote.configure()
        log.info("reloaded: %d devices", len(new.devices))
        systemd.status(self.status_line())

    def _load(self) -> tuple[GatewayConfig, bytes]:
        """The config file, loaded, and its bytes (kept for a rollback, hashed for health)."""
        try:
            with open(self.config_path, "rb") as fh:
                text = fh.read()
        except OSError:
            text = b""  # load_gateway_config reports why
        return load_gateway_config(self.config_path), text

    def _read_config(self) -> tuple[GatewayConfig, dict[str, Envelope], bytes]:
        """The worker thread's part of a reload: no state of the daemon is touched here."""
        new, text = self._load()
        return new, envelopes(new), text

    # -- the HTTP listener and the technician's page -----------------------------------

    async def _serve_http(self, config: GatewayConfig) -> Any:
        """``/metrics``, ``/healthz`` and the page (SPEC §9) on the configured address;
        every route but ``/healthz`` behind the optional token (docs/page.md)."""
        from gateway import __version__
        from gateway.core.secrets import register as register_secret
        from gateway.edge.page import WarningLog, page_routes
        from gateway.runtime.http import HttpServer, TokenGate
        from gateway.runtime.logs import ScrubbingFormatter
        from gateway.runtime.metrics import metrics_routes

        listen = config.listener
        assert listen is not None
        secret = config.http.token if config.http is not None else None
        token = secret.reveal() if secret is not None else None
        if token:
            register_secret(token)
        self.warning_log = WarningLog()
        self.warning_log.setFormatter(ScrubbingFormatter("%(message)s"))
        logging.getLogger("sensegate").addHandler(self.warning_log)
        gate = TokenGate(token)
        routes = metrics_routes(self.metrics.registry, healthy=self.healthy)
        routes.update(page_routes(self.page_state, __version__))
        guarded = {path: route if path == "/healthz" else gate.guard(route)
                   for path, route in routes.items()}
        server = await HttpServer(guarded).start(listen.host, listen.port)
        log.info("http listening on %s: the page at /, /metrics, /healthz%s",
                 ", ".join(server.addresses()), " (token required)" if gate.enabled else "")
        return server

    def page_state(self) -> Any:
        """A snapshot of what the page shows (gateway.edge.page.PageState)."""
        from gateway import __version__
        from gateway.core.secrets import scrub
        from gateway.edge.page import (
            BrokerState,
            DeviceCounters,
            OutboxState,
            PageState,
            config_facts,
        )
        from gateway.edge.page.view import refresh_interval

        assert self.config is not None
        config = self.config
        if self._page_facts is None or self._page_facts[0] is not config:
            self._page_facts = (config, config_facts(config))  # once per config
        outbox = self.outbox.stats()
        publisher = self.publisher
        error = publisher.last_error
        return PageState(
            now=time.time(),
            config=config,
            version=__version__,
            started_at=self.started_at,
            config_hash=self.config_sha,
            broker=BrokerState(
                address=f"{config.mqtt.host}:{config.mqtt.port}",
                connected=publisher.connected,
                since=publisher.connection_changed_at,
                last_error=scrub(error) if error else None,
            ),
            outbox=OutboxState(outbox.pending_readings, outbox.oldest_age_s, outbox.dropped,
                               outbox.bytes, self.outbox.problem()),
            counters={
                name: DeviceCounters(s.scans, s.last_ok, s.consecutive_failures, s.backoff)
                for name, s in self.poller.stats().items()
            },
            journal=self.journal.devices,
            warnings=tuple(self.warning_log.entries),
            refresh=refresh_interval(config),
            facts=self._page_facts[1],
        )

    def _on_scan(self, outcome: Any) -> None:
        self.journal.record(outcome.device.name, outcome.reading, outcome.raw, outcome.errors,
                            outcome.duration)

    # -- commands (SPEC §6) -------------------------------------------------------------

    def _start_commands(self, config: GatewayConfig) -> Any:
        """With ``commands.enabled``: the commander and its MQTT listener (own session)."""
        if config.commands is None or not config.commands.enabled:
            return None
        from drivers.modbus import ModbusWriter
        from gateway.edge.commands import Commander, CommandListener

        def open_writer(name: str) -> ModbusWriter:
            assert self.config is not None
            return ModbusWriter(self.config.device(name), self.poller.buses)

        if config.commands.key is None:
            log.warning("commands: no public_key: commands are not signed, only the broker's "
                        "ACL guards the writes (docs/commands.md)")
        commander = Commander(config, open_writer, metrics=self.metrics)
        self._commands_task = self._spawn(CommandListener(config, commander).run(), "commands")
        return commander

    # -- health (SPEC §7) --------------------------------------------------------------

    def failing_devices(self) -> list[str]:
        """Devices of the running config whose last scan got no answer at all."""
        assert self.config is not None
        health = self.poller.health()
        return [d.name for d in self.config.devices if health.get(d.name, (0, 0))[1] > 0]

    def all_scanned(self) -> bool:
        assert self.config is not None
        health = self.poller.health()
        return all(health.get(d.name, (0, 0))[0] > 0 for d in self.config.devices)

    def health(self, state: str) -> bytes:
        """The retained status: the health record of SPEC §7 (the last will too)."""
        assert self.config is not None
        out = self.outbox.stats()
        record = Health(
            version=__version__, config_sha256=self.config_sha,
            config_applied_ts=self.config_applied_ts, devices_total=len(self.config.devices),
            failing=tuple(self.failing_devices()), outbox_pending=out.pending_readings,
            outbox_oldest_s=out.oldest_age_s, outbox_dropped=out.dropped,
            uptime_s=time.monotonic() - self._started,
        )
        return health_payload(state, time.time_ns(), record)

    def _health_key(self) -> tuple[object, ...]:
        assert self.config is not None
        return (self.config_sha, len(self.config.devices), tuple(self.failing_devices()))

    async def _health_loop(self) -> None:
        """Refresh the retained health record every status_interval and on change."""
        sent: list[Any] = [None, time.monotonic()]  # key, when

        def connected() -> None:  # the publisher has just published "online"
            sent[:] = [self._health_key(), time.monotonic()]

        self.publisher.on_connect(connected)
        while True:
            await asyncio.sleep(HEALTH_CHECK_EVERY)
            config = self.config
            if config is None or not self.publisher.connected:
                continue
            key = self._health_key()
            since = time.monotonic() - sent[1]
            if since < config.status_interval and (key == sent[0] or since < HEALTH_MIN_GAP):
                continue
            topic = status_topic(config.mqtt.topic_prefix, config.id)
            if await self.publisher.send(topic, self.health("online"), retain=True):
                sent[:] = [key, time.monotonic()]

    # -- plumbing ----------------------------------------------------------------------

    def _sink(self, reading: Reading) -> None:
        envelope = self._envelopes.get(reading.device)
        if envelope is None:  # cannot happen with a consistent poller; never lose the reading
            envelope = Envelope(reading.device, {})
        for published in self.reporter.process(reading):
            self._add(published, envelope)

    def _add(self, reading: Reading, envelope: Envelope) -> None:
        """Hand one reading to publish (after report by exception) to the outbox."""
        self.outbox.add(reading, measurement=envelope.measurement, tags=envelope.tags)

    def healthy(self) -> bool:
        """/healthz: started, not stopping, and the outbox commits and loses nothing."""
        if not self.started or self.should_exit.is_set():
            return False
        return self.outbox.problem() is None

    def _save_report_state(self) -> None:
        """After the last commit: what was published is in the outbox, so it may be saved."""
        from gateway.edge import reportstate

        if self.config is None or not hasattr(self, "reporter"):
            return
        try:
            reportstate.save(self.config.state_dir, self.reporter.state())
        except (OSError, ValueError) as exc:
            log.error("cannot save the report state: %s; every point publishes its next "
                      "reading after the restart", exc)

    def status_line(self) -> str:
        if self.config is None:
            return "starting"
        stats = self.outbox.stats()
        connected = "connected" if self.publisher.connected else "disconnected"
        problem = self.outbox.problem()
        return (
            f"{len(self.config.devices)} devices; mqtt {connected}; "
            f"outbox {stats.pending_readings} readings pending, {stats.dropped} dropped"
            + (f"; {problem}" if problem else "")
        )

    def _spawn(self, coro: Coroutine[Any, Any, object], name: str) -> asyncio.Task[object]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.append(task)
        return task

    def _on_exit_signal(self, sig: signal.Signals) -> None:
        if self.should_exit.is_set() and sig == signal.SIGINT:
            # A second Ctrl-C: stop waiting for the drain. The outbox keeps what is unsent.
            self.force_exit = True
            log.warning("second interrupt: exiting without draining")
            for task in self._tasks:
                task.cancel()
        self.should_exit.set()



def run(config_path: str) -> int:
    """Entry point of `sensegate run`: exit 0 on a clean stop, 2 on a bad config, 1 if fatal."""
    try:
        return asyncio.run(Daemon(config_path).run())
    except KeyboardInterrupt:
        return ExitCode.OK
