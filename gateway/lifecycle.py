"""Signals of the long-running commands (`run`, `bridge`): the handlers only call back.

SIGTERM and SIGINT ask for a stop (a second SIGINT is the caller's to treat as "now"),
SIGHUP for a reload. Handlers are installed on the running loop and removed on exit, so an
embedded daemon (the demo) can leave signals to its owner by not entering this at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator


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
