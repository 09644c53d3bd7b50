"""The poller's schedule, overruns, backoff, reload diff and fault isolation, on fake drivers.

Most tests run on an event loop with a virtual clock: time only moves when every task is
waiting, by exactly as much as the next timer needs. So they assert exact schedules (hours of
scans in milliseconds) without ever depending on how loaded the machine is. The few tests on
a real loop assert only counts with generous margins or properties that hold by construction.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from gateway.core.errors import DriverError
from gateway.core.model import (
    BusConfig,
    DeviceConfig,
    GatewayConfig,
    MqttConfig,
    PointConfig,
    Reading,
    SerialSettings,
)
from gateway.edge import scheduler
from gateway.edge.scheduler import (
    Poller,
    answered,
    backoff_cap,
    backoff_step,
    diff_devices,
    first_slot,
    late_tolerance,
    next_slot,
    phase,
)
from gateway.runtime.metrics import GatewayMetrics

# -- a virtual clock ----------------------------------------------------------------------------


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock jumps to the next timer whenever nothing else is ready."""

    def __init__(self) -> None:
        super().__init__()
        self._now = 1000.0
        real_select = self._selector.select  # type: ignore[attr-defined]

        def select(timeout: float | None = None) -> Any:
            events = real_select(0)
            if not events and timeout:
                self._now += timeout
            return events

        self._selector.select = select  # type: ignore[attr-defined]

    def time(self) -> float:
        return self._now

    def block(self, seconds: float) -> None:
        """Pretend a callback hogged the loop for ``seconds``."""
        self._now += seconds


async def until(poller: Poller, device: str, offset: float) -> None:
    """Sleep until ``offset`` seconds after slot 0 of ``device``."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(poller.stats()[device].t0 + offset - loop.time())


def run_virtual(main: Callable[[VirtualClockLoop], Awaitable[None]]) -> None:
    loop = VirtualClockLoop()
    try:
        loop.run_until_complete(main(loop))
    finally:
        loop.close()


# -- fake drivers -------------------------------------------------------------------------------


@dataclass
class FakeResult:
    reading: Reading
    raw: dict[str, list[int]] = field(default_factory=dict)
    errors: list[DriverError] = field(default_factory=list)


@dataclass
class Behaviour:
    """What a fake device does at its n-th scan (0-based)."""

    duration: Callable[[int], float] = lambda n: 0.01
    answers: Callable[[int], bool] = lambda n: True
    raises: Callable[[int], BaseException | None] = lambda n: None
    hangs: Callable[[int], bool] = lambda n: False


class FakeDriver:
    def __init__(self, device: DeviceConfig, behaviour: Behaviour, log: list[FakeDriver]) -> None:
        self.device = device
        self.behaviour = behaviour
        self.starts: list[float] = []
        self.closed = False
        log.append(self)

    async def scan(self) -> FakeResult:
        n = len(self.starts)
        self.starts.append(asyncio.get_running_loop().time())
        b = self.behaviour
        if b.hangs(n):
            await asyncio.Event().wait()
        await asyncio.sleep(b.duration(n))
        exc = b.raises(n)
        if exc is not None:
            raise exc
        names = [p.name for p in self.device.points]
        if b.answers(n):
            return FakeResult(Reading(self.device.name, 1, {p: 1.0 for p in names}, {}))
        err = DriverError("no answer", device=self.device.name, unit=self.device.unit,
                          kind="timeout")
        return FakeResult(Reading(self.device.name, 1, {}, {p: "bad" for p in names}), {}, [err])

    async def close(self) -> None:
        self.closed = True


class FakeBuses:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.closed = False
        self.updates: list[tuple[BusConfig, ...]] = []

    def update(self, buses: tuple[BusConfig, ...]) -> None:
        self.updates.append(buses)

    async def close(self) -> None:
        self.closed = True


@dataclass
class Rig:
    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    drivers: list[FakeDriver] = field(default_factory=list)
    readings: list[Reading] = field(default_factory=list)
    registries: list[FakeBuses] = field(default_factory=list)

    def poller(self, config: GatewayConfig, **kwargs: Any) -> Poller:
        return Poller(config, self.readings.append, driver_factory=self.driver,
                      bus_factory=self.buses, **kwargs)

    def driver(self, device: DeviceConfig, config: GatewayConfig, buses: Any) -> FakeDriver:
        return FakeDriver(device, self.behaviours.get(device.name, Behaviour()), self.drivers)

    def buses(self, config: GatewayConfig) -> FakeBuses:
        self.registries.append(FakeBuses(config))
        return self.registries[-1]

    def of(self, name: str) -> list[FakeDriver]:
        return [d for d in self.drivers if d.device.name == name]


POINTS = (PointConfig("a", "uint16", "holding", 0), PointConfig("b", "uint16", "holding", 1))


def tcp(name: str, interval: float = 1.0, **kw: Any) -> DeviceConfig:
    return DeviceConfig(name, "modbus-tcp", POINTS, interval=interval, host="127.0.0.1",
                        port=502, **kw)


def rtu(name: str, bus: str, unit: int = 1) -> DeviceConfig:
    return DeviceConfig(name, "modbus-rtu", POINTS, bus=bus, unit=unit)


def gateway(*devices: DeviceConfig, buses: tuple[BusConfig, ...] = ()) -> GatewayConfig:
    return GatewayConfig("gw", MqttConfig("127.0.0.1", 1883, "c"), devices, buses=buses)


def slots_of(driver: FakeDriver, t0: float, interval: float) -> list[int]:
    return [round((t - t0) / interval) for t in driver.starts]


# -- pure schedule -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("k_min", "now", "expected"),
    [
        pytest.param(0, 99.0, 0, id="early"),
        pytest.param(0, 100.0, 0, id="exactly-on-slot"),
        pytest.param(0, 100.25, 0, id="late-within-tolerance"),
        pytest.param(0, 100.26, 1, id="late-beyond-tolerance"),
        pytest.param(3, 103.1, 3, id="later-slot-on-time"),
        pytest.param(3, 105.5, 6, id="three-slots-missed"),
        pytest.param(3, 105.2, 5, id="two-missed-next-within-tolerance"),
    ],
)
def test_next_slot(k_min: int, now: float, expected: int) -> None:
    assert next_slot(100.0, 1.0, k_min, now, 0.25) == expected


def test_next_slot_never_returns_a_passed_slot() -> None:
    for i in range(2000):
        now = 5.0 + i * 0.0137
        k = next_slot(5.0, 0.1, 0, now, 0.01)
        assert 5.0 + k * 0.1 + 0.01 >= now
        assert k == 0 or 5.0 + (k - 1) * 0.1 + 0.01 < now


@pytest.mark.parametrize(
    ("interval", "cap"),
    [
        pytest.param(0.1, 16, id="100ms-16-intervals"),
        pytest.param(1.0, 16, id="1s-16-intervals"),
        pytest.param(5.0, 8, id="5s-capped-at-60s"),
        pytest.param(30.0, 2, id="30s"),
        pytest.param(120.0, 1, id="longer-than-cap-no-backoff"),
    ],
)
def test_backoff_cap(interval: float, cap: int) -> None:
    assert backoff_cap(interval) == cap


def test_backoff_steps_double_then_cap() -> None:
    steps = [backoff_step(n, 1.0) for n in range(0, 12)]
    assert steps == [1, 1, 1, 2, 4, 8, 16, 16, 16, 16, 16, 16]


def test_tolerance_and_phase_are_small_and_stable() -> None:
    assert late_tolerance(1.0) == 0.25
    assert late_tolerance(0.1) == pytest.approx(0.025)
    assert late_tolerance(60.0) == 0.25
    assert phase("rws-1", 1.0) == phase("rws-1", 1.0)
    assert 0.0 <= phase("rws-1", 3600.0) < 1.0
    spread = [phase(f"d{i}", 1.0) for i in range(500)]
    # 20 steps of 50 ms, each holding a fair share of the devices
    assert sorted(set(spread)) == pytest.approx([i * 0.05 for i in range(20)])
    assert max(spread.count(p) for p in set(spread)) < 3 * 500 / 20
    assert phase("x", 0.05) == 0.0


@pytest.mark.parametrize(
    ("now", "wall", "interval", "offset", "expected"),
    [
        pytest.param(100.0, 1_700_000_000.25, 1.0, 0.0, 100.75, id="next-whole-second"),
        pytest.param(100.0, 1_700_000_000.25, 1.0, 0.5, 100.25, id="with-phase"),
        pytest.param(100.0, 1_700_000_000.0, 1.0, 0.0, 100.0, id="on-the-slot"),
        pytest.param(100.0, 1_700_000_010.0, 60.0, 0.0, 130.0, id="on-the-minute"),  # :30 now
        pytest.param(100.0, 1_700_000_000.9, 1.0, 0.95, 100.05, id="phase-later-this-second"),
    ],
)
def test_first_slot_is_on_the_wall_clock_grid(
    now: float, wall: float, interval: float, offset: float, expected: float
) -> None:
    assert first_slot(now, wall, interval, offset) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("values", "quality", "errors", "expected"),
    [
        pytest.param({"a": 1}, {"b": "bad"}, [1], True, id="partial"),
        pytest.param({}, {"a": "invalid", "b": "bad"}, [1], True, id="invalid-is-an-answer"),
        pytest.param({}, {"a": "bad", "b": "bad"}, [1], False, id="all-bad"),
        pytest.param({}, {}, [], True, id="no-points-no-errors"),
        pytest.param({}, {}, [1], False, id="no-points-errors"),
    ],
)
def test_answered(values: dict[str, Any], quality: dict[str, str], errors: list[Any],
                  expected: bool) -> None:
    assert answered(Reading("d", 1, values, quality), errors) is expected


# -- the loop on a virtual clock -----------------------------------------------------------------


def test_scans_stay_on_the_grid_for_hours() -> None:
    rig = Rig({"d": Behaviour(duration=lambda n: 0.3 + (n % 7) * 0.09)})
    config = gateway(tcp("d", interval=1.0))

    async def main(loop: VirtualClockLoop) -> None:
        poller = rig.poller(config)
        await poller.start()
        await until(poller, "d", 3 * 3600 + 0.95)
        stats = poller.stats()["d"]
        await poller.stop()
        starts = rig.of("d")[0].starts
        assert len(starts) == 3 * 3600 + 1
        for k, t in enumerate(starts):
            assert t == pytest.approx(stats.t0 + k * 1.0, abs=1e-6)
        assert stats.overruns == 0
        assert stats.scans == len(starts) == len(rig.readings)

    run_virtual(main)


@pytest.mark.parametrize(
    ("interval", "wall", "initial_scan"),
    [
        pytest.param(900.0, 1000.0, True, id="15min-device-first-slot-far-off"),
        pytest.param(900.0, 898.0, False, id="15min-device-first-slot-in-2s"),
        pytest.param(1.0, 1000.0, False, id="1s-device"),
    ],
)
def test_first_scan_does_not_wait_for_a_far_slot(
    monkeypatch: pytest.MonkeyPatch, interval: float, wall: float, initial_scan: bool
) -> None:
    # The grid is aligned to the wall clock: pin it so the first slot is where we say.
    import types

    from gateway.edge import scheduler

    monkeypatch.setattr(scheduler, "time", types.SimpleNamespace(
        time=lambda: wall, time_ns=time.time_ns))
    monkeypatch.setattr(scheduler, "phase", lambda name, interval: 0.0)
    rig = Rig()
    config = gateway(tcp("d", interval=interval))

    async def main(loop: VirtualClockLoop) -> None:
        start = loop.time()
        poller = rig.poller(config)
        await poller.start()
        t0 = poller.stats()["d"].t0
        await until(poller, "d", interval + 0.5)  # past slots 0 and 1
        await poller.stop()
        starts = rig.of("d")[0].starts
        grid = [pytest.approx(t0, abs=1e-6), pytest.approx(t0 + interval, abs=1e-6)]
        if initial_scan:
            assert starts == [pytest.approx(start, abs=1e-6), *grid]
        else:
            assert starts == grid

    run_virtual(main)


def test_fractional_interval_does_not_accumulate_rounding() -> None:
    rig = Rig({"d": Behaviour(duration=lambda n: 0.05)})

    async def main(loop: VirtualClockLoop) -> None:
        poller = rig.poller(gateway(tcp("d", interval=0.1)))
        await poller.start()
        await until(poller, "d", 1000.07)
        t0 = poller.stats()["d"].t0
        await poller.stop()
        starts = rig.of("d")[0].starts
        assert slots_of(rig.of("d")[0], t0, 0.1) == list(range(len(starts)))
        assert starts[-1] == pytest.approx(t0 + (len(starts) - 1) * 0.1, abs=1e-6)

    run_virtual(main)


def test_overrun_is_counted_and_skipped_not_queued() -> None:
    rig = Rig({"slow": Behaviour(duration=lambda n: 2.5)})

    async def main(loop: VirtualClockLoop) -> None:
        poller = rig.poller(gateway(tcp("slow", interval=1.0)))
        await poller.start()
        await until(poller, "slow", 29.9)
        stats = poller.stats()["slow"]
        await poller.stop()
        # Each scan takes 2.5 slots: it starts at slots 0, 3, 6, ... and the two slots it
        # overlaps are overruns. Never two scans back to back to catch up.
        assert slots_of(rig.of("slow")[0], stats.t0, 1.0) == list(range(0, 30, 3))
        assert stats.scans == 10
        assert stats.overruns == 20  # slots 28 and 29 passed during the last scan
        assert stats.max_lateness == 0.0

    run_virtual(main)


def test_scan_slightly_longer_than_interval_starts_late_within_tolerance() -> None:
    rig = Rig({"d": Behaviour(duration=lambda n: 1.1 if n == 0 else 0.1)})

    async def main(loop: VirtualClockLoop) -> None:
        poller = rig.poller(gateway(tcp("d", interval=1.0)))
        await poller.start()
        await until(poller, "d", 5.0)
        stats = poller.stats()["d"]
        await poller.stop()
        assert slots_of(rig.of("d")[0], stats.t0, 1.0)[:3] == [0, 1, 2]
        assert stats.overruns == 0
        assert stats.max_lateness == pytest.approx(0.1)

    run_virtual(main)


def test_busy_event_loop_makes_overruns_not_a_burst() -> None:
    rig = Rig()

    async def main(loop: VirtualClockLoop) -> None:
        poller = rig.poller(gateway(tcp("d", interval=1.0)))
        await poller.start()
        await until(poller, "d", 5.5)
        loop.block(3.4)  # a callback hogged the loop past slots 6, 7 and 8
        await asyncio.sleep(3.0)
        stats = poller.stats()["d"]
        await poller.stop()
        slots = slots_of(rig.of("d")[0], stats.t0, 1.0)
        assert slots == [0, 1, 2, 3, 4, 5, 9, 10, 11]
        assert stats.overruns == 3

    run_virtual(main)


def test_backoff_doubles_caps_and_resets_on_answer() -> None:
    # Silent for its first 200 scans, then answers again.
    rig = Rig({"dead": Behaviour(answers=lambda n: n >= 11)})

    async def main(loop: VirtualClockLoop) -> None:
        poller = rig.poller(gateway(tcp("dead", interval=1.0)))
        await poller.start()
        await until(poller, "dead", 3.5)
        assert poller.stats()["dead"].backoff == 2
        await asyncio.sleep(150.0)
        stats = poller.stats()["dead"]
        await poller.stop()
        slots = slots_of(rig.of("dead")[0], stats.t0, 1.0)
        gaps = [b - a for a, b in itertools.pairwise(slots)]
        # 3 failures at every slot, then 2, 4, 8, 16 slots apart (cap: 16 intervals) ...
        assert gaps[:11] == [1, 1, 2, 4, 8, 16, 16, 16, 16, 16, 16]
        # ... and back to every slot from the first answer (the 12th scan).
        assert set(gaps[11:]) == {1}
        assert stats.backoff == 1 and stats.consecutive_failures == 0
        assert stats.failed_scans == 11
        assert stats.failures == {"timeout": 11}
        assert stats.overruns == 0
        assert stats.slots == slots[-1] + 1  # every slot accounted for: scanned or skipped
        assert stats.last_ok is not None

    run_virtual(main)


def test_backed_off_device_leaves_the_others_alone() -> None:
    rig = Rig({"dead": Behaviour(answers=lambda n: False, duration=lambda n: 2.0)})

    async def main(loop: VirtualClockLoop) -> None:
        poller = rig.poller(gateway(tcp("dead", interval=1.0), tcp("ok", interval=1.0)))
        await poller.start()
        await asyncio.sleep(60.0)
        stats = poller.stats()
        await poller.stop()
        assert stats["ok"].scans >= 59 and stats["ok"].overruns == 0
        # A dead device that takes 2 s per scan overruns at first, then backs off to 16 s.
        assert stats["dead"].scans <= 10
        assert stats["dead"].backoff == 16

    run_virtual(main)


def test_every_scan_gives_exactly_one_reading_even_all_bad() -> None:
    rig = Rig({"flaky": Behaviour(answers=lambda n: n % 2 == 0)})

    async def main(loop: VirtualClockLoop) -> None:
        poller = rig.poller(gateway(tcp("flaky", interval=0.5)))
        await poller.start()
        await until(poller, "flaky", 20.2)
        stats = poller.stats()["flaky"]
        await poller.stop()
        assert len(rig.readings) == stats.scans == 41
        bad = [r for r in rig.readings if not r.values]
        assert len(bad) == 20
        assert all(r.quality == {"a": "bad", "b": "bad"} for r in bad)

    run_virtual(main)


def test_driver_exceptions_do_not_kill_the_poller(caplog: pytest.LogCaptureFixture) -> None:
    def boom(n: int) -> BaseException | None:
        return RuntimeError("driver bug") if n % 3 == 1 else None

    rig = Rig({"buggy": Behaviour(raises=boom)})

    async def main(loop: VirtualClockLoop) -> None:
        poller = rig.poller(gateway(tcp("buggy", interval=1.0)))
        with caplog.at_level(logging.ERROR, logger="sensegate.scheduler"):
            await poller.start()
            await until(poller, "buggy", 29.5)
            stats = poller.stats()["buggy"]
            await poller.stop()
        assert stats.scans == len(rig.readings) == 30
        assert stats.failures == {"exception": 10}
        assert stats.overruns == 0
        failed = [r for r in rig.readings if not r.values]
        assert len(failed) == 10
        assert all(r.device == "buggy" and r.quality == {"a": "bad", "b": "bad"} for r in failed)
        line = next(r.getMessage() for r in caplog.records if "driver bug" in r.getMessage())
        assert line.startswith("device 'buggy' unit 1 bus 'tcp 127.0.0.1:502': scan raised")

    run_virtual(main)


def test_a_broken_scan_result_does_not_end_the_device_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig = Rig()

    async def main(loop: VirtualClockLoop) -> None:
        poller = rig.poller(gateway(tcp("d", interval=1.0)))
        await poller.start()
        driver = None
        while driver is None:
            await asyncio.sleep(0.1)
            driver = rig.of("d")[0] if rig.of("d") else None
        good_scan = driver.scan

        async def broken_scan() -> FakeResult:
            result = await good_scan()
            if len(driver.starts) == 3:
                result.errors = None  # type: ignore[assignment]
            return result

        driver.scan = broken_scan  # type: ignore[method-assign]
        with caplog.at_level(logging.ERROR, logger="sensegate.scheduler"):
            await until(poller, "d", 20.5)
        stats = poller.stats()["d"]
        await poller.stop()
        assert "scan loop failed; restarting it" in caplog.text
        assert stats.scans >= 18  # the loop went on, on its grid
        assert len(rig.readings) == len(driver.starts)  # the broken scan's reading too
        assert slots_of(driver, stats.t0, 1.0)[-1] == 20

    run_virtual(main)


def test_driver_that_cannot_be_created_is_retried_with_backoff() -> None:
    rig = Rig()
    calls = []

    def factory(device: DeviceConfig, config: GatewayConfig, buses: Any) -> FakeDriver:
        calls.append(device.name)
        if len(calls) < 5:
            raise DriverError("cannot open '/dev/ttyUSB9'", device=device.name, kind="io")
        return rig.driver(device, config, buses)

    async def main(loop: VirtualClockLoop) -> None:
        poller = Poller(gateway(tcp("d")), rig.readings.append, driver_factory=factory,
                        bus_factory=rig.buses)
        await poller.start()
        await until(poller, "d", 40.5)
        stats = poller.stats()["d"]
        await poller.stop()
        assert stats.failures == {"io": 4}
        assert stats.backoff == 1 and stats.scans == len(rig.readings)
        assert len(rig.of("d")) == 1

    run_virtual(main)


def test_hung_scan_is_cancelled_and_the_loop_goes_on() -> None:
    rig = Rig({"hang": Behaviour(hangs=lambda n: n == 2)})

    async def main(loop: VirtualClockLoop) -> None:
        poller = rig.poller(gateway(tcp("hang", interval=1.0)))
        await poller.start()
        await until(poller, "hang", scheduler.HANG_MIN + 10.5)
        stats = poller.stats()["hang"]
        await poller.stop()
        assert stats.failures == {"hang": 1}
        assert stats.overruns == pytest.approx(scheduler.HANG_MIN, abs=1)
        assert stats.scans == len(rig.readings) >= 10
        assert rig.readings[2].values == {}

    run_virtual(main)


def test_stop_lets_the_scan_in_flight_finish_and_closes_drivers() -> None:
    rig = Rig({"d": Behaviour(duration=lambda n: 0.5)})

    async def main(loop: VirtualClockLoop) -> None:
        poller = rig.poller(gateway(tcp("d", interval=1.0), tcp("e", interval=1.0)))
        await poller.start()
        await until(poller, "d", 0.2)  # "d" is mid-scan now
        await poller.stop()
        # the scan in flight was delivered, not dropped
        assert len(rig.readings) == sum(len(d.starts) for d in rig.drivers)
        assert len(rig.of("d")[0].starts) == 1
        assert all(d.closed for d in rig.drivers)
        assert rig.registries[0].closed
        assert poller.stats() == {}

    run_virtual(main)


# -- reload ---------------------------------------------------------------------------------------


def test_diff_devices() -> None:
    bus_a = BusConfig("a", SerialSettings("/dev/ttyUSB0"))
    bus_b = BusConfig("b", SerialSettings("/dev/ttyUSB1"))
    old = gateway(tcp("same"), tcp("gone"), tcp("retuned"), rtu("on-a", "a"), rtu("on-b", "b"),
                  buses=(bus_a, bus_b))
    new = gateway(tcp("same"), tcp("retuned", interval=2.0), rtu("on-a", "a"),
                  rtu("on-b", "b"), tcp("fresh"),
                  buses=(bus_a, replace(bus_b, serial=SerialSettings("/dev/ttyUSB1", 19200))))
    plan = diff_devices(old, new)
    assert plan.added == ("fresh",)
    assert plan.removed == ("gone",)
    assert plan.changed == ("retuned", "on-b")
    assert plan.unchanged == ("same", "on-a")


def test_apply_starts_stops_restarts_and_leaves_the_rest_alone() -> None:
    rig = Rig()
    bus_a = BusConfig("a", SerialSettings("/dev/ttyUSB0"))
    old = gateway(tcp("same"), tcp("gone"), tcp("retuned"), rtu("on-a", "a"), buses=(bus_a,))
    new = gateway(tcp("same"), tcp("retuned", interval=2.0), rtu("on-a", "a"), tcp("fresh"),
                  buses=(bus_a,))

    async def main(loop: VirtualClockLoop) -> None:
        poller = rig.poller(old)
        await poller.start()
        await until(poller, "same", 10.5)
        before = poller.stats()
        tasks = {n: r.task for n, r in poller._runners.items()}
        await poller.apply(new)
        after = poller.stats()
        assert sorted(after) == ["fresh", "on-a", "retuned", "same"]
        for name in ("same", "on-a"):  # untouched: same task, driver, grid and counters
            assert poller._runners[name].task is tasks[name]
            assert len(rig.of(name)) == 1 and not rig.of(name)[0].closed
            assert after[name].t0 == before[name].t0
            assert after[name].scans == before[name].scans
        assert rig.of("gone")[0].closed
        assert rig.of("retuned")[0].closed
        assert rig.registries[0].updates == []  # no bus changed: none rebuilt
        await asyncio.sleep(10.0)
        final = poller.stats()
        await poller.stop()
        assert len(rig.of("retuned")) == 2 and final["retuned"].interval == 2.0
        assert 4 <= final["retuned"].scans <= 6
        assert final["fresh"].scans >= 9
        assert final["same"].scans == before["same"].scans + 10
        assert final["same"].overruns == 0
        assert len(rig.of("gone")[0].starts) == before["gone"].scans

    run_virtual(main)


def test_apply_rebuilds_only_a_changed_bus_and_restarts_its_devices() -> None:
    rig = Rig()
    bus_a = BusConfig("a", SerialSettings("/dev/ttyUSB0"))
    bus_b = BusConfig("b", SerialSettings("/dev/ttyUSB1"))
    old = gateway(rtu("on-a", "a"), rtu("on-b", "b"), tcp("t"), buses=(bus_a, bus_b))
    faster_b = replace(bus_b, serial=SerialSettings("/dev/ttyUSB1", 19200))
    new = gateway(rtu("on-a", "a"), rtu("on-b", "b"), tcp("t"), buses=(bus_a, faster_b))

    async def main(loop: VirtualClockLoop) -> None:
        poller = rig.poller(old)
        await poller.start()
        await until(poller, "t", 3.5)
        await poller.apply(new)
        await asyncio.sleep(3.0)
        await poller.stop()
        assert len(rig.registries) == 1
        assert rig.registries[0].updates == [new.buses]  # the registry drops bus b's link
        assert rig.of("on-b")[0].closed and len(rig.of("on-b")) == 2
        assert len(rig.of("on-a")) == 1 and len(rig.of("t")) == 1

    run_virtual(main)


# -- metrics --------------------------------------------------------------------------------------


def test_metrics_are_counted() -> None:
    rig = Rig({"d": Behaviour(duration=lambda n: 1.5 if n == 0 else 0.1,
                              answers=lambda n: n % 2 == 0)})
    metrics = GatewayMetrics()

    def value(name: str, **labels: str) -> float:
        return metrics.registry.get_sample_value(f"sensegate_{name}_total", labels) or 0.0

    async def main(loop: VirtualClockLoop) -> None:
        poller = rig.poller(gateway(tcp("d")), metrics=metrics)
        await poller.start()
        await until(poller, "d", 10.5)
        stats = poller.stats()["d"]
        await poller.stop()
        assert value("scans", device="d") == stats.scans
        assert value("scan_overruns", device="d") == stats.overruns == 1
        assert value("device_errors", device="d", kind="timeout") == stats.failures["timeout"]
        await poller.start()
        await poller.apply(gateway(tcp("e")))  # "d" removed: its series go
        await poller.stop()
        assert value("scans", device="d") == 0.0

    run_virtual(main)


# -- on a real loop: only counts, with generous margins ------------------------------------------


async def test_real_loop_slow_device_does_not_delay_the_others() -> None:
    rig = Rig({
        "stuck": Behaviour(duration=lambda n: 30.0),
        "fast": Behaviour(duration=lambda n: 0.001),
        "fast2": Behaviour(duration=lambda n: 0.001),
    })
    poller = rig.poller(gateway(tcp("stuck", 0.05), tcp("fast", 0.05), tcp("fast2", 0.05)))
    await poller.start()
    # the fast devices keep scanning while "stuck" sits in its first 30 s scan (no timing is
    # asserted: a loaded machine only makes this take longer, up to the generous limit)
    deadline = time.monotonic() + 25
    while (min(poller.stats()[n].scans for n in ("fast", "fast2")) < 10
           and time.monotonic() < deadline):
        await asyncio.sleep(0.05)
    stats = poller.stats()
    readings = len(rig.readings)  # taken with the stats, before any other scan can end
    await poller.stop()
    for name in ("fast", "fast2"):
        assert stats[name].scans >= 10
        # every scan performed started within tolerance of its slot, by construction: as
        # the scheduler measured it when it decided (the driver's own clock reading comes
        # a task switch later, which a loaded machine can stretch at will)
        assert stats[name].max_lateness <= late_tolerance(0.05)
        t0 = stats[name].t0
        assert all(t >= t0 - 1e-3 for t in rig.of(name)[0].starts)  # never before the grid
    assert stats["stuck"].scans == 0  # still in its first scan
    assert readings == sum(s.scans for s in stats.values())
