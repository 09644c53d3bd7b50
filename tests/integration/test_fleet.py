"""Fleet on real processes (SPEC §7): 20 `sensegate run` gateways, one Mosquitto with an ACL.

Every gateway has its own broker user (its id) and may publish only under its own topics and
read only its own ``config/set``; the operations centre (user ``ops``) may do anything. Each
gateway polls one simulated Modbus TCP device (all in one simulator process) every second.

- `fleet status` lists all 20 with the right fields and each one's config hash;
- pushes, run concurrently on different gateways: a good config (applied, readings continue
  with no gap in the device's sequence numbers, the outbox file is the same one), an invalid
  one (refused with LINE:COL), one that loses the broker and one that fails every device
  (both rolled back within the probation), a forged, a replayed, a stale one and one signed
  for another gateway (all refused), and one sent with another gateway's credentials (the
  ACL drops it: nothing happens);
- a gateway offline during a push applies nothing later, a retained stale message included;
- ``kill -9`` at random moments of applies: the gateway restarts on a config that passed.

Counts and outcomes, never timings.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench._harness import PYTHON, ROOT, SimProcess, device_name, wait_until
from gateway.commands.fleet import Broker, collect_status, send_and_wait, signed_message
from gateway.core.payload import config_result_topic, config_set_topic
from gateway.runtime.signing import PrivateKey, public_line, write_key_pair
from tests.support.mosquitto import Mosquitto
from tests.support.ports import free_port

pytestmark = pytest.mark.integration

N = 20
PROBATION = 4.0
OPS = ("ops", "ops-secret")


def gw(i: int) -> str:
    return f"gw-{i:02d}"


ACL = """\
user ops
topic readwrite sensegate/#

pattern write sensegate/%u/+/data
pattern write sensegate/%u/status
pattern write sensegate/%u/config/result
pattern read sensegate/%u/config/set
"""


@dataclass
class Gateway:
    id: str
    dir: Path
    device_port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def config(self) -> Path:
        return self.dir / "gateway.yaml"

    @property
    def log(self) -> Path:
        return self.dir / "gateway.log"

    def start(self) -> None:
        env = {**os.environ, "GW_PASS": f"pass-{self.id}", "PYTHONPATH": str(ROOT)}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [PYTHON, "-m", "gateway", "run", "-c", str(self.config)], cwd=ROOT, env=env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def sha(self) -> str:
        return hashlib.sha256(self.config.read_bytes()).hexdigest()


def config_text(g: Gateway, mqtt_port: int, key_line: str, *, device_port: int | None = None,
                tags: str = "{}", point_type: str = "uint32") -> str:
    return f"""\
gateway:
  id: {g.id}
  state_dir: {g.dir / "state"}
  status_interval: 5s
  tags: {tags}
mqtt:
  host: 127.0.0.1
  port: {mqtt_port}
  username: {g.id}
  password: ${{GW_PASS}}
  keepalive: 5s
outbox:
  commit_interval: 200ms
fleet:
  public_key: {key_line}
  probation: {PROBATION:g}s
devices:
  - name: dev
    driver: modbus-tcp
    host: 127.0.0.1
    port: {device_port or g.device_port}
    unit: 1
    interval: 1s
    timeout: 1s
    retries: 0
    points:
      - {{name: seq, table: holding, address: 0, type: {point_type}}}
"""


@dataclass
class Site:
    dir: Path
    broker: Mosquitto
    ops: Broker
    key_path: Path
    key: PrivateKey
    other_key: PrivateKey
    key_line: str
    gateways: list[Gateway]

    def text(self, g: Gateway, **kw: Any) -> str:
        return config_text(g, self.broker.port, self.key_line, **kw)

    def as_user(self, user: str, password: str) -> Broker:
        return Broker("127.0.0.1", self.broker.port, username=user, password=password)

    def records(self) -> dict[str, dict[str, Any]]:
        return asyncio.run(collect_status(self.ops, 3.0))


def _online_with(site: Site, expected: dict[str, str]) -> bool:
    records = site.records()
    return all(records.get(g, {}).get("state") == "online"
               and records[g].get("config", {}).get("sha256") == sha
               for g, sha in expected.items())


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("fleet")
    passwd = base / "passwd"
    passwd.write_text("".join([f"{OPS[0]}:{OPS[1]}\n"] +
                              [f"{gw(i)}:pass-{gw(i)}\n" for i in range(N)]))
    subprocess.run(["mosquitto_passwd", "-U", str(passwd)], check=True)
    (base / "acl").write_text(ACL)
    key_path = base / "ops-key"
    public = write_key_pair(str(key_path))
    write_key_pair(str(base / "other-key"))
    sims = SimProcess(N)
    broker = Mosquitto(allow_anonymous=False,
                       extra_conf=f"password_file {passwd}\nacl_file {base / 'acl'}\n")
    gateways: list[Gateway] = []
    try:
        broker.start()
        the_site = Site(base, broker, Broker("127.0.0.1", broker.port, *OPS), key_path,
                        PrivateKey.load(str(key_path)), PrivateKey.load(str(base / "other-key")),
                        public_line(public), gateways)
        for i, (_, port) in enumerate(sims.devices()):
            g = Gateway(gw(i), base / gw(i), port)
            g.dir.mkdir()
            g.config.write_text(the_site.text(g))
            gateways.append(g)
            g.start()
        expected = {g.id: g.sha() for g in gateways}
        assert wait_until(lambda: _online_with(the_site, expected), 90, step=1.0), \
            "\n".join(g.log.read_text()[-1500:] for g in gateways[:3])
        yield the_site
    finally:
        for g in gateways:
            g.stop()
        broker.close()
        sims.close()
        assert device_name(0) == "dev-0000"  # the simulator naming this file relies on


def test_fleet_status_lists_every_gateway_with_its_health(site: Site) -> None:
    env = {**os.environ, "SENSEGATE_MQTT_PASSWORD": OPS[1], "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [PYTHON, "-m", "gateway", "fleet", "status", "--json", "--broker",
         f"127.0.0.1:{site.broker.port}", "--username", OPS[0]],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True).stdout
    records = {r["gateway"]: r for r in json.loads(out)}
    assert sorted(records) == [gw(i) for i in range(N)]
    for g in site.gateways:
        r = records[g.id]
        assert r["state"] == "online"
        assert r["config"]["sha256"] == g.sha()
        assert r["version"] and r["uptime_s"] >= 0 and r["config"]["applied_ts"] > 0
        assert r["devices"]["total"] == 1
        assert set(r["outbox"]) == {"pending", "oldest_s", "dropped"}
        assert r["outbox"]["dropped"] == 0
    table = subprocess.run(
        [PYTHON, "-m", "gateway", "fleet", "status", "gw-0*", "--broker",
         f"127.0.0.1:{site.broker.port}", "--username", OPS[0]],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True).stdout
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["GATEWAY", "STATE", "VERSION"]
    assert [line.split()[0] for line in lines[1:-1]] == [gw(i) for i in range(10)]
    assert lines[-1] == f"10 gateway(s) of {N}"


# --- pushes, run concurrently ---------------------------------------------------------------


async def _push(site: Site, g: Gateway, text: str, *, key: PrivateKey | None = None,
                ts: int | None = None, topic_of: Gateway | None = None,
                as_broker: Broker | None = None, wait_probation: bool = False,
                timeout: float = 30.0) -> list[dict[str, Any]]:
    topic = config_set_topic("sensegate", (topic_of or g).id)
    msg_id, payload = signed_message(key or site.key, topic, text, ts=ts)
    if as_broker is None:
        return await send_and_wait(site.ops, g.id, payload, msg_id, timeout, wait_probation)
    # Sent with other credentials; the operations centre listens for a result.
    async with site.ops.client("ops-listen") as listen:
        await listen.subscribe(config_result_topic("sensegate", g.id), qos=1)
        async with as_broker.client(f"intruder-{g.id}") as intruder:
            await intruder.publish(topic, payload, qos=1)
        results = []
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(timeout):
                async for message in listen.messages:
                    results.append(json.loads(bytes(message.payload)))  # type: ignore[arg-type]
        return results


async def _replay(site: Site, g: Gateway, text: str) -> list[dict[str, Any]]:
    topic = config_set_topic("sensegate", g.id)
    msg_id, payload = signed_message(site.key, topic, text)
    first = await send_and_wait(site.ops, g.id, payload, msg_id, 30.0, False)
    again = await send_and_wait(site.ops, g.id, payload, msg_id, 30.0, False)
    return first + again


async def _cli_push(site: Site, g: Gateway, path: Path, key: Path | None = None,
                    *extra: str) -> tuple[int, str]:
    env = {**os.environ, "SENSEGATE_MQTT_PASSWORD": OPS[1], "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        PYTHON, "-m", "gateway", "fleet", "push", "--broker", f"127.0.0.1:{site.broker.port}",
        "--username", OPS[0], "--key", str(key or site.key_path), *extra, g.id, str(path),
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def _readings(site: Site, g: Gateway, seconds: float) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    async with site.ops.client(f"ops-data-{g.id}") as client:
        await client.subscribe(f"sensegate/{g.id}/+/data", qos=1)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(seconds):
                async for message in client.messages:
                    got.append(json.loads(bytes(message.payload)))  # type: ignore[arg-type]
    return got


INVALID_LINE = 27  # the point line of config_text, 1-based


async def _all_pushes(site: Site) -> dict[str, Any]:
    gws = site.gateways
    good_path = site.dir / "good.yaml"
    good_path.write_text(site.text(gws[0], tags="{pushed: 'yes'}"))
    closed = free_port()
    invalid = site.text(gws[1], point_type="uint33")
    assert "uint33" in invalid.splitlines()[INVALID_LINE - 1]
    outbox_before = os.stat(gws[0].dir / "state" / "outbox.db").st_ino

    async def good() -> tuple[int, str]:
        await asyncio.sleep(2.0)  # the data subscriber is listening by then
        return await _cli_push(site, gws[0], good_path)

    forged_path = site.dir / "forged.yaml"
    forged_path.write_text(site.text(gws[13], tags="{f: y}"))

    tasks: dict[str, Any] = {
        "readings": _readings(site, gws[0], 9.0),
        "good": good(),
        "invalid": _push(site, gws[1], invalid),
        "no_broker": _push(site, gws[2], config_text(gws[2], closed, site.key_line),
                           wait_probation=True),
        "devices_fail": _push(site, gws[3], site.text(gws[3], device_port=closed),
                              wait_probation=True),
        "forged": _push(site, gws[4], site.text(gws[4], tags="{f: x}"), key=site.other_key),
        "forged_cli": _cli_push(site, gws[13], forged_path, site.dir / "other-key", "--json"),
        "replayed": _replay(site, gws[5], site.text(gws[5], tags="{r: x}")),
        "stale": _push(site, gws[6], site.text(gws[6], tags="{s: x}"),
                       ts=time.time_ns() - 3600 * 10**9),
        "other_topic": _push(site, gws[7], site.text(gws[7], tags="{o: x}"), topic_of=gws[8]),
        "acl": _push(site, gws[10], site.text(gws[10], tags="{a: x}"),
                     as_broker=site.as_user(gws[9].id, f"pass-{gws[9].id}"), timeout=6.0),
    }
    shas = {g.id: g.sha() for g in gws}
    done = dict(zip(tasks, await asyncio.gather(*tasks.values()), strict=True))
    done["shas_before"] = shas
    done["outbox_inode_before"] = outbox_before
    return done


@pytest.fixture(scope="module")
def outcomes(site: Site) -> dict[str, Any]:
    return asyncio.run(_all_pushes(site))


def _statuses(results: list[dict[str, Any]]) -> list[str]:
    return [r["status"] for r in results]


def test_a_good_push_is_applied_and_readings_continue(site: Site,
                                                      outcomes: dict[str, Any]) -> None:
    g = site.gateways[0]
    code, out = outcomes["good"]
    assert code == 0, out
    assert out.startswith(f"{g.id}: applied: running; on probation for 4s (config "), out
    assert g.sha() != outcomes["shas_before"][g.id]
    readings = [(r["ts"], r["values"].get("seq"), m["tags"])
                for m in outcomes["readings"] for r in m["readings"]]
    seqs = sorted({seq for _, seq, _ in readings if seq is not None})
    assert seqs == list(range(seqs[0], seqs[-1] + 1)), "a reading went missing"
    assert any(tags.get("pushed") == "yes" for _, _, tags in readings)  # the new config runs
    assert any("pushed" not in tags for _, _, tags in readings)  # ... and the old one ran
    assert os.stat(g.dir / "state" / "outbox.db").st_ino == outcomes["outbox_inode_before"]
    kept = list((g.dir / "state" / "fleet" / "configs").iterdir())
    assert len(kept) == 2  # the previous config and the new one


def test_an_invalid_push_is_refused_with_positions(site: Site,
                                                   outcomes: dict[str, Any]) -> None:
    g = site.gateways[1]
    [result] = outcomes["invalid"]
    assert result["status"] == "refused"
    assert result["reason"] == "1 error(s) in the pushed config"
    [error] = result["errors"]
    assert (error["line"], error["path"]) == (INVALID_LINE, "devices[0].points[0].type")
    assert "'uint33' is not a data type" in error["message"]
    assert g.sha() == outcomes["shas_before"][g.id]


def test_a_push_that_loses_the_broker_is_rolled_back(site: Site,
                                                     outcomes: dict[str, Any]) -> None:
    g = site.gateways[2]
    results = outcomes["no_broker"]
    assert _statuses(results)[0] == "applied" and _statuses(results)[-1] == "rolled_back"
    assert "broker was unreachable" in results[-1]["reason"]
    assert g.sha() == outcomes["shas_before"][g.id]
    assert results[-1]["config_sha256"] == g.sha()


def test_a_push_that_fails_every_device_is_rolled_back(site: Site,
                                                       outcomes: dict[str, Any]) -> None:
    g = site.gateways[3]
    results = outcomes["devices_fail"]
    assert _statuses(results) == ["applied", "rolled_back"]
    assert results[-1]["reason"] == "1 device(s) failing with the new config, 0 before: dev"
    assert g.sha() == outcomes["shas_before"][g.id]
    assert wait_until(lambda: _online_with(site, {g.id: g.sha()}), 20, step=1.0)


@pytest.mark.parametrize(
    ("name", "index", "reason"),
    [
        pytest.param("forged", 4, "bad signature: not signed by key", id="forged"),
        pytest.param("stale", 6, r"expired: signed 36\d\ds ago, max_age is 300s", id="stale"),
        pytest.param("other_topic", 7, "bad signature", id="signed for another gateway"),
    ],
)
def test_refused_pushes(site: Site, outcomes: dict[str, Any], name: str, index: int,
                        reason: str) -> None:
    g = site.gateways[index]
    [result] = outcomes[name]
    assert result["status"] == "refused"
    assert re.match(reason, result["reason"]), result["reason"]
    assert g.sha() == outcomes["shas_before"][g.id]


def test_fleet_push_reports_a_refusal_with_exit_1(site: Site,
                                                  outcomes: dict[str, Any]) -> None:
    code, out = outcomes["forged_cli"]
    assert code == 1, out
    [result] = json.loads(out)
    assert result["status"] == "refused"
    assert result["reason"].startswith("bad signature: not signed by key ")
    g = site.gateways[13]
    assert g.sha() == outcomes["shas_before"][g.id]


def test_a_replayed_push_is_refused(site: Site, outcomes: dict[str, Any]) -> None:
    first, again = outcomes["replayed"]
    assert first["status"] == "applied"
    assert again["status"] == "refused" and again["reason"].startswith("replayed: id ")


def test_another_gateways_credentials_cannot_push(site: Site,
                                                  outcomes: dict[str, Any]) -> None:
    g = site.gateways[10]
    assert outcomes["acl"] == []  # the broker dropped it: the gateway never saw it
    assert g.sha() == outcomes["shas_before"][g.id]


# --- offline, retained, kill -9 -------------------------------------------------------------


async def _publish(site: Site, topic: str, payload: bytes, retain: bool) -> None:
    async with site.ops.client("ops-offline") as client:
        await client.publish(topic, payload, qos=1, retain=retain)


def test_a_gateway_offline_during_a_push_applies_nothing_later(site: Site) -> None:
    g = site.gateways[11]
    before = g.sha()
    g.stop()
    topic = config_set_topic("sensegate", g.id)
    text = site.text(g, tags="{late: x}")
    _, live = signed_message(site.key, topic, text)
    msg_id, stale = signed_message(site.key, topic, text)
    asyncio.run(_publish(site, topic, live, retain=False))
    asyncio.run(_publish(site, topic, stale, retain=True))  # what a careless tool might do
    try:
        g.start()
        assert wait_until(lambda: f"config {msg_id} refused: retained" in g.log.read_text(),
                          60), g.log.read_text()[-3000:]
        assert wait_until(lambda: _online_with(site, {g.id: before}), 30, step=1.0)
        assert g.sha() == before
    finally:
        asyncio.run(_publish(site, topic, b"", retain=True))  # clear the retained message


def test_kill_9_at_random_moments_of_an_apply_restarts_on_a_config_that_passed(
    site: Site,
) -> None:
    g = site.gateways[12]
    rng = random.Random(18)
    passed = {g.sha()}
    topic = config_set_topic("sensegate", g.id)
    # before the message is handled, while it is validated and written, on probation, after
    delays = [rng.uniform(0.0, 0.2), rng.uniform(0.2, 0.6), rng.uniform(0.6, 2.0),
              PROBATION + rng.uniform(1.0, 2.0)]
    for n, delay in enumerate(delays):
        text = site.text(g, tags=f"{{round: '{n}'}}")
        passed.add(hashlib.sha256(text.encode()).hexdigest())
        _, payload = signed_message(site.key, topic, text)
        asyncio.run(_publish(site, topic, payload, retain=False))
        time.sleep(delay)
        g.kill()
        assert g.sha() in passed  # never a half-written file
        g.start()
        assert wait_until(lambda: _online_with(site, {g.id: g.sha()}), 60, step=0.5), \
            g.log.read_text()[-3000:]
        assert g.sha() in passed
    assert "Traceback" not in g.log.read_text()
