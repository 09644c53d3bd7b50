from gateway.core.errors import ConfigError, ConfigIssue, DriverError
from gateway.core.model import Secret


def test_config_error_sorts_issues_by_position() -> None:
    err = ConfigError([
        ConfigIssue("a.yaml", 9, 3, "devices[1].name", "second"),
        ConfigIssue("a.yaml", 2, 7, "gateway.id", "first"),
    ])
    assert str(err).splitlines() == [
        "a.yaml:2:7: gateway.id: first",
        "a.yaml:9:3: devices[1].name: second",
    ]


def test_driver_error_names_device_unit_and_bus() -> None:
    err = DriverError("timeout", device="loop-7", unit=7, bus="rs485-a", kind="timeout")
    assert err.where() == "device 'loop-7' unit 7 bus 'rs485-a'"


def test_secret_never_shows_itself() -> None:
    s = Secret("hunter2")
    assert "hunter2" not in repr(s) and "hunter2" not in str(s) and "hunter2" not in f"{s}"
    assert s.reveal() == "hunter2"
