"""Reload requests coalesce: one reload running, at most one pending (gateway.edge.daemon)."""

from __future__ import annotations

import asyncio

from gateway.edge.daemon import Daemon


class Reloads:
    """Stands in for Daemon.reload: each call waits until the test lets it finish."""

    def __init__(self) -> None:
        self.started = 0
        self.running = 0
        self.most_at_once = 0
        self.release = asyncio.Event()

    async def __call__(self) -> None:
        self.started += 1
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        await self.release.wait()
        self.release.clear()
        self.running -= 1


async def settle(daemon: Daemon) -> None:
    for _ in range(5):
        await asyncio.sleep(0)
        daemon._step_reload()


async def test_a_storm_of_requests_runs_one_reload_and_one_more() -> None:
    daemon = Daemon("unused.yaml", install_signals=False)
    reloads = Reloads()
    daemon.reload = reloads  # type: ignore[method-assign]
    for _ in range(100):  # SIGHUPs only set the event
        daemon.reload_requested.set()
        await settle(daemon)
    assert (reloads.started, reloads.running) == (1, 1)
    assert daemon.reload_requested.is_set()  # one pending
    reloads.release.set()
    await settle(daemon)
    assert (reloads.started, reloads.running) == (2, 1)
    assert not daemon.reload_requested.is_set()
    reloads.release.set()
    await settle(daemon)
    assert (reloads.started, reloads.running, reloads.most_at_once) == (2, 0, 1)


async def test_no_reload_starts_while_stopping() -> None:
    daemon = Daemon("unused.yaml", install_signals=False)
    reloads = Reloads()
    daemon.reload = reloads  # type: ignore[method-assign]
    daemon.should_exit.set()
    daemon.reload_requested.set()
    await settle(daemon)
    assert reloads.started == 0


async def test_a_reload_that_dies_of_a_bug_stops_the_daemon() -> None:
    daemon = Daemon("unused.yaml", install_signals=False)

    async def broken() -> None:
        raise RuntimeError("half applied")

    daemon.reload = broken  # type: ignore[method-assign]
    daemon.reload_requested.set()
    await settle(daemon)
    assert daemon.failed and daemon.should_exit.is_set()
