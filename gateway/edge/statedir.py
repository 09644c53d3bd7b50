"""One gateway per ``state_dir``: an exclusive lock held for the daemon's life.

``lock_state_dir`` takes ``fcntl.flock(LOCK_EX | LOCK_NB)`` on ``state_dir/gateway.lock``
and writes the holder's pid into it. The kernel releases the lock when the process ends,
however it ends (``kill -9`` included), so a stale lock file never blocks a start; a second
``sensegate run`` on the same directory fails at once, naming the directory and the holder.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

from gateway.core.errors import StorageError

LOCK_NAME = "gateway.lock"


class StateDirLock:
    """The held lock; ``release()`` (or process exit) lets the next gateway in."""

    def __init__(self, state_dir: str, fd: int) -> None:
        self.state_dir = state_dir
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def make_state_dir(state_dir: str) -> None:
    """Create ``state_dir`` if needed; raises StorageError naming it when that fails."""
    if os.path.exists(state_dir) and not os.path.isdir(state_dir):
        raise StorageError(f"state_dir '{state_dir}' is not a directory")
    try:
        os.makedirs(state_dir, exist_ok=True)
    except OSError as exc:
        raise StorageError(
            f"cannot create state_dir '{state_dir}': {exc.strerror or exc}".lower()
        ) from exc


def lock_state_dir(state_dir: str) -> StateDirLock:
    """Take the directory's exclusive lock, or raise StorageError naming the holder."""
    make_state_dir(state_dir)
    path = os.path.join(state_dir, LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StorageError(
            f"cannot lock state_dir '{state_dir}': {(exc.strerror or str(exc)).lower()}"
        ) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise StorageError(
            f"state_dir '{state_dir}' is in use by another gateway ({holder}); "
            "each gateway needs a state_dir of its own"
        ) from None
    except OSError as exc:
        os.close(fd)
        raise StorageError(
            f"cannot lock state_dir '{state_dir}': {(exc.strerror or str(exc)).lower()}"
        ) from exc
    with contextlib.suppress(OSError):  # the pid is for people; the lock is the flock
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return StateDirLock(state_dir, fd)


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return f"pid {text}" if text.isdigit() else "pid unknown"
