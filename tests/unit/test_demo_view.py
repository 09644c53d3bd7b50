"""What `sensegate demo` says: the independent counter, the summary, the exit status it
implies, and the live view at 80 columns."""

from __future__ import annotations

import io
import json

import pytest

from gateway.core.model import Reading
from gateway.runtime.exitcodes import ExitCode
from gateway.sim.demo import (
    BAR_WIDTH,
    DRAIN_TIMEOUT,
    VIEW_WIDTH,
    Counter,
    Drain,
    Snapshot,
    Tally,
    exit_status,
    lost_readings,
    outbox_bar,
    reading_stamps,
    render_view,
    status_line,
    summary_lines,
)

DRIVERS = {"rws-1": "modbus-tcp", "traffic-1": "modbus-tcp", "meter-1": "modbus-tcp",
           "th-cabinet": "modbus-rtu", "th-outdoor": "modbus-rtu", "aq-1": "serial-line"}


def payload(*stamps: int) -> bytes:
    return json.dumps({"gateway": "demo-site", "device": "x", "measurement": "m", "tags": {},
                       "readings": [{"ts": ts, "values": {"a": 1}} for ts in stamps]}).encode()


@pytest.mark.parametrize(("data", "stamps"), [
    (payload(1, 2, 3), [1, 2, 3]),
    (payload(), []),
    (b"not json", None),
    (b'{"readings": [{"value": 1}]}', None),
    (b'{"readings": 3}', None),
    (b"[]", None),
], ids=["three", "none", "not-json", "no-ts", "not-a-list", "not-an-object"])
def test_reading_stamps(data: bytes, stamps: list[int] | None) -> None:
    assert reading_stamps(data) == stamps


def test_counter_counts_each_reading_once_per_device() -> None:
    counter = Counter(0, "sensegate/demo-site/+/data")
    counter.take("sensegate/demo-site/rws-1/data", payload(1, 2))
    counter.take("sensegate/demo-site/rws-1/data", payload(2, 3))  # a QoS 1 redelivery of 2
    counter.take("sensegate/demo-site/aq-1/data", payload(1))
    counter.take("sensegate/demo-site/aq-1/data", b"{")
    assert (counter.count("rws-1"), counter.count("aq-1"), counter.count("meter-1")) == (3, 1, 0)
    assert (counter.total(), counter.messages, counter.malformed) == (4, 4, 1)


def snapshot(polled: int = 10, received: int = 10, pending: int = 0, **kw: object) -> Snapshot:
    devices = []
    for name, driver in DRIVERS.items():
        tally = Tally(polled=polled, delivered=polled,
                      last=Reading(name, 0, {"temperature": 21.456, "humidity": 47.4,
                                             "pressure": 1013.2, "pm2_5": 12.0}))
        devices.append((name, driver, polled, tally))
    fields: dict[str, object] = dict(
        elapsed=12.0, broker="up", mqtt_connected=True, polled=polled * len(DRIVERS),
        delivered=polled * len(DRIVERS), published_messages=40, pending=pending,
        outbox_bytes=4096, oldest_age=None, dropped=0, devices=devices, bridge=None,
        received=dict.fromkeys(DRIVERS, received), peak_pending=max(pending, 300),
        broker_port=54321, duration=60.0)
    fields.update(kw)
    return Snapshot(**fields)  # type: ignore[arg-type]


def test_summary_when_nothing_was_lost() -> None:
    s = snapshot()
    lines = summary_lines(s, Drain(drained=True, waited=0.4, forced=False), ran_for=25.0,
                          outage="broker outage of 6s at 8.3s", pending=0)
    assert lines[0] == "\nsensegate demo: 25.0s, 6 devices, broker outage of 6s at 8.3s"
    assert lines[1] == ("demo: device=rws-1 driver=modbus-tcp polled=10 delivered=10 "
                        "received=10 lost=0 bad_points=0")
    assert lines[-1] == "demo: polled=60 delivered=60 received=60 lost=0"
    assert not any("drain" in line for line in lines)
    assert lost_readings(s) == 0


def test_summary_counts_what_the_subscriber_missed_as_lost() -> None:
    s = snapshot(received=9)
    lines = summary_lines(s, Drain(drained=True, waited=0.4, forced=False), ran_for=25.0,
                          outage="", pending=0)
    assert lost_readings(s) == 6
    assert "demo: 6 readings polled were never received by the subscriber" in lines
    assert lines[-1] == "demo: polled=60 delivered=60 received=54 lost=6"


def test_summary_says_the_outbox_did_not_drain_after_the_wait() -> None:
    lines = summary_lines(snapshot(received=8),
                          Drain(drained=False, waited=DRAIN_TIMEOUT + 0.1, forced=False),
                          ran_for=25.0, outage="", pending=12)
    assert lines[1] == "demo: the outbox did not drain within 30s (12 readings still pending)"


def test_summary_after_a_second_interrupt_does_not_claim_a_wait() -> None:
    lines = summary_lines(snapshot(received=8), Drain(drained=False, waited=0.0, forced=True),
                          ran_for=5.0, outage="", pending=12)
    assert lines[1] == ("demo: stopped without waiting for the outbox to drain (second "
                        "Ctrl-C); 12 readings still pending")
    assert not any("within" in line for line in lines)


@pytest.mark.parametrize(("stopped", "lost", "drained", "code"), [
    (True, 0, True, ExitCode.OK),
    (True, 1, True, ExitCode.FAILED),
    (True, 0, False, ExitCode.FAILED),
    (False, 0, True, ExitCode.FAILED),
], ids=["all-received", "lost", "not-drained", "gateway-failed"])
def test_exit_status(stopped: bool, lost: int, drained: bool, code: ExitCode) -> None:
    drain = Drain(drained=drained, waited=1.0, forced=False)
    assert exit_status(stopped_cleanly=stopped, lost=lost, drain=drain) is code


def test_status_line() -> None:
    assert status_line(snapshot(broker="down", mqtt_connected=False, received=9, pending=3)) == (
        "demo: t=12s broker=down mqtt=disconnected polled=60 delivered=60 received=54 "
        "outbox=3 messages=40")


@pytest.mark.parametrize(("pending", "peak", "cells"), [
    (0, 0, 0), (0, 300, 0), (1, 300, 1), (150, 300, BAR_WIDTH // 2), (300, 300, BAR_WIDTH),
    (500, 300, BAR_WIDTH),
])
def test_outbox_bar_is_labelled_and_scaled_to_the_peak(pending: int, peak: int,
                                                        cells: int) -> None:
    bar = outbox_bar(pending, peak)
    assert bar == f"outbox backlog {'█' * cells}{'░' * (BAR_WIDTH - cells)} {pending} readings"


def rendered(s: Snapshot, logs: list[str], width: int = VIEW_WIDTH) -> list[str]:
    from rich.console import Console

    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(render_view(s, {"rws-1": {"temperature": "degC"}}, logs))
    return console.export_text().splitlines()


def test_live_view_fits_80_columns() -> None:
    s = snapshot(pending=123, peak_pending=300, broker="down", back_in=12.0,
                 mqtt_connected=False,
                 bridge="bridge: mqtt disconnected · influxdb failing · 1234567 points written")
    logs = ["12:00:01 warning sensegate.publish: cannot connect to 127.0.0.1:54321: "
            "connection refused; retrying in 2.0s and this line is long"]
    lines = rendered(s, logs)
    assert max(len(line) for line in lines) <= VIEW_WIDTH

    def one_line(text: str) -> None:
        assert any(text in line for line in lines), f"{text!r} not on one line:\n" + \
            "\n".join(lines)

    one_line("sensegate demo · gateway demo-site · 12s of 60s")
    one_line("broker 127.0.0.1:54321 ○ down, back in 12s · gateway mqtt disconnected")
    one_line("polled 60 · acked by broker 60 · received 60 · messages 40")
    one_line(outbox_bar(123, 300))
    one_line("bridge: mqtt disconnected · influxdb failing · 1234567 points written")
    one_line("device")
    for name, driver in DRIVERS.items():
        row = next(line for line in lines if line.startswith(name + " "))
        assert driver in row and row.split()[2:7] == ["10", "0", "10", "10", "10"], row
    assert sum(1 for line in lines if "12:00:01 warning" in line) == 1  # not wrapped


def test_live_view_header_names_every_column() -> None:
    header = next(line for line in rendered(snapshot(), []) if line.startswith("device"))
    assert header.split() == ["device", "driver", "scans", "bad", "polled", "acked",
                              "received", "last", "values"]
