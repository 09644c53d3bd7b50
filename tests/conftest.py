"""Shared fixtures. Servers are started by the tests themselves on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.mosquitto import Mosquitto


@pytest.fixture
def mosquitto() -> Iterator[Mosquitto]:
    broker = Mosquitto()
    broker.start()
    try:
        yield broker
    finally:
        broker.close()
