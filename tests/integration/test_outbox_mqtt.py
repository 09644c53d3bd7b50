"""Outbox and publisher together against Mosquitto: TLS, the max_bytes bound, metrics."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.core.errors import PublishError
from gateway.core.model import OutboxConfig, Reading, TlsConfig
from gateway.edge.outbox import Outbox
from gateway.edge.publish import Publisher
from gateway.runtime.metrics import GatewayMetrics
from gateway.runtime.tls import build_tls_context
from tests.integration.test_publish import (
    TAGS,
    Collector,
    gw_config,
    running,
    wait_for,
)
from tests.support.certs import Pki, make_pki, mosquitto_tls_conf
from tests.support.mosquitto import Mosquitto
from tests.support.ports import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_broker(pki: Pki) -> Iterator[tuple[Mosquitto, int]]:
    tls_port = free_port()
    broker = Mosquitto(extra_conf=mosquitto_tls_conf(pki, tls_port))
    broker.start()
    try:
        yield broker, tls_port
    finally:
        broker.close()


async def test_tls_with_ca_and_client_certificate_delivers(
    tls_broker: tuple[Mosquitto, int], pki: Pki, tmp_path: Path
) -> None:
    broker, tls_port = tls_broker
    tls = TlsConfig(ca_file=str(pki.ca_cert), cert_file=str(pki.client_cert),
                    key_file=str(pki.client_key))
    config = gw_config(tls_port, tmp_path, tls=tls)
    async with Collector(broker.port) as col, running(config) as (outbox, publisher):
        await wait_for(lambda: publisher.connected)
        outbox.add(Reading("a", 1, {"v": 1.5}), measurement="m", tags=TAGS)
        await wait_for(lambda: col.readings() == {("a", 1): 1})
        await wait_for(lambda: outbox.stats().pending_readings == 0)


@pytest.mark.parametrize(
    ("tls_kw", "expected"),
    [
        pytest.param(
            {"ca": "other_ca_cert", "client": True},
            "tls handshake with 127.0.0.1:{port} failed: certificate verify failed: "
            "self-signed certificate in certificate chain",
            id="wrong-ca",
        ),
        pytest.param(
            {"ca": "ca_cert", "client": False},
            "tls handshake with 127.0.0.1:{port} failed: tlsv13 alert certificate required",
            id="no-client-certificate",
        ),
    ],
)
async def test_tls_failures_are_one_clear_line(
    tls_broker: tuple[Mosquitto, int], pki: Pki, tmp_path: Path,
    caplog: pytest.LogCaptureFixture, tls_kw: dict, expected: str,
) -> None:
    _, tls_port = tls_broker
    tls = TlsConfig(
        ca_file=str(getattr(pki, tls_kw["ca"])),
        cert_file=str(pki.client_cert) if tls_kw["client"] else None,
        key_file=str(pki.client_key) if tls_kw["client"] else None,
    )
    async with running(gw_config(tls_port, tmp_path, tls=tls)) as (_, publisher):
        await wait_for(lambda: publisher.last_error is not None)
        assert not publisher.connected
    assert publisher.last_error is not None
    assert publisher.last_error == expected.format(port=tls_port)
    assert publisher.last_error in caplog.text


async def test_hostname_mismatch_refused_unless_insecure(pki: Pki, tmp_path: Path) -> None:
    tls_port = free_port()
    conf = mosquitto_tls_conf(pki, tls_port, require_certificate=False, misnamed=True)
    with Mosquitto(extra_conf=conf):
        strict = TlsConfig(ca_file=str(pki.ca_cert))
        async with running(gw_config(tls_port, tmp_path / "a", tls=strict)) as (_, publisher):
            await wait_for(lambda: publisher.last_error is not None)
        assert publisher.last_error is not None
        assert publisher.last_error == (
            f"tls handshake with 127.0.0.1:{tls_port} failed: certificate verify failed: "
            "ip address mismatch, certificate is not valid for '127.0.0.1'"
        )
        insecure = TlsConfig(ca_file=str(pki.ca_cert), insecure=True)
        async with running(gw_config(tls_port, tmp_path / "b", tls=insecure)) as (_, publisher):
            await wait_for(lambda: publisher.connected)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        pytest.param(
            lambda p, d: TlsConfig(ca_file=str(d / "missing.pem")),
            "cannot read tls ca_file '{d}/missing.pem': no such file", id="missing-ca",
        ),
        pytest.param(
            lambda p, d: TlsConfig(ca_file=str(p.ca_cert), cert_file=str(p.client_cert),
                                   key_file=str(p.server_key)),
            "cannot load tls client certificate '{client}' with key '{server_key}': "
            "key values mismatch (the key must match the certificate and not be encrypted)",
            id="key-mismatch",
        ),
        pytest.param(
            lambda p, d: TlsConfig(ca_file=str(p.ca_cert), key_file=str(p.client_key)),
            "tls key_file is set without cert_file", id="key-without-cert",
        ),
    ],
)
def test_tls_file_problems_name_the_file(pki: Pki, tmp_path: Path, make, expected: str) -> None:
    with pytest.raises(PublishError) as err:
        build_tls_context(make(pki, tmp_path))
    assert str(err.value) == expected.format(
        d=tmp_path, client=pki.client_cert, server_key=pki.server_key
    )


def disk_bytes(state_dir: Path) -> int:
    return sum(
        (state_dir / n).stat().st_size
        for n in ("outbox.db", "outbox.db-wal") if (state_dir / n).exists()
    )


async def test_max_bytes_during_an_outage_drops_oldest_counted_and_bounded_on_disk(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    max_bytes = 2 * 1024 * 1024
    state = tmp_path / "state"
    config = gw_config(mosquitto.port, state, max_bytes=max_bytes)
    metrics = GatewayMetrics()
    async with Collector(mosquitto.port) as col:
        mosquitto.stop()
        outbox = Outbox.open(config.state_dir, config.outbox, config.id, metrics=metrics)
        publisher = Publisher(config, outbox, metrics=metrics, reconnect_max=0.5)
        tasks = [asyncio.create_task(outbox.run_committer()),
                 asyncio.create_task(publisher.run())]
        values = {f"p{i}": 1000.0 + i for i in range(20)}
        added, peak = 0, 0
        for _ in range(100):  # ~3 MiB of readings on disk: past the bound
            for _ in range(100):
                added += 1
                outbox.add(Reading(f"d{added % 5}", added, dict(values)),
                           measurement="m", tags=TAGS)
            await outbox.wait_committed(10.0)
            peak = max(peak, disk_bytes(state))
        outbox.flush()
        peak = max(peak, disk_bytes(state))
        stats = outbox.stats()
        assert stats.dropped > 0
        assert stats.dropped + stats.pending_readings == added
        assert peak <= max_bytes * 1.05, (peak, max_bytes)
        assert metrics.outbox_dropped_total.value == stats.dropped
        assert metrics.outbox_pending_readings.value == stats.pending_readings
        assert metrics.mqtt_connected.value == 0
        kept = stats.pending_readings
        mosquitto.start()
        await wait_for(lambda: publisher.connected, 30)
        await wait_for(lambda: sum(col.readings().values()) >= kept, 60)
        await wait_for(lambda: outbox.stats().pending_readings == 0, 30)
        await publisher.stop(5.0)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        outbox.close()
    got = col.readings()
    # exactly the newest `kept` readings arrived, each once
    assert sorted(ts for _, ts in got) == list(range(added - kept + 1, added + 1))
    assert set(got.values()) == {1}
    assert metrics.published_readings_total.value == kept


async def test_commit_failure_counts_a_metric(tmp_path: Path) -> None:
    metrics = GatewayMetrics()
    outbox = Outbox.open(str(tmp_path), OutboxConfig(), "gw-1", metrics=metrics)
    pages = outbox._writer.execute("PRAGMA page_count").fetchone()[0]
    outbox._writer.execute(f"PRAGMA max_page_count={pages}")
    for ts in range(300):
        outbox.add(Reading("a", ts, {f"p{i}": float(i) for i in range(50)}),
                   measurement="m", tags={})
    with pytest.raises(Exception, match="disk full"):
        outbox.flush()
    assert metrics.outbox_commit_errors_total.value == 1
    assert metrics.outbox_pending_readings.value == 300
    outbox._writer.execute("PRAGMA max_page_count=1073741823")
    outbox.close()


async def test_readings_buffered_before_a_gateway_id_change_go_out_under_the_old_id(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    old = gw_config(mosquitto.port, tmp_path, gateway_id="gw-old")
    outbox = Outbox.open(old.state_dir, old.outbox, old.id)
    outbox.add(Reading("a", 1, {"v": 1.0}), measurement="m", tags=TAGS)
    outbox.close()  # stopped with a backlog; the config now says gw-new
    new = gw_config(mosquitto.port, tmp_path, gateway_id="gw-new")
    async with Collector(mosquitto.port) as col, running(new) as (outbox, _publisher):
        outbox.add(Reading("a", 2, {"v": 2.0}), measurement="m", tags=TAGS)
        await wait_for(lambda: len(col.readings()) == 2)
        bodies = [(str(m.topic), json.loads(m.payload)) for m in col.messages]
        got = sorted(
            (topic, body["gateway"], body["readings"][0]["ts"])
            for topic, body in bodies if topic.endswith("/data")
        )
        assert got == [("sensegate/gw-new/a/data", "gw-new", 2),
                       ("sensegate/gw-old/a/data", "gw-old", 1)]
