"""The lifecycle shared by the long-running commands (`run`, `bridge`).

`run_phases` runs startup, main loop and shutdown with the exit codes of SPEC §1;
`signal_handlers` installs the signal handlers, which only call back.

SIGTERM and SIGINT ask for a stop (a second SIGINT is the caller's to treat as "now"),
SIGHUP for a reload. Handlers are installed on the running loop and removed on exit, so an
embedded daemon (the demo) can leave signals to its owner by not entering this at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterator
from typing import Protocol

from gateway.core.errors import ConfigError, SensegateError
from gateway.runtime.exitcodes import ExitCode

log = logging.getLogger("sensegate.lifecycle")

@contextlib.contextmanager
def signal_handlers(
    on_exit: Callable[[signal.Signals], None], on_reload: Callable[[], None]
) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    handlers: list[tuple[signal.Signals, Callable[..., None], tuple[object, ...]]] = [
        (signal.SIGTERM, on_exit, (signal.SIGTERM,)),
        (signal.SIGINT, on_exit, (signal.SIGINT,)),
        (signal.SIGHUP, on_reload, ()),
    ]
    for sig, handler, args in handlers:
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
            loop.add_signal_handler(sig, handler, *args)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)


class Service(Protocol):
    async def startup(self) -> None: ...
    async def main_loop(self) -> None: ...
    async def shutdown(self) -> None: ...


async def run_phases(service: Service, name: str) -> ExitCode:
    """startup → main_loop → shutdown, with the exit codes of SPEC §1.

    A bad config (`ConfigError`) propagates: the CLI prints every issue as FILE:LINE:COL
    and exits 2. Anything else that stops the start (storage, TLS files, sockets) is
    logged in one line, what did start is shut down, and the exit code is 1; so is a
    service that sets `failed` before its main loop returns.
    """
    try:
        await service.startup()
    except ConfigError:
        raise
    except (SensegateError, OSError) as exc:
        log.error("%s failed to start: %s", name, exc)
        await service.shutdown()
        return ExitCode.FAILED
    await service.main_loop()
    await service.shutdown()
    # A component that died of a bug stopped the main loop: exit 1 so that systemd's
    # Restart=on-failure brings the service back.
    return ExitCode.FAILED if getattr(service, "failed", False) else ExitCode.OK
