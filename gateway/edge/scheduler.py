"""Per-device scan loops on a fixed monotonic grid, with overrun counting and backoff.

Every device runs in its own asyncio task, so a dead or slow device never delays devices on
other buses or on TCP (on one RS-485 bus the drivers' bus lock serialises transactions).
Scan ``k`` of a device starts at ``t0 + k * interval`` on the event loop's monotonic clock:
the next start is computed from the grid, never by sleeping ``interval`` after the work, so
a device does not drift however long it runs.

The grid is anchored on the wall clock, as Telegraf's ``round_interval``: slots fall on
multiples of the interval since the epoch (a 1 s device on whole seconds, a 1 min device on
the minute), plus a stable per-device *phase*. The phase (a hash of the device name, spread
over at most `STAGGER_MAX` seconds in steps of `STAGGER_STEP`) keeps hundreds of devices
with the same interval from all sending in the same millisecond, while the steps let the
devices of one step share an event-loop wake-up: on small machines each wake-up from idle
costs far more CPU than the Python work of a scan. A device's first scan is its first slot
after it starts (for a long interval, up to one interval later).

A device whose points have their own ``interval`` (SPEC §8) runs one scan loop per interval
group (`gateway.core.plan.interval_groups`): each group is planned on its own (minimal per
group), has its own grid and phase, and its own driver over the device's link, so on an
RS-485 bus the groups of all devices interleave under the bus lock, one transaction in
flight. A group's reading carries that group's points only. `Poller.stats` names the first
(fastest) group's loop after the device and the others ``device@interval`` (``wxt-1@1m``).

A scan that cannot start on time (the previous one is still running, or the event loop woke
later than `late_tolerance` after the slot) is an *overrun*: counted and skipped, never
queued. Each scan performed gives exactly one `Reading` to the sink, even when every point
is bad (its ``quality`` says so).

A device whose every point is bad `BACKOFF_AFTER` scans in a row is backed off: it is polled
every ``interval * 2**level`` (still on its grid), the level rising by one per failed scan
up to `backoff_cap`; it is back to every slot as soon as it answers. A device that does not
answer therefore cannot take a shared bus's time away from the devices that do.

Exceptions raised by a driver (which should never happen: drivers report device faults in
``ScanResult.errors``) are caught, logged with device, unit and bus, and turned into an
all-bad reading: the daemon never dies of a sensor's fault. A scan that does not return
within `hang_timeout` is cancelled the same way.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from drivers.base import bus_label, unit_of, where
from gateway.core.errors import DriverError
from gateway.core.model import BusConfig, DeviceConfig, GatewayConfig, Reading
from gateway.core.plan import interval_groups
from gateway.core.units import format_duration
from gateway.runtime.metrics import GatewayMetrics

log = logging.getLogger("sensegate.scheduler")

BACKOFF_AFTER = 3  # all-bad scans in a row before a device is backed off
BACKOFF_MAX = 60.0  # seconds: a backed-off device is polled at least this often ...
BACKOFF_MAX_INTERVALS = 16  # ... and at least every this many intervals, whichever is sooner
LATE_FRACTION = 0.25  # a scan may start this fraction of its interval late ...
LATE_MAX = 0.25  # ... but never more than this many seconds, else it is an overrun
STAGGER_MAX = 1.0  # seconds over which device phases are spread ...
STAGGER_STEP = 0.05  # ... in steps of this many seconds (devices of one step wake together)
HANG_MIN = 30.0  # a scan running longer than this (and than 4 intervals) is cancelled
STOP_GRACE = 2.0  # seconds a stopping device may take to finish the scan in flight
FIRST_SCAN_WAIT = 5.0  # a device whose first grid slot is further off is scanned at once


# -- the schedule, as pure functions ----------------------------------------------------------


def late_tolerance(interval: float) -> float:
    """How late after its slot a scan may still start and count as on time."""
    return min(LATE_FRACTION * interval, LATE_MAX)


def backoff_cap(interval: float) -> int:
    """The largest step, in intervals, between scans of a backed-off device (a power of 2)."""
    limit = min(BACKOFF_MAX, BACKOFF_MAX_INTERVALS * interval)
    steps = max(1, int(limit / interval + 1e-9))
    return 1 << (steps.bit_length() - 1)


def backoff_step(consecutive_failures: int, interval: float) -> int:
    """Slots from one scan to the next after ``consecutive_failures`` all-bad scans."""
    if consecutive_failures < BACKOFF_AFTER:
        return 1
    level = consecutive_failures - BACKOFF_AFTER + 1
    return min(1 << min(level, 30), backoff_cap(interval))


def phase(name: str, interval: float) -> float:
    """A stable offset in ``[0, min(interval, STAGGER_MAX))``, a multiple of `STAGGER_STEP`,
    derived from the device name."""
    spread = min(interval, STAGGER_MAX)
    steps = int(spread / STAGGER_STEP + 1e-9)
    if steps < 2:
        return 0.0
    return (zlib.crc32(name.encode()) % steps) * STAGGER_STEP


def first_slot(now: float, wall: float, interval: float, offset: float) -> float:
    """The first slot at or after monotonic ``now`` on the grid of wall-clock multiples of
    ``interval`` plus ``offset`` (``wall`` is the wall-clock time at ``now``)."""
    base = now - math.fmod(wall, interval) + offset
    return base + math.ceil((now - base) / interval - 1e-9) * interval


def slot_time(t0: float, interval: float, k: int) -> float:
    """Start of slot ``k``: computed from the grid, never accumulated."""
    return t0 + k * interval


def next_slot(t0: float, interval: float, k_min: int, now: float, tolerance: float) -> int:
    """The first slot ``k >= k_min`` that can still start on time at ``now``.

    Slots in ``[k_min, k)`` have passed by more than ``tolerance``: they are overruns.
    """
    if now <= t0 + k_min * interval + tolerance:
        return k_min
    k = max(k_min, math.ceil((now - tolerance - t0) / interval))
    while t0 + k * interval + tolerance < now:  # guard against rounding
        k += 1
    return k


# -- what the poller needs from drivers and metrics --------------------------------------------


class ScanResultLike(Protocol):
    reading: Reading
    errors: list[DriverError]


class DriverLike(Protocol):
    async def scan(self) -> Any: ...  # -> drivers.base.ScanResult

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ScanOutcome:
    """One scan as an observer sees it (the technician's page keeps the last ones)."""

    device: DeviceConfig
    reading: Reading
    raw: dict[str, Any]  # point name -> the registers (or bits) it was decoded from
    errors: list[Any]  # DriverError
    duration: float  # seconds the driver's scan took


ScanObserver = Callable[[ScanOutcome], None]
DriverFactory = Callable[[DeviceConfig, GatewayConfig, Any], DriverLike]
BusFactory = Callable[[GatewayConfig], Any]


class _Counter(Protocol):
    def labels(self, *args: str, **kwargs: str) -> Any: ...


@dataclass(slots=True)
class DeviceStats:
    """What one device's scan loop has done since it (re)started."""

    device: str
    interval: float
    scans: int = 0  # scans performed (each gave one reading)
    overruns: int = 0  # slots skipped because the scan could not start on time
    backoff_skips: int = 0  # slots left out on purpose while backed off
    failed_scans: int = 0  # scans in which every point was bad
    failures: dict[str, int] = field(default_factory=dict)  # errors by kind
    last_ok: float | None = None  # wall time (s since the epoch) of the last scan answered
    consecutive_failures: int = 0
    backoff: int = 1  # current step in intervals: 1 = polled every slot
    t0: float = 0.0  # monotonic time of slot 0
    last_slot: int = -1  # the slot of the last scan started
    max_lateness: float = 0.0  # seconds, over the scans performed
    total_lateness: float = 0.0
    sink_errors: int = 0

    @property
    def backed_off(self) -> bool:
        return self.backoff > 1

    @property
    def slots(self) -> int:
        """Slots that have come round so far: performed, overrun or skipped by backoff."""
        return self.scans + self.overruns + self.backoff_skips


def bad_reading(device: DeviceConfig) -> Reading:
    """The reading of a scan that got nothing: every point bad."""
    return Reading(
        device.name, time.time_ns(), {}, {p.name: "bad" for p in device.points}
    )


def answered(reading: Reading, errors: list[Any]) -> bool:
    """Whether the device said anything useful: some point not bad (or no point and no error),
    or a reply that refused the request (a Modbus exception: the device is there)."""
    if any(getattr(error, "kind", None) == "exception" for error in errors):
        return True
    if reading.values:
        return True
    if reading.quality:
        return any(q != "bad" for q in reading.quality.values())
    return not errors


# -- one device --------------------------------------------------------------------------------


class _DeviceRunner:
    """The scan loop of one device, in its own task."""

    def __init__(self, poller: Poller, device: DeviceConfig, t0: float, key: str = "") -> None:
        self.poller = poller
        self.device = device  # one interval group of the configured device
        self.key = key or device.name
        self.where = where(device)
        self.tolerance = late_tolerance(device.interval)
        self.hang_timeout = max(HANG_MIN, 4 * device.interval)
        self.stats = DeviceStats(device.name, device.interval, t0=t0)
        self.driver: DriverLike | None = None
        self.task: asyncio.Task[None] | None = None
        self._scanning = False
        self._stopping = False
        self._hung = False
        self._metrics = poller.metrics
        self._m_scans = poller.metrics.scans_total.labels(device=device.name)
        self._m_overruns = poller.metrics.scan_overruns_total.labels(device=device.name)

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(
            self._run(), name=f"poll-{self.key}"
        )

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop after the scan in flight (if any, within ``grace``), then close the driver."""
        self._stopping = True
        task = self.task
        if task is not None and not task.done():
            if not self._scanning:
                task.cancel()
            await asyncio.wait({task}, timeout=grace)
            if not task.done():
                log.warning("%s: scan still running after %.1fs; cancelled", self.where, grace)
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._close_driver()

    async def _close_driver(self) -> None:
        driver, self.driver = self.driver, None
        if driver is None:
            return
        try:
            await asyncio.wait_for(driver.close(), timeout=STOP_GRACE)
        except Exception as exc:
            log.warning("%s: closing the driver failed: %r", self.where, exc)

    async def _run(self) -> None:
        """The scan loop, restarted on its grid should a bug ever break it."""
        loop = asyncio.get_running_loop()
        if self.stats.t0 - loop.time() > FIRST_SCAN_WAIT:
            # A 15-minute device should not stay silent for up to 15 minutes after a start
            # or a reload: one scan now, off the grid, then the grid.
            await self._scan(loop)
        while not self._stopping:
            try:
                await self._loop()
            except Exception:
                log.exception("%s: scan loop failed; restarting it", self.where)
                self._scanning = False
                await asyncio.sleep(self.device.interval)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        stats = self.stats
        interval = self.device.interval
        tolerance = self.tolerance
        t0 = stats.t0
        k_min = stats.last_slot + 1
        while not self._stopping:
            now = loop.time()
            k = next_slot(t0, interval, k_min, now, tolerance)
            if k > k_min:  # slots that passed while the last scan ran (or the loop was busy)
                self._overrun(k - k_min)
                k_min = k
            target = t0 + k * interval
            if target > now:
                await asyncio.sleep(target - now)
                now = loop.time()
                if now - target > tolerance:  # woken too late: slot k is lost, counted above
                    continue
            lateness = now - target
            if lateness > stats.max_lateness:
                stats.max_lateness = lateness
            if lateness > 0:
                stats.total_lateness += lateness
            stats.last_slot = k
            await self._scan(loop)
            step = stats.backoff
            if step > 1:
                # Slots inside the backoff step are skipped on purpose, not overruns.
                stats.backoff_skips += step - 1
            k_min = k + step

    def _overrun(self, missed: int) -> None:
        if missed <= 0:
            return
        self.stats.overruns += missed
        self._m_overruns.inc(missed)
        log.debug("%s: %d scan(s) could not start on time; skipped", self.where, missed)

    async def _scan(self, loop: asyncio.AbstractEventLoop) -> None:
        device = self.device
        errors: list[Any] = []
        reading: Reading | None = None
        raw: dict[str, Any] = {}
        started = loop.time()
        self._scanning = True
        self._hung = False
        watchdog = loop.call_later(self.hang_timeout, self._on_hang)
        try:
            if self.driver is None:
                self.driver = self.poller.create_driver(device)
            result = await self.driver.scan()
            reading = result.reading
            errors = result.errors
            raw = getattr(result, "raw", None) or {}
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not self._hung or self._stopping or task is None:
                raise
            task.uncancel()
            errors = [_error(device, f"scan did not finish within {self.hang_timeout:g}s",
                             "hang")]
            log.error("%s: scan did not finish within %gs; cancelled",
                      self.where, self.hang_timeout)
        except Exception as exc:  # a driver bug must not kill the poller
            kind = exc.kind if isinstance(exc, DriverError) else "exception"
            errors = [exc if isinstance(exc, DriverError) else _error(device, repr(exc), kind)]
            if self.stats.consecutive_failures == 0 or log.isEnabledFor(logging.DEBUG):
                log.error("%s: scan raised %r", self.where, exc,
                          exc_info=not isinstance(exc, DriverError))
        finally:
            watchdog.cancel()
            self._scanning = False
        if reading is None:
            reading = bad_reading(device)
        try:  # the reading first: nothing below may lose it
            self.poller.sink(reading)
        except Exception as exc:
            self.stats.sink_errors += 1
            log.error("%s: reading of ts %d not taken by the sink: %r", self.where, reading.ts, exc)
        self._account(reading, errors)
        observer = self.poller.on_scan
        if observer is not None:
            try:
                observer(ScanOutcome(device, reading, raw, errors, loop.time() - started))
            except Exception:
                log.exception("%s: scan observer failed", self.where)

    def _on_hang(self) -> None:
        if self._scanning and self.task is not None and not self.task.done():
            self._hung = True
            self.task.cancel()

    def _account(self, reading: Reading, errors: list[Any]) -> None:
        stats = self.stats
        stats.scans += 1
        self._m_scans.inc()
        for err in errors:
            kind = getattr(err, "kind", "io")
            stats.failures[kind] = stats.failures.get(kind, 0) + 1
            self._metrics.device_errors_total.labels(device=self.device.name, kind=kind).inc()
        if answered(reading, errors):
            # The driver logs each failure and recovery; this logs only the backoff.
            if stats.backoff > 1:
                log.info("%s: answering again after %d failed scans; polling every %gs",
                         self.where, stats.consecutive_failures, self.device.interval)
            stats.consecutive_failures = 0
            stats.backoff = 1
            stats.last_ok = reading.ts / 1e9
            return
        stats.failed_scans += 1
        stats.consecutive_failures += 1
        step = backoff_step(stats.consecutive_failures, self.device.interval)
        if step != stats.backoff:
            log.warning("%s: no answer %d scans in a row; polling every %gs",
                        self.where, stats.consecutive_failures, step * self.device.interval)
        stats.backoff = step


def _error(device: DeviceConfig, message: str, kind: str) -> DriverError:
    return DriverError(message, device=device.name, unit=unit_of(device), bus=bus_label(device),
                       kind=kind)


# -- the poller --------------------------------------------------------------------------------


def _default_driver_factory(device: DeviceConfig, config: GatewayConfig, buses: Any) -> Any:
    from drivers.registry import create_driver

    return create_driver(device, config, buses)


def _default_bus_factory(config: GatewayConfig) -> Any:
    from drivers.bus import BusRegistry

    return BusRegistry(config.buses)


class Poller:
    """Runs every device's scan loop; `apply` a new config without stopping the others.

    ``sink`` is called synchronously with each reading and must be cheap (``Outbox.add``).
    ``metrics`` is the daemon's `GatewayMetrics` (a private one when not given); its
    ``forget_device`` is called for each device a reload removes. ``on_scan``, when set,
    is called synchronously with every scan's `ScanOutcome` and must be cheap.
    """

    def __init__(
        self,
        config: GatewayConfig,
        sink: Callable[[Reading], None],
        *,
        metrics: GatewayMetrics | None = None,
        driver_factory: DriverFactory | None = None,
        bus_factory: BusFactory | None = None,
        on_scan: ScanObserver | None = None,
    ) -> None:
        self.config = config
        self.sink = sink
        self.on_scan = on_scan
        self.metrics = metrics if metrics is not None else GatewayMetrics()
        self._driver_factory = driver_factory or _default_driver_factory
        self._bus_factory = bus_factory or _default_bus_factory
        self._buses: Any = None
        self._runners: dict[str, _DeviceRunner] = {}
        self._started = False

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        self._buses = self._bus_factory(self.config)
        for device in self.config.devices:
            self._start_device(device)
        log.info("polling %d devices", len(self._runners))

    async def stop(self) -> None:
        runners = list(self._runners.values())
        self._runners.clear()
        await asyncio.gather(*(r.stop() for r in runners), return_exceptions=True)
        await self._close_buses(self._buses)
        self._buses = None
        self._started = False

    async def apply(self, new: GatewayConfig) -> None:
        """Move to ``new``: start added devices, stop removed ones, restart changed ones.

        Unchanged devices keep running untouched (same task, driver and grid). A bus is
        rebuilt only if its own settings changed; the devices on it are then restarted.
        """
        old = self.config
        self.config = new
        if not self._started:
            return
        changed_buses = changed_bus_names(old.buses, new.buses)
        plan = diff_devices(old, new, changed_buses)
        going = {*plan.removed, *plan.changed}
        to_stop = [self._runners.pop(key) for key, r in list(self._runners.items())
                   if r.device.name in going]
        await asyncio.gather(*(r.stop() for r in to_stop), return_exceptions=True)
        for name in plan.removed:
            self.metrics.forget_device(name)
        if changed_buses:
            await self._rebuild_buses(new)
        for name in (*plan.changed, *plan.added):
            self._start_device(new.device(name))
        for name in plan.unchanged:
            # Unchanged devices keep running; they see the new config object for lookups.
            for key, group in _group_keys(new.device(name)):
                if key in self._runners:
                    self._runners[key].device = group
        log.info("config applied: %d added, %d removed, %d changed, %d unchanged",
                 len(plan.added), len(plan.removed), len(plan.changed), len(plan.unchanged))

    def stats(self) -> dict[str, DeviceStats]:
        """A snapshot of every running device's statistics."""
        return {
            name: replace(r.stats, failures=dict(r.stats.failures))
            for name, r in self._runners.items()
        }

    def health(self) -> dict[str, tuple[int, int]]:
        """Device -> (scans, consecutive failures): the cheap look the health record takes
        every second (`stats` copies every device's whole statistics)."""
        return {name: (r.stats.scans, r.stats.consecutive_failures)
                for name, r in self._runners.items()}

    @property
    def buses(self) -> Any:
        """The links of the running config (`drivers.bus.BusRegistry`), None when stopped."""
        return self._buses

    @property
    def devices(self) -> list[str]:
        return list(dict.fromkeys(r.device.name for r in self._runners.values()))

    # -- plumbing -----------------------------------------------------------------------------

    def create_driver(self, device: DeviceConfig) -> DriverLike:
        return self._driver_factory(device, self.config, self._buses)

    def _start_device(self, device: DeviceConfig) -> None:
        now = asyncio.get_running_loop().time()
        wall = time.time()
        for key, group in _group_keys(device):
            t0 = first_slot(now, wall, group.interval, phase(key, group.interval))
            runner = _DeviceRunner(self, group, t0, key)
            self._runners[key] = runner
            runner.start()

    async def _rebuild_buses(self, new: GatewayConfig) -> None:
        """Let the registry drop the links of changed buses (`BusRegistry.update`); a
        registry that cannot do that is replaced whole (only the devices on changed buses
        were restarted: the others keep the links their drivers hold)."""
        registry = self._buses
        update = getattr(registry, "update", None)
        if update is not None:
            result = update(new.buses)
            if asyncio.iscoroutine(result):
                await result
            return
        self._buses = self._bus_factory(new)
        await self._close_buses(registry)

    async def _close_buses(self, registry: Any) -> None:
        close = getattr(registry, "close", None)
        if close is None:
            return
        try:
            result = close()
            if asyncio.iscoroutine(result):
                await result
        except Exception as exc:
            log.warning("closing buses failed: %r", exc)


def _group_keys(device: DeviceConfig) -> list[tuple[str, DeviceConfig]]:
    """(scan loop name, interval group) of each interval group of ``device``."""
    groups = interval_groups(device)
    return [(device.name if i == 0 else f"{device.name}@{format_duration(g.interval)}", g)
            for i, g in enumerate(groups)]


# -- config diff -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DevicePlan:
    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]
    unchanged: tuple[str, ...]


def changed_bus_names(old: Iterable[BusConfig], new: Iterable[BusConfig]) -> set[str]:
    """Names of buses added, removed, or whose settings differ."""
    a = {b.name: b for b in old}
    b = {b.name: b for b in new}
    return {n for n in a.keys() | b.keys() if a.get(n) != b.get(n)}


def diff_devices(
    old: GatewayConfig, new: GatewayConfig, changed_buses: set[str] | None = None
) -> DevicePlan:
    """Which devices a reload adds, removes, restarts (config or bus changed) or leaves alone."""
    changed_buses = changed_bus_names(old.buses, new.buses) if changed_buses is None \
        else changed_buses
    before = {d.name: d for d in old.devices}
    added: list[str] = []
    changed: list[str] = []
    unchanged: list[str] = []
    for device in new.devices:
        prev = before.get(device.name)
        if prev is None:
            added.append(device.name)
        elif prev != device or (device.bus is not None and device.bus in changed_buses):
            changed.append(device.name)
        else:
            unchanged.append(device.name)
    names = {d.name for d in new.devices}
    removed = [d.name for d in old.devices if d.name not in names]
    return DevicePlan(tuple(added), tuple(removed), tuple(changed), tuple(unchanged))
