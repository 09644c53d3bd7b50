"""The technician's page in a real browser: `sensegate run`, simulated devices, headless Chromium.

The gateway runs as a real process (``python -m gateway run``) polling a simulated Modbus
TCP device and an RS-485 bus on a pty with two RTU units (the simulators run in this
process, on a loop of their own thread), publishing to a real Mosquitto. Chromium
(Debian's ``chromium`` and ``chromium-driver``, driven by selenium) opens the page: the token
gate, devices and live values appearing and updating without a reload, a device made to
fail showing its error and its Modbus meaning within two scans (counted with the gateway's
own scan counter, not timed), the device page with every byte order, no secret anywhere,
no method but GET/HEAD, the layout fitting a 1366x768 screen at 80 % zoom and a phone, and
the page read whole by a second Chromium with JavaScript off. Screenshots go to docs/page/
(docs/page.md shows them) when SENSEGATE_UPDATE_SCREENSHOTS=1, else to a temporary directory.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from bench._harness import Proc, wait_until
from tests.support.modbus_sim import load
from tests.support.mosquitto import Mosquitto
from tests.support.ports import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# Screenshots go to a temporary directory; SENSEGATE_UPDATE_SCREENSHOTS=1 writes the ones
# docs/page.md shows (a test run must not leave the checkout modified).
SHOTS = (ROOT / "docs" / "page" if os.environ.get("SENSEGATE_UPDATE_SCREENSHOTS") == "1"
         else Path(tempfile.mkdtemp(prefix="sensegate-page-shots-")))
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
TOKEN = "ui-token-5f2a9c1e77"
PASSWORD = "mqtt-pass-8d41b0aa"
GATEWAY_ID = "gw-page"

POINTS_YAML = """\
    points:
      - {name: seq, table: holding, address: 0, type: uint16}
      - {name: temp, table: holding, address: 2, type: float32, unit: degC}
      - {name: energy, table: holding, address: 4, type: uint64, byte_order: CDAB, unit: Wh}
      - {name: level, table: input, address: 100, type: int16, scale: 0.1, unit: m}
      - {name: alarm, table: holding, address: 8, type: bool, bit: 3}
      - {name: model, table: holding, address: 10, type: string, length: 3}
      - {name: pump, table: coil, address: 5, type: bool}
"""

needs_browser = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
    reason="chromium and chromium-driver are not installed (scripts/test.sh installs them)",
)


class SimThread:
    """Simulators on an asyncio loop of their own thread (the test itself is synchronous)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def sims() -> Iterator[tuple[SimThread, Any, Any]]:
    from gateway.sim.simulator import ModbusRtuSimulator, ModbusTcpSimulator

    thread = SimThread()

    async def start() -> tuple[Any, Any]:
        tcp = ModbusTcpSimulator([1])
        rtu = ModbusRtuSimulator([1, 2])
        for unit in (tcp.unit(1), rtu.unit(1), rtu.unit(2)):
            load(unit)
        await tcp.start()
        await rtu.start()
        return tcp, rtu

    tcp, rtu = thread.run(start())
    try:
        yield thread, tcp, rtu
    finally:
        thread.run(tcp.stop())
        thread.run(rtu.stop())
        thread.close()


@pytest.fixture
def broker() -> Iterator[Mosquitto]:
    with Mosquitto() as b:
        yield b


def gateway_config(tmp: Path, *, mqtt_port: int, http_port: int, tcp_port: int,
                   bus: str) -> str:
    return f"""\
gateway:
  id: {GATEWAY_ID}
  state_dir: {tmp / "state"}
mqtt:
  host: 127.0.0.1
  port: {mqtt_port}
  username: technician
  password: ${{MQTT_PASSWORD}}
http:
  listen: 127.0.0.1:{http_port}
  token: ${{UI_TOKEN}}
buses:
  - {{name: rs485-a, port: {bus}, baudrate: 19200}}
devices:
  - name: tcp-1
    driver: modbus-tcp
    host: 127.0.0.1
    port: {tcp_port}
    unit: 1
    interval: 1s
    timeout: 500ms
{POINTS_YAML}
  - name: rtu-1
    driver: modbus-rtu
    bus: rs485-a
    unit: 1
    interval: 1s
    timeout: 300ms
{POINTS_YAML}
  - name: rtu-2
    driver: modbus-rtu
    bus: rs485-a
    unit: 2
    interval: 1s
    timeout: 300ms
{POINTS_YAML}"""


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:  # not listening (yet)
        return 0, b""


def scans(base: str, device: str) -> float:
    _, body = http_get(base + "/metrics", {"Authorization": f"Bearer {TOKEN}"})
    prefix = f'sensegate_scans_total{{device="{device}"}} '
    for line in body.decode().splitlines():
        if line.startswith(prefix):
            return float(line.removeprefix(prefix))
    return 0.0


def browser(*, javascript: bool = True) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    if not javascript:
        options.add_experimental_option(
            "prefs", {"profile.managed_default_content_settings.javascript": 2})
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--hide-scrollbars", "--window-size=1366,768"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def emulate(driver: Any, *, width: int, height: int, scale: float, mobile: bool) -> None:
    """CSS viewport ``width`` x ``height`` drawn at ``scale`` device pixels per CSS pixel."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": scale, "mobile": mobile,
    })


def fits_width(driver: Any) -> bool:
    return bool(driver.execute_script(
        "return document.documentElement.scrollWidth <= document.documentElement.clientWidth"))


def text_of(driver: Any, xpath: str) -> str:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    try:
        return str(driver.find_element("xpath", xpath).text)
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def device_row(name: str) -> str:
    return f"//table[contains(@class,'devices')]//tr[td[1]/a[normalize-space()='{name}']]"


def value_cell(device: str, point: str) -> str:
    return (f"//div[@class='card'][h3/a[normalize-space()='{device}']]"
            f"//tr[td[1][normalize-space()='{point}']]/td[2]")


@needs_browser
def test_the_page_in_a_browser(tmp_path: Path, broker: Mosquitto,
                               sims: tuple[SimThread, Any, Any],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    thread, tcp, rtu = sims
    http_port = free_port()
    base = f"http://127.0.0.1:{http_port}"
    config = tmp_path / "gateway.yaml"
    config.write_text(gateway_config(tmp_path, mqtt_port=broker.port, http_port=http_port,
                                     tcp_port=tcp.port, bus=rtu.path))
    monkeypatch.setenv("UI_TOKEN", TOKEN)
    monkeypatch.setenv("MQTT_PASSWORD", PASSWORD)
    gateway = Proc("run", config, tmp_path / "gateway.log").start()
    try:
        assert wait_until(lambda: http_get(base + "/healthz")[0] == 200, 30), \
            (tmp_path / "gateway.log").read_text()

        # The token gate, outside the browser: /healthz open, the rest needs the token.
        assert http_get(base + "/")[0] == 401
        assert http_get(base + "/metrics")[0] == 401
        assert http_get(base + "/devices/tcp-1?cells=1")[0] == 401
        assert http_get(base + "/metrics", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
        assert http_get(base + "/metrics", {"Authorization": "Bearer nope"})[0] == 401

        driver = browser()
        try:
            emulate(driver, width=1708, height=960, scale=0.8, mobile=False)  # 1366x768 at 80 %
            driver.get(base + "/")
            assert "needs its token" in driver.find_element("tag name", "body").text
            driver.get(base + "/?token=wrong")
            assert "needs its token" in driver.find_element("tag name", "body").text
            assert driver.get_cookie("sensegate_session") is None
            driver.get(base + f"/?token={TOKEN}")
            assert driver.current_url == base + "/"  # the token left the address bar
            cookie = driver.get_cookie("sensegate_session")
            assert cookie is not None and cookie["httpOnly"] and cookie["value"] != TOKEN
            assert driver.find_element("tag name", "h1").text == GATEWAY_ID

            # Devices and live values appear, and update without reloading the page.
            for name in ("tcp-1", "rtu-1", "rtu-2"):
                assert wait_until(lambda n=name: text_of(driver, device_row(n) + "/td[2]") == "ok",
                                  20), driver.page_source
            assert wait_until(lambda: text_of(driver, value_cell("tcp-1", "temp")) == "21.5", 10)
            assert text_of(driver, value_cell("rtu-2", "level")) == "-12.3"
            assert text_of(driver, value_cell("rtu-1", "energy")) == "123456789012"
            driver.execute_script("window.notReloaded = true")
            seq = value_cell("tcp-1", "seq")
            first = text_of(driver, seq)
            assert wait_until(lambda: text_of(driver, seq) not in ("", first), 15)
            assert driver.execute_script("return window.notReloaded === true")
            assert driver.find_element("id", "live").text.startswith("updated")
            bus = text_of(driver, "//section[@id='buses']//tbody/tr[1]")
            assert bus.startswith("rs485-a") and "%" in bus

            assert fits_width(driver)  # 1366x768 at 80 %: no sideways scrolling

            # A device made to fail: its error and what it means, within two scans.
            def refuse() -> None:
                rtu.unit(2).refuse("holding", 0)

            thread.loop.call_soon_threadsafe(refuse)
            at_fault = scans(base, "rtu-2")
            error_xpath = device_row("rtu-2") + "/td[5]"
            assert wait_until(lambda: "illegal data address" in text_of(driver, error_xpath), 20)
            seen_after = scans(base, "rtu-2") - at_fault
            # the scan in flight when the fault was set, the next one, and one page refresh
            # (the page refreshes once per fastest device interval, here the same 1 s)
            assert seen_after <= 3, seen_after
            row = text_of(driver, device_row("rtu-2"))
            assert "partial" in row  # input and coil reads still answer
            assert "modbus exception 2" in row and "0-based address" in row
            assert text_of(driver, device_row("rtu-1") + "/td[2]") == "ok"
            SHOTS.mkdir(exist_ok=True)
            driver.save_screenshot(str(SHOTS / "main-failing-device.png"))

            # Phone.
            emulate(driver, width=390, height=844, scale=1, mobile=True)
            driver.get(base + "/")
            assert wait_until(lambda: text_of(driver, device_row("tcp-1") + "/td[2]") != "", 10)
            assert fits_width(driver)
            driver.save_screenshot(str(SHOTS / "main-phone.png"))

            # The device page: raw registers beside the values, every byte order.
            emulate(driver, width=1708, height=960, scale=0.8, mobile=False)
            driver.get(base + "/devices/tcp-1")
            heads = [th.text for th in
                     driver.find_elements("xpath", "//table[@class='points']//th")]
            assert heads[-4:] == ["ABCD", "DCBA", "BADC", "CDAB"]
            energy = "//table[@class='points']//tr[td[1][starts-with(normalize-space(),'energy')]]"
            assert wait_until(lambda: text_of(driver, energy + "/td[3]") == "123456789012", 10)
            raw = text_of(driver, energy + "/td[2]").split()
            assert len(raw) == 4 and all(len(word) == 4 for word in raw)
            mine = driver.find_element("xpath", energy + "/td[contains(@class,'mine')]")
            assert mine.get_attribute("data-label") == "CDAB" and mine.text == "123456789012"
            assert text_of(driver, energy + "/td[@data-label='ABCD']") not in ("", "123456789012")
            assert fits_width(driver)
            driver.save_screenshot(str(SHOTS / "device-tcp-1.png"))
            driver.get(base + "/devices/rtu-2")
            assert wait_until(lambda: "illegal data address" in text_of(
                driver, "//section[@id='errors']//tbody"), 10)
            driver.save_screenshot(str(SHOTS / "device-failing.png"))

            # No secret anywhere: the page, a device page, their cells, the warnings.
            cookie_header = {"Cookie": f"sensegate_session={cookie['value']}"}
            for path in ("/", "/?cells=1", "/devices/rtu-2", "/devices/rtu-2?cells=1"):
                status, body = http_get(base + path, cookie_header)
                assert status == 200, path
                assert TOKEN.encode() not in body and PASSWORD.encode() not in body, path
            cells = json.loads(http_get(base + "/?cells=1", cookie_header)[1])
            assert set(cells) == {"layout", "cells"} and cells["cells"]
            # Read-only: nothing but GET and HEAD, whatever the token.
            post = urllib.request.Request(base + "/", data=b"x", headers=cookie_header)
            try:
                urllib.request.urlopen(post, timeout=5)
                raise AssertionError("a POST was answered")
            except urllib.error.HTTPError as exc:
                assert exc.code == 405
        finally:
            driver.quit()

        # Readable without JavaScript: a browser with scripts off signs in and reads it all.
        driver = browser(javascript=False)
        try:
            driver.get(base + f"/?token={TOKEN}")
            body = driver.find_element("tag name", "body").text
            assert "tcp-1" in body and "21.5" in body and "illegal data address" in body
            assert driver.find_element("id", "live").text == "read-only"  # no script ran
        finally:
            driver.quit()
    finally:
        gateway.stop()
    log = (tmp_path / "gateway.log").read_text()
    assert TOKEN not in log and PASSWORD not in log

