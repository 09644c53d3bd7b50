"""run_phases: the exit codes of `run` and `bridge` (SPEC §1), without any I/O."""

from __future__ import annotations

import pytest

from gateway.core.errors import ConfigError, ConfigIssue, StorageError
from gateway.runtime.lifecycle import run_phases


class FakeService:
    def __init__(self, *, startup_error: Exception | None = None, fails: bool = False) -> None:
        self.startup_error = startup_error
        self.fails = fails
        self.failed = False
        self.calls: list[str] = []

    async def startup(self) -> None:
        self.calls.append("startup")
        if self.startup_error is not None:
            raise self.startup_error

    async def main_loop(self) -> None:
        self.calls.append("main_loop")
        self.failed = self.fails

    async def shutdown(self) -> None:
        self.calls.append("shutdown")


@pytest.mark.parametrize(
    ("service", "code", "calls"),
    [
        pytest.param(FakeService(), 0, ["startup", "main_loop", "shutdown"], id="clean-stop"),
        pytest.param(FakeService(fails=True), 1, ["startup", "main_loop", "shutdown"],
                     id="component-died"),
        pytest.param(FakeService(startup_error=StorageError("disk full")), 1,
                     ["startup", "shutdown"], id="startup-failed"),
        pytest.param(FakeService(startup_error=OSError("address in use")), 1,
                     ["startup", "shutdown"], id="socket-failed"),
    ],
)
async def test_exit_codes(service: FakeService, code: int, calls: list[str]) -> None:
    assert await run_phases(service, "test") == code
    assert service.calls == calls


async def test_a_bad_config_reaches_the_cli() -> None:
    error = ConfigError([ConfigIssue("g.yaml", 1, 1, "gateway.id", "missing")])
    with pytest.raises(ConfigError):
        await run_phases(FakeService(startup_error=error), "test")
