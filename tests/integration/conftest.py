"""Fixtures of the integration tests (a module may define its own of the same name)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from drivers import BusRegistry


@pytest.fixture
async def buses() -> AsyncIterator[BusRegistry]:
    """The drivers' links and bus locks, with no RS-485 bus configured; closed after."""
    registry = BusRegistry()
    yield registry
    await registry.close()
