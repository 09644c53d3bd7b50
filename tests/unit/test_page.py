"""The technician's page without a browser: journal, view model, HTML, routes, token gate.

The browser test (tests/integration/test_page.py) drives a real gateway; these check the
pure parts row by row: what each state and error reads as, that every text is escaped, that
no secret reaches the page, and how the token gate answers.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from gateway.core.decode import encode_registers
from gateway.core.errors import DriverError
from gateway.core.model import (
    BusConfig,
    DeviceConfig,
    GatewayConfig,
    HttpConfig,
    MqttConfig,
    PointConfig,
    Reading,
    Secret,
    SerialSettings,
)
from gateway.core.secrets import register as register_secret
from gateway.edge.page import (
    BrokerState,
    DeviceCounters,
    OutboxState,
    PageState,
    ScanJournal,
    WarningLog,
    page_routes,
)
from gateway.edge.page.journal import RECENT_ERRORS, WarningEntry
from gateway.edge.page.render import render_device, render_main
from gateway.edge.page.view import (
    MAX_VALUES,
    age,
    device_state,
    device_view,
    main_view,
    meaning,
    refresh_interval,
)
from gateway.runtime.http import SESSION_COOKIE, Request, TokenGate, parse_head, route_for
from gateway.runtime.logs import ScrubbingFormatter

NOW = 1_800_000_000.0
PASSWORD = "mqtt-hunter2-password"
TOKEN = "page-token-0c9f3e"

ENERGY = PointConfig("energy", "uint64", "holding", 4, byte_order="CDAB", unit="Wh")
POINTS = (
    PointConfig("temp", "float32", "holding", 2, unit="degC"),
    ENERGY,
    PointConfig("level", "int16", "input", 100, scale=0.1, unit="m"),
    PointConfig("pump", "bool", "coil", 5),
)


def config(*devices: DeviceConfig, buses: tuple[BusConfig, ...] = ()) -> GatewayConfig:
    return GatewayConfig(
        "gw-1",
        MqttConfig("broker.example", 1883, "c", username="tech", password=Secret(PASSWORD)),
        devices or (tcp("tcp-1"), rtu("rtu-1")),
        buses=buses or (BusConfig("rs485-a", SerialSettings("/dev/ttyUSB0", 9600)),),
        http=HttpConfig(token=Secret(TOKEN)),
    )


def tcp(name: str, points: tuple[PointConfig, ...] = POINTS) -> DeviceConfig:
    return DeviceConfig(name, "modbus-tcp", points, host="10.0.0.21", port=502)


def rtu(name: str, unit: int = 7) -> DeviceConfig:
    return DeviceConfig(name, "modbus-rtu", POINTS, bus="rs485-a", unit=unit, interval=2.0)


def reading(device: str, values: dict[str, Any], quality: dict[str, str] | None = None,
            ts: float = NOW - 1) -> Reading:
    return Reading(device, int(ts * 1e9), values, quality or {})


GOOD = {"temp": 21.5, "energy": 123456789012, "level": -12.3, "pump": True}
RAW = {
    "temp": tuple(encode_registers(POINTS[0], 21.5)),
    "energy": tuple(encode_registers(ENERGY, 123456789012)),
    "level": (0xFF85,),
    "pump": (1,),
}


def error(kind: str, message: str, code: int | None = None) -> DriverError:
    return DriverError(message, device="d", kind=kind, code=code)


def state(cfg: GatewayConfig | None = None, journal: ScanJournal | None = None,
          counters: dict[str, DeviceCounters] | None = None,
          warnings: tuple[WarningEntry, ...] = (), **broker: Any) -> PageState:
    cfg = cfg or config()
    return PageState(
        now=NOW, config=cfg, version="0.1.0", started_at=NOW - 3725, config_hash="ab" * 32,
        broker=BrokerState(broker.get("address", "broker.example:1883"),
                           broker.get("connected", True), NOW - 65,
                           broker.get("last_error")),
        outbox=OutboxState(12, 4.0, 0, 40960),
        counters=counters if counters is not None else {},
        journal=(journal or ScanJournal(clock=lambda: NOW)).devices,
        warnings=warnings,
    )


# -- text ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("seconds", "text"), [
    pytest.param(None, "never", id="never"),
    pytest.param(0.4, "0 s", id="now"),
    pytest.param(119, "119 s", id="seconds"),
    pytest.param(120, "2 min", id="minutes"),
    pytest.param(3725, "1 h 2 min", id="hours"),
    pytest.param(3 * 86400 + 7200, "3 d 2 h", id="days"),
    pytest.param(-5, "0 s", id="clock-skew"),
])
def test_age(seconds: float | None, text: str) -> None:
    assert age(seconds) == text


@pytest.mark.parametrize(("kind", "code", "starts"), [
    pytest.param("exception", 2, "illegal data address: ", id="illegal-address"),
    pytest.param("exception", 11, "gateway target device failed to respond", id="gw-target"),
    pytest.param("exception", 99, "the device refused the request", id="unknown-code"),
    pytest.param("timeout", None, "no answer: check the unit id", id="timeout"),
    pytest.param("crc", None, "the frame arrived damaged", id="crc"),
    pytest.param("connection", None, "cannot reach the device", id="connection"),
    pytest.param("something-new", None, "", id="unknown-kind"),
])
def test_what_an_error_means_on_site(kind: str, code: int | None, starts: str) -> None:
    assert meaning(kind, code).startswith(starts)
    if not starts:
        assert meaning(kind, code) == ""


@pytest.mark.parametrize(("intervals", "refresh"), [
    pytest.param((0.1,), 1.0, id="fast-device-floor"),
    pytest.param((2.0, 3.0), 2.0, id="fastest"),
    pytest.param((60.0,), 5.0, id="slow-device-cap"),
])
def test_the_page_refreshes_with_the_fastest_device(intervals: tuple[float, ...],
                                                    refresh: float) -> None:
    devices = tuple(DeviceConfig(f"d{i}", "modbus-tcp", POINTS, interval=v, host="h")
                    for i, v in enumerate(intervals))
    assert refresh_interval(config(*devices)) == refresh


# -- journal ------------------------------------------------------------------------------


def test_journal_keeps_the_last_raw_registers_and_counts_errors_per_hour() -> None:
    now = [NOW]
    journal = ScanJournal(clock=lambda: now[0])
    journal.record("d", reading("d", GOOD), RAW, [], 0.012)
    failing = reading("d", {}, {p.name: "bad" for p in POINTS})
    for minute in range(90):  # an error a minute for an hour and a half
        now[0] = NOW + 60 * minute
        journal.record("d", failing, {}, [error("timeout", "no response")], 0.5)
    d = journal.devices["d"]
    assert d.raw == RAW and d.raw_reading is not None and d.raw_reading.values == GOOD
    assert d.reading is failing and d.duration == 0.5 and d.last_errors == 1
    assert d.errors_since(now[0] - 3600) == 61  # this minute and the 60 before it
    assert len(d.errors) == RECENT_ERRORS
    journal.keep_only({"other"})
    assert journal.devices == {}


def test_journal_leaves_out_raw_values_that_are_not_registers() -> None:
    journal = ScanJournal(clock=lambda: NOW)
    journal.record("d", reading("d", GOOD), {"temp": [0x41AC, 0], "line": "PM25=3", "x": None},
                   [], 0.01)
    assert journal.devices["d"].raw == {"temp": (0x41AC, 0)}


def test_warning_log_keeps_the_last_lines_scrubbed() -> None:
    register_secret(PASSWORD)
    handler = WarningLog(size=3)
    handler.setFormatter(ScrubbingFormatter("%(message)s"))
    logger = logging.getLogger("sensegate.test-page")
    logger.addHandler(handler)
    try:
        logger.info("not kept")
        for n in range(5):
            logger.warning("broker refused password %s (%d)", PASSWORD, n)
    finally:
        logger.removeHandler(handler)
    assert [w.message for w in handler.entries] == [
        f"broker refused password *** ({n})" for n in (2, 3, 4)]
    assert {w.level for w in handler.entries} == {"WARNING"}


# -- the views ----------------------------------------------------------------------------


def scanned(device: str, values: dict[str, Any], errors: list[DriverError],
            raw: dict[str, Any] | None = None, journal: ScanJournal | None = None,
            quality: dict[str, str] | None = None) -> ScanJournal:
    journal = journal or ScanJournal(clock=lambda: NOW)
    journal.record(device, reading(device, values, quality), raw or {}, errors, 0.034)
    return journal


@pytest.mark.parametrize(("values", "errors", "backoff", "expected"), [
    pytest.param(None, [], 1, "waiting", id="no-scan-yet"),
    pytest.param(GOOD, [], 1, "ok", id="ok"),
    pytest.param({"temp": 1.0}, [error("exception", "x", 2)], 1, "partial", id="partial"),
    pytest.param({}, [error("timeout", "x")], 1, "failing", id="failing"),
    pytest.param({}, [error("timeout", "x")], 4, "backed off", id="backed-off"),
])
def test_device_state(values: dict[str, Any] | None, errors: list[DriverError], backoff: int,
                      expected: str) -> None:
    journal = None if values is None else scanned(
        "d", values, errors, quality={} if values else {p.name: "bad" for p in POINTS})
    counters = DeviceCounters(scans=3, backoff=backoff)
    assert device_state(counters, None if journal is None else journal.devices["d"]) == expected


def test_main_view_rows() -> None:
    journal = scanned("tcp-1", GOOD, [], RAW)
    scanned("rtu-1", {"level": -1.0}, [error("exception", "modbus exception 2 illegal data "
                                            "address reading holding 2..7", 2)],
            journal=journal, quality={"temp": "bad", "energy": "bad", "pump": "bad"})
    counters = {"tcp-1": DeviceCounters(10, NOW - 3, 0, 1), "rtu-1": DeviceCounters(10, None)}
    view = main_view(state(journal=journal, counters=counters))
    assert view.gateway_id == "gw-1"
    facts = {f.label: f for f in view.facts}
    assert facts["uptime"].text == "1 h 2 min"
    assert facts["config"].text == "ab" * 6 and facts["config"].title == "sha256 " + "ab" * 32
    assert facts["broker"].text == "connected to broker.example:1883 for 65 s"
    assert facts["outbox"].text == "12 readings pending, oldest 4 s, 40.0 KiB on disk"
    assert (facts["devices"].text, facts["devices"].cls) == ("2: 1 ok, 1 partial", "warn")
    tcp_row, rtu_row = view.devices
    assert (tcp_row.state, tcp_row.cls, tcp_row.last_good, tcp_row.errors_hour) == \
        ("ok", "ok", "3 s ago", 0)
    assert tcp_row.where == "10.0.0.21:502 unit 1"
    assert tcp_row.requests == "3" and tcp_row.response == "34 ms"  # holding, input, coil
    assert (rtu_row.state, rtu_row.cls, rtu_row.last_good) == ("partial", "warn", "never")
    assert rtu_row.last_error.startswith("modbus exception 2 illegal data address")
    assert rtu_row.last_meaning.startswith("illegal data address: the device has no register")
    assert rtu_row.where == "rs485-a unit 7" and rtu_row.errors_hour == 1
    (bus,) = view.buses
    assert bus.name == "rs485-a" and bus.devices == 1
    assert bus.measured == "2 %"  # 0.034 s every 2 s
    values = {(g.device, v.point): (v.text, v.unit, v.quality)
              for g in view.values for v in g.values}
    assert values[("tcp-1", "temp")] == ("21.5", "degC", "good")
    assert values[("tcp-1", "pump")] == ("true", "", "good")
    assert values[("rtu-1", "temp")] == ("—", "degC", "bad")


def _row(state_text: str) -> Any:
    from gateway.edge.page.view import DeviceRow

    return DeviceRow("d", "modbus-tcp", "", state_text, "", "", 0, "", "", "1", "")


@pytest.mark.parametrize(("states", "text", "cls"), [
    pytest.param((), "none", "ok", id="no-devices"),
    pytest.param(("ok", "ok"), "2: 2 ok", "ok", id="all-ok"),
    pytest.param(("ok", "waiting"), "2: 1 ok, 1 waiting", "ok", id="starting"),
    pytest.param(("partial", "ok"), "2: 1 ok, 1 partial", "warn", id="partial"),
    pytest.param(("backed off (every 8 s)", "partial", "failing"),
                 "3: 1 partial, 1 failing, 1 backed off", "bad", id="failing"),
])
def test_the_devices_summary(states: tuple[str, ...], text: str, cls: str) -> None:
    from gateway.edge.page.view import devices_fact

    fact = devices_fact([_row(s) for s in states])
    assert (fact.text, fact.cls) == (text, cls)


@pytest.mark.parametrize(("outbox", "text", "cls"), [
    pytest.param(OutboxState(0, None, 0, 4096), "empty, 4.0 KiB on disk", "ok", id="empty"),
    pytest.param(OutboxState(5000, 90.0, 0, 1 << 20),
                 "5000 readings pending, oldest 90 s, 1.0 MiB on disk", "warn", id="backlog"),
    pytest.param(OutboxState(3, 1.0, 0, 4096, "outbox commits fail: disk full"),
                 "outbox commits fail: disk full; 3 readings pending, oldest 1 s", "bad",
                 id="failing-commits"),
])
def test_the_outbox_fact(outbox: OutboxState, text: str, cls: str) -> None:
    page = state()
    page = PageState(**{**{f: getattr(page, f) for f in page.__dataclass_fields__},
                        "outbox": outbox})
    facts = {f.label: f for f in main_view(page).facts}
    assert (facts["outbox"].text, facts["outbox"].cls) == (text, cls)


def test_an_old_error_says_how_old_once_the_device_answers_again() -> None:
    now = [NOW - 120]
    journal = ScanJournal(clock=lambda: now[0])
    journal.record("tcp-1", reading("tcp-1", {}), {}, [error("timeout", "no response")], 1.0)
    now[0] = NOW
    journal.record("tcp-1", reading("tcp-1", GOOD), RAW, [], 0.01)
    row = main_view(state(config(tcp("tcp-1")), journal)).devices[0]
    assert (row.state, row.last_error) == ("ok", "no response (2 min ago)")


def test_the_main_page_shows_a_bounded_number_of_values() -> None:
    many = tuple(PointConfig(f"p{i}", "uint16", "holding", i) for i in range(120))
    cfg = config(*(tcp(f"d{n}", many) for n in range(5)))
    view = main_view(state(cfg))
    assert sum(len(g.values) for g in view.values) == MAX_VALUES
    assert view.values_left_out == 5 * 120 - MAX_VALUES


def test_the_layout_changes_with_the_devices_only() -> None:
    a = main_view(state(config(tcp("x"), tcp("y"))))
    b = main_view(state(config(tcp("x"), tcp("y")), scanned("x", GOOD, [], RAW)))
    c = main_view(state(config(tcp("x"))))
    assert a.layout == b.layout != c.layout


def test_device_view_decodes_the_last_raw_registers_under_every_byte_order() -> None:
    journal = scanned("tcp-1", GOOD, [], RAW)
    view = device_view(state(journal=journal), "tcp-1")
    assert view is not None
    rows = {p.name: p for p in view.points}
    energy = rows["energy"]
    assert energy.raw == " ".join(f"{r:04x}" for r in RAW["energy"])
    assert energy.value == "123456789012" and energy.byte_order == "CDAB"
    orders = dict(energy.orders)
    assert set(orders) == {"ABCD", "DCBA", "BADC", "CDAB"}
    assert orders["CDAB"] == "123456789012" and orders["ABCD"] != "123456789012"
    assert rows["level"].raw == "ff85" and rows["level"].orders == ()  # one register
    assert rows["pump"].raw == "1" and rows["pump"].location == "coil 5"
    assert view.raw_at == "2027-01-15 07:59:59Z"
    assert device_view(state(), "no-such-device") is None


def test_device_view_lists_recent_errors_newest_first_with_their_meaning() -> None:
    now = [NOW - 10]
    journal = ScanJournal(clock=lambda: now[0])
    journal.record("rtu-1", reading("rtu-1", {}), {}, [error("timeout", "first")], 0.3)
    now[0] = NOW
    journal.record("rtu-1", reading("rtu-1", {}), {},
                   [error("exception", "second", 2)], 0.3)
    view = device_view(state(journal=journal), "rtu-1")
    assert view is not None
    assert [(e.kind, e.message) for e in view.errors] == [("exception 2", "second"),
                                                          ("timeout", "first")]
    assert view.errors[0].meaning.startswith("illegal data address")


# -- HTML ---------------------------------------------------------------------------------

HOSTILE = '<script>alert("x")</script>&'


def test_every_text_is_escaped() -> None:
    point = PointConfig("temp", "float32", "holding", 2, unit=HOSTILE)
    cfg = config(tcp("tcp-1", (point,)))
    journal = scanned("tcp-1", {}, [error("frame", HOSTILE)], quality={"temp": "bad"})
    warnings = (WarningEntry(NOW, "WARNING", "sensegate.x", HOSTILE),)
    page = state(cfg, journal, warnings=warnings, connected=False, last_error=HOSTILE)
    for rendered in (render_main(main_view(page), "0.1.0"),
                     render_device(device_view(page, "tcp-1"), "0.1.0")):  # type: ignore[arg-type]
        assert "<script>alert" not in rendered.html
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;" in rendered.html
        cells = json.loads(rendered.cells_json())
        assert all("<script>" not in html for html in cells["cells"].values())
        assert rendered.html.count("<script") == 1  # the page's own, from /static


def test_cells_are_the_refreshable_parts_of_the_same_html() -> None:
    rendered = render_main(main_view(state(journal=scanned("tcp-1", GOOD, [], RAW))), "0.1.0")
    assert rendered.cells
    for cell_id, inner in rendered.cells.items():
        assert f'id="{cell_id}"' in rendered.html and inner in rendered.html
    doc = json.loads(rendered.cells_json())
    assert doc["layout"] == rendered.layout and doc["cells"] == rendered.cells
    assert f'data-layout="{rendered.layout}"' in rendered.html


def test_device_links_are_quoted() -> None:
    html = render_main(main_view(state(config(tcp("a_b-1")))), "0.1.0").html
    assert 'href="/devices/a_b-1"' in html


# -- the routes: no secret, 404, static files ---------------------------------------------


def get(routes: dict[str, Any], target: str, headers: dict[str, str] | None = None) -> Any:
    head = f"GET {target} HTTP/1.0\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in (headers or {}).items()) + "\r\n"
    request = parse_head(head.encode())
    assert request is not None
    route = route_for(routes, request.path)
    assert route is not None, target
    return asyncio.run(route(request))


def test_no_secret_is_ever_rendered() -> None:
    register_secret(PASSWORD)
    register_secret(TOKEN)
    # even where a secret leaks into free text (an error message, a warning), it is scrubbed
    journal = scanned("tcp-1", {}, [error("connection", f"refused {PASSWORD}")])
    warnings = (WarningEntry(NOW, "ERROR", "sensegate.x", f"token {TOKEN} rejected"),)
    page = state(journal=journal, warnings=warnings, connected=False,
                 last_error=f"not authorised as tech/{PASSWORD}")
    routes = page_routes(lambda: page, "0.1.0")
    for target in ("/", "/?cells=1", "/devices/tcp-1", "/devices/tcp-1?cells=1",
                   "/devices/rtu-1"):
        response = get(routes, target)
        assert response.status == 200, target
        assert PASSWORD.encode() not in response.body and TOKEN.encode() not in response.body
    assert b"***" in get(routes, "/").body


def test_routes_answer_pages_json_404_and_static_files() -> None:
    routes = page_routes(lambda: state(), "0.1.0")
    page = get(routes, "/")
    assert page.content_type == "text/html; charset=utf-8"
    assert ("Cache-Control", "no-store") in page.headers
    assert any(name == "Content-Security-Policy" for name, _ in page.headers)
    assert get(routes, "/?cells=1").content_type == "application/json"
    assert get(routes, "/devices/nope").status == 404
    assert get(routes, "/devices/rtu%2D1").status == 200  # percent-decoded
    css = get(routes, "/static/page.css")
    assert css.status == 200 and css.content_type.startswith("text/css") and css.body
    assert b"fetch(" in get(routes, "/static/page.js").body


# -- HTTP pieces: prefix routes, query, cookies, the token gate ---------------------------


async def _ok(request: Request) -> Any:
    from gateway.runtime.http import Response

    return Response(200, b"secret page\n")


@pytest.mark.parametrize(("path", "expected"), [
    pytest.param("/", "root", id="root-exact"),
    pytest.param("/devices/x", "devices", id="prefix"),
    pytest.param("/devices/", None, id="prefix-needs-a-name"),
    pytest.param("/devices", None, id="no-slash"),
    pytest.param("/devices/a/b", "deep", id="longest-prefix"),
    pytest.param("/nothing", None, id="unknown"),
])
def test_route_for(path: str, expected: str | None) -> None:
    names: dict[Any, str] = {}
    routes: dict[str, Any] = {}
    for key, name in (("/", "root"), ("/devices/*", "devices"), ("/devices/a/*", "deep")):
        async def route(request: Request) -> Any:
            return None
        routes[key] = route
        names[route] = name
    found = route_for(routes, path)
    assert (names[found] if found is not None else None) == expected


def test_request_query_and_cookies() -> None:
    request = parse_head(b"GET /x?token=a%2Bb+c&cells=1 HTTP/1.0\r\n"
                         b"Cookie: theme=dark; sensegate_session=abc\r\n\r\n")
    assert request is not None
    assert request.path == "/x" and request.param("token") == "a+b c"
    assert request.param("cells") == "1" and request.param("nope") is None
    assert request.cookie("sensegate_session") == "abc" and request.cookie("x") is None


def run_gate(gate: TokenGate, target: str, headers: dict[str, str] | None = None) -> Any:
    return get({target.split("?")[0]: gate.guard(_ok)}, target, headers)


def test_without_a_token_everything_passes() -> None:
    gate = TokenGate(None)
    assert not gate.enabled
    assert run_gate(gate, "/").status == 200
    assert run_gate(gate, "/?token=anything").status == 200


def test_the_token_gate() -> None:
    gate = TokenGate(TOKEN)
    assert run_gate(gate, "/").status == 401
    assert run_gate(gate, "/?token=wrong").status == 401
    assert run_gate(gate, "/", {"Cookie": f"{SESSION_COOKIE}={TOKEN}"}).status == 401
    login = run_gate(gate, f"/devices/x?token={TOKEN}")
    assert login.status == 303
    headers = dict(login.headers)
    assert headers["Location"] == "/devices/x"  # the token leaves the address bar
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert TOKEN not in cookie and TOKEN.encode() not in login.body
    session = cookie.split(";", 1)[0]
    assert run_gate(gate, "/", {"Cookie": f"other=1; {session}"}).status == 200
    assert run_gate(gate, "/", {"Authorization": f"Bearer {TOKEN}"}).status == 200
    assert run_gate(gate, "/", {"Authorization": "Bearer wrong"}).status == 401
    assert run_gate(gate, "/", {"Authorization": f"Basic {TOKEN}"}).status == 401
    # another token makes another session cookie
    assert run_gate(TokenGate(TOKEN + "x"), "/", {"Cookie": session}).status == 401


# -- config: http (SPEC §9), metrics its old name -----------------------------------------

CONFIG_HEAD = "gateway: {id: site-1}\nmqtt: {host: broker}\ndevices: []\n"


def load_text(tmp_path: Any, text: str, env: dict[str, str] | None = None) -> GatewayConfig:
    from gateway.config.load import load_gateway_config

    path = tmp_path / "gateway.yaml"
    path.write_text(CONFIG_HEAD + text)
    return load_gateway_config(str(path), env=env or {})


def test_http_listen_and_token_from_the_environment(tmp_path: Any) -> None:
    cfg = load_text(tmp_path, "http:\n  listen: 0.0.0.0:9200\n  token: ${UI_TOKEN}\n",
                    {"UI_TOKEN": TOKEN})
    assert cfg.listener is cfg.http and cfg.metrics is None
    assert (cfg.listener.host, cfg.listener.port) == ("0.0.0.0", 9200)
    assert cfg.http is not None and cfg.http.token == Secret(TOKEN)
    assert TOKEN not in repr(cfg)


@pytest.mark.parametrize(("text", "listen"), [
    pytest.param("http: {}\n", ("127.0.0.1", 9108), id="http-default-loopback"),
    pytest.param("metrics: {listen: 127.0.0.1:9300}\n", ("127.0.0.1", 9300), id="old-name"),
    pytest.param("", None, id="no-listener"),
])
def test_the_listener(tmp_path: Any, text: str, listen: tuple[str, int] | None) -> None:
    cfg = load_text(tmp_path, text)
    assert (None if cfg.listener is None else (cfg.listener.host, cfg.listener.port)) == listen


def test_http_and_its_old_name_together_are_refused(tmp_path: Any) -> None:
    from gateway.core.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, "http: {listen: 127.0.0.1:9108}\nmetrics: {listen: 127.0.0.1:9109}\n")
    assert [str(i) for i in caught.value.issues] == [
        f"{tmp_path / 'gateway.yaml'}:5:1: metrics: 'metrics' is the old name of 'http': "
        "give one of them, not both"]


def test_the_old_name_takes_no_token(tmp_path: Any) -> None:
    from gateway.core.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, "metrics: {listen: 127.0.0.1:9108, token: abcdef}\n")
    (issue,) = caught.value.issues
    assert "token" in str(issue) and "abcdef" not in str(issue)
