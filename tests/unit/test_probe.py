"""`sensegate read` formatting and device lookup, without I/O."""

from __future__ import annotations

import io

import pytest

from gateway.commands.read import _hex, _row, probe
from gateway.core.model import GatewayConfig, MqttConfig, PointConfig


@pytest.mark.parametrize(
    ("point", "raw", "expected"),
    [
        pytest.param(PointConfig("a", "float32", "holding", 0), [0x41AC, 0], "41ac 0000",
                     id="registers"),
        pytest.param(PointConfig("b", "bool", "coil", 0), [True], "1", id="bits"),
        pytest.param(PointConfig("c", "uint16", "holding", 0), None, None, id="not-read"),
    ],
)
def test_hex(point: PointConfig, raw: list[int] | None, expected: str | None) -> None:
    assert _hex(point, raw) == expected


def test_row_all_orders_only_for_multi_register_points() -> None:
    wide = PointConfig("w", "uint32", "holding", 0)
    narrow = PointConfig("n", "uint16", "holding", 0)
    row = _row(wide, [1, 2], {"w": 65538}, {}, True)
    assert row["orders"] == {"ABCD": 65538, "CDAB": 131073, "BADC": 16777728, "DCBA": 33554688}
    assert "orders" not in _row(narrow, [1], {"n": 1}, {}, True)
    assert _row(narrow, None, {}, {"n": "bad"}, False)["quality"] == "bad"


def test_unknown_device(capsys: pytest.CaptureFixture[str]) -> None:
    config = GatewayConfig("gw", MqttConfig("localhost", 1883, "c"), (), source="g.yaml")
    assert probe(config, "x", io.StringIO()) == 2
    assert capsys.readouterr().err.strip() == "no device 'x' in g.yaml; known devices: none"
