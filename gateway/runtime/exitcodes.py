"""The exit statuses of every `sensegate` command (SPEC §1), declared once.

The meaning is the same across commands, so scripts and systemd can rely on it:

* ``OK`` (0): done; a daemon stopped cleanly on SIGTERM/SIGINT; a config is valid.
* ``FAILED`` (1): it ran and something failed: a fatal error in a daemon (systemd's
  ``Restart=on-failure`` brings it back), a device that did not answer `read`, readings
  the demo lost.
* ``USAGE`` (2): nothing was attempted because what the operator gave is wrong: a bad
  config (``CONFIG`` is the same status), a bad option value, an unknown device, a missing
  extra. Restarting cannot fix it, so the units set ``RestartPreventExitStatus=2``.
* ``BROKEN_PIPE`` (141, 128 + SIGPIPE): the reader of the output went away
  (``sensegate schema | head``); the command ends quietly with the status the shell's own
  tools end with in that case.
"""

from __future__ import annotations

import signal
from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    CONFIG = 2  # a bad config is a usage error: the same status, named for the call site
    BROKEN_PIPE = 128 + signal.SIGPIPE
