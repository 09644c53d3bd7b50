"""The state_dir lock: one holder at a time, the holder named, released on exit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.core.errors import StorageError
from gateway.edge.statedir import LOCK_NAME, lock_state_dir


def test_second_lock_is_refused_naming_the_directory_and_the_holder(tmp_path: Path) -> None:
    first = lock_state_dir(str(tmp_path / "state"))
    try:
        with pytest.raises(StorageError) as err:
            lock_state_dir(str(tmp_path / "state"))
        assert str(err.value) == (
            f"state_dir '{tmp_path}/state' is in use by another gateway (pid {os.getpid()}); "
            "each gateway needs a state_dir of its own"
        )
    finally:
        first.release()
    lock_state_dir(str(tmp_path / "state")).release()  # free again once released


def test_lock_of_a_killed_process_does_not_block(tmp_path: Path) -> None:
    """The kernel drops a flock with its process: a stale lock file is no obstacle."""
    code = (
        "import os, sys; from gateway.edge.statedir import lock_state_dir; "
        f"lock_state_dir({str(tmp_path)!r}); os.kill(os.getpid(), 9)"
    )
    done = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert done.returncode == -9
    assert (tmp_path / LOCK_NAME).read_text().strip().isdigit()
    lock_state_dir(str(tmp_path)).release()
